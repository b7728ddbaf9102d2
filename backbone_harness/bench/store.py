"""The store path against its ceilings, the batch-size sweep, and replay from the store.

Ceilings, measured on the same database seconds apart:

* **``COPY`` of pre-formatted rows into ``bars``** (primary key, partitions): what
  PostgreSQL takes into this very table when the client does nothing but stream
  bytes. Our write path (``TimescaleStore.write``: COPY into a staging table, then
  ``INSERT ... ON CONFLICT DO NOTHING``, so redelivered bars are absorbed) is
  reported as a fraction of it.
* **``COPY`` into an unindexed copy of the table**: the server's own ceiling
  here, without the index and partition routing ``bars`` costs.

Each run writes its own symbols (``EURUSD.<run>``), so it never collides with
data already in the store; rows are generated and formatted before any clock
starts.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from backbone.bars import Bar, synthetic_bars
from backbone.connections import ConnectionsDocument, TimescaleConnection
from backbone.job_logins import harness_section
from backbone.replay import replay
from backbone.settings import KafkaConnectionSettings, TimescaleConnectionSettings
from backbone.store.bench import bench_store
from backbone.store.schema import BARS_COLUMNS
from backbone.store.timescale import TimescaleStore
from backbone.stream.producer import BarProducer
from backbone_harness.bench.measure import Log, figure, load_average, profiled

__all__ = ["bench_batch_sizes", "bench_replay", "bench_store_paths", "copy_ceiling"]

_COLS = ", ".join(BARS_COLUMNS)
_UNINDEXED = "bench_bars_unindexed"
_SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD")


def _connect(ts: TimescaleConnection) -> psycopg.Connection[Any]:
    return psycopg.connect(
        ts.conninfo(target_session_attrs="read-write"),
        password=ts.password.get_secret_value() if ts.password else None,
    )


def _fresh_bars(n: int) -> tuple[list[Bar], list[str]]:
    run = secrets.token_hex(3).upper()  # the contract: upper-case symbols
    names = [f"{s}.{run}" for s in _SYMBOLS]
    per_symbol = -(-n // len(names))
    return list(synthetic_bars(names, "1m", per_symbol, seed=11))[:n], names


def _formatted(bars: Sequence[Bar]) -> list[bytes]:
    """COPY text rows, formatted before the clock starts (chunks of ~1 MB)."""
    chunks: list[bytes] = []
    lines: list[str] = []
    for b in bars:
        lines.append(
            f"{b.symbol}\t{b.timeframe}\t{b.ts.isoformat()}\t{b.open!r}\t{b.high!r}\t"
            f"{b.low!r}\t{b.close!r}\t{b.volume!r}\t{b.source}\n"
        )
        if len(lines) == 10_000:
            chunks.append("".join(lines).encode())
            lines = []
    if lines:
        chunks.append("".join(lines).encode())
    return chunks


def copy_ceiling(ts: TimescaleConnection, n: int, *, indexed: bool) -> dict[str, Any]:
    """Rows/s of a bare ``COPY ... FROM STDIN`` of pre-formatted rows, one transaction."""
    bars, _ = _fresh_bars(n)
    chunks = _formatted(bars)
    table = "bars" if indexed else _UNINDEXED
    with _connect(ts) as conn:
        if not indexed:
            conn.execute(f"DROP TABLE IF EXISTS {_UNINDEXED}")
            # LIKE without INCLUDING INDEXES: same columns and defaults, no key, no partitions.
            conn.execute(f"CREATE TABLE {_UNINDEXED} (LIKE bars INCLUDING DEFAULTS)")
            conn.commit()
        try:
            began = time.perf_counter()
            with conn.cursor() as cur, cur.copy(f"COPY {table} ({_COLS}) FROM STDIN") as copy:
                for chunk in chunks:
                    copy.write(chunk)
            conn.commit()
            seconds = time.perf_counter() - began
        finally:
            if not indexed:
                conn.execute(f"DROP TABLE IF EXISTS {_UNINDEXED}")
                conn.commit()
    return {
        "table": table,
        "rows": n,
        "seconds": round(seconds, 3),
        "rows_per_s": round(n / seconds),
    }


def bench_store_paths(doc: ConnectionsDocument, n: int, log: Log) -> dict[str, Any]:
    """Our write path, then both COPY ceilings, on the same database."""
    ts = doc.timescale
    assert ts is not None
    # Our write path as the consumer (Backbone's store); the COPY ceilings below
    # with the document's login (the admin's: one creates a table).
    with TimescaleStore(
        TimescaleConnectionSettings.from_section(harness_section(doc, "store"), pool_max_size=1),
        application_name="bench-store",
    ) as store:
        ours = bench_store(store, n, batch_size=10_000)
        # A second, profiled pass names the bottleneck without slowing the figure.
        _, hot = profiled(lambda: bench_store(store, min(n, 50_000), batch_size=10_000))
    into_bars = copy_ceiling(ts, n, indexed=True)
    unindexed = copy_ceiling(ts, n, indexed=False)
    ours["profile"] = hot
    log(
        f"store: ours {ours['write_rows_per_s']:,} rows/s, COPY into bars "
        f"{into_bars['rows_per_s']:,}, into an unindexed table {unindexed['rows_per_s']:,}"
    )
    rate = ours["write_rows_per_s"]
    return {
        "ours": ours,
        "copy_into_bars": into_bars,
        "copy_unindexed": unindexed,
        "figures": [
            figure(
                "store write",
                "TimescaleStore.write (COPY to stage + INSERT ON CONFLICT)",
                rate,
                "rows/s",
                "COPY of pre-formatted rows into bars",
                into_bars["rows_per_s"],
            ),
            figure(
                "store write",
                "TimescaleStore.write",
                rate,
                "rows/s",
                "COPY into an unindexed table (server's ceiling)",
                unindexed["rows_per_s"],
            ),
        ],
    }


def bench_batch_sizes(
    doc: ConnectionsDocument, n: int, sizes: Sequence[int], log: Log
) -> list[dict[str, Any]]:
    """Our write path at each batch size: rows/s and p99 of one batch's write."""
    points = []
    with TimescaleStore(
        TimescaleConnectionSettings.from_section(harness_section(doc, "store"), pool_max_size=1),
        application_name="bench-batches",
    ) as store:
        for size in sizes:
            r = bench_store(store, max(n, 4 * size), batch_size=size)
            points.append({
                "batch_size": size,
                "rows": r["rows"],
                "bars_per_s": r["write_rows_per_s"],
                "p99_ms": r["batch_ms_p99"],
                "load_average": load_average(),
            })  # fmt: skip
            log(f"batch {size:,}: {r['write_rows_per_s']:,} bars/s, p99 {r['batch_ms_p99']} ms")
    return points


def _stored_bars(store: TimescaleStore, n: int) -> tuple[list[Bar], list[str]]:
    bars, names = _fresh_bars(n)
    for i in range(0, len(bars), 10_000):
        store.write(bars[i : i + 10_000])
    return bars, names


def bench_replay(doc: ConnectionsDocument, n: int, log: Log) -> dict[str, Any]:
    """Bars/s of ``backbone.replay.replay`` (store snapshot → Kafka, acks=all) of ``n``
    freshly stored bars; its ceiling is reading the same snapshot alone."""
    end = datetime(2200, 1, 1, tzinfo=UTC)
    with TimescaleStore(
        TimescaleConnectionSettings.from_section(harness_section(doc, "store"), pool_max_size=2),
        application_name="bench-replay",
    ) as store:
        bars, names = _stored_bars(store, n)
        start = bars[0].ts
        began = time.perf_counter()
        read = sum(1 for _ in store.snapshot(start, end, names))
        read_s = time.perf_counter() - began
        # The writer sends; the consumer's login reads what the topics hold (the
        # writer may not), as `backbone replay` does.
        producer = BarProducer(
            KafkaConnectionSettings.from_section(harness_section(doc, "producer")),
            client_id="bench-replay",
        )
        scan = KafkaConnectionSettings.from_section(harness_section(doc, "topic-reader"))
        try:
            result = replay(store, producer, start, end, names, scan=scan)
            # Profiled on a second, smaller window of its own (a replay of the same
            # window would find every bar present and send nothing).
            more, more_names = _stored_bars(store, min(n, 50_000))
            _, hot = profiled(
                lambda: replay(store, producer, more[0].ts, end, more_names, scan=scan)
            )
        finally:
            producer.close()
    rate = result.sent / result.seconds
    read_rate = read / read_s
    log(f"replay: {rate:,.0f} bars/s (snapshot read alone {read_rate:,.0f} bars/s)")
    return {
        "bars": n,
        "sent": result.sent,
        "scanned_records": result.scanned_records,
        "seconds": round(result.seconds, 3),
        "bars_per_s": round(rate),
        "snapshot_read_bars_per_s": round(read_rate),
        "profile": hot,
        "figures": [
            figure(
                "replay / backfill",
                "backbone.replay.replay (store → Kafka, acks=all)",
                rate,
                "bars/s",
                "reading the same store snapshot alone",
                read_rate,
            ),
        ],
    }
