"""Store write benchmarks: bulk rows/s for any :class:`BarStore`.

``harness bench perf`` calls :func:`bench_store` for each tier's store;
:func:`bench_pg_write_methods` is how the PostgreSQL bulk path was chosen
(COPY into a staging table, then ``INSERT ... ON CONFLICT DO NOTHING``) and
re-checks that choice on the machine at hand. Bars are generated before the
clock starts, and each run writes its own symbols (``EURUSD.<run>``), so a
run never collides with data already in the store.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from backbone.bars import FX_SYMBOLS, Bar, synthetic_bars
from backbone.settings import TimescaleConnectionSettings
from backbone.store.base import BarStore

__all__ = ["bench_pg_write_methods", "bench_store"]

_FAR = datetime(2200, 1, 1, tzinfo=UTC)


def _bars(n: int, symbols: Sequence[str], timeframe: str) -> tuple[list[Bar], list[str]]:
    run = secrets.token_hex(3)
    names = [f"{s}.{run}" for s in symbols]
    per_symbol = -(-n // len(names))
    bars = list(synthetic_bars(names, timeframe, per_symbol, seed=7))[:n]
    return bars, names


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def bench_store(
    store: BarStore,
    n: int,
    *,
    batch_size: int = 10_000,
    symbols: Sequence[str] = FX_SYMBOLS,
    timeframe: str = "1m",
) -> dict[str, Any]:
    """Write ``n`` new bars in ``batch_size`` batches, then write them again
    (all duplicates) and stream them back; report rows/s for each phase.

    Returns a JSON-ready dict: ``rows``, ``batch_size``, ``inserted``,
    ``write_seconds``, ``write_rows_per_s``, ``batch_ms_p50``/``p99``,
    ``rewrite_rows_per_s`` (idempotent re-write), ``snapshot_rows_per_s``.
    """
    if n <= 0 or batch_size <= 0:
        raise ValueError("n and batch_size must be positive")
    bars, names = _bars(n, symbols, timeframe)
    batches = [bars[i : i + batch_size] for i in range(0, len(bars), batch_size)]

    inserted, batch_ms = 0, []
    started = time.perf_counter()
    for batch in batches:
        t = time.perf_counter()
        inserted += store.write(batch)
        batch_ms.append((time.perf_counter() - t) * 1000)
    write_s = time.perf_counter() - started

    started = time.perf_counter()
    again = sum(store.write(batch) for batch in batches)
    rewrite_s = time.perf_counter() - started

    started = time.perf_counter()
    streamed = sum(1 for _ in store.snapshot(bars[0].ts, _FAR, names))
    snapshot_s = time.perf_counter() - started

    return {
        "store": repr(store),
        "rows": len(bars),
        "batch_size": batch_size,
        "inserted": inserted,
        "reinserted": again,
        "streamed": streamed,
        "write_seconds": round(write_s, 3),
        "write_rows_per_s": round(len(bars) / write_s),
        "batch_ms_p50": round(_percentile(batch_ms, 0.50), 1),
        "batch_ms_p99": round(_percentile(batch_ms, 0.99), 1),
        "rewrite_rows_per_s": round(len(bars) / rewrite_s),
        "snapshot_rows_per_s": round(streamed / snapshot_s) if snapshot_s else 0,
    }


def bench_pg_write_methods(
    conn: TimescaleConnectionSettings, n: int, *, batch_size: int = 10_000
) -> dict[str, dict[str, Any]]:
    """:func:`bench_store` for each PostgreSQL bulk path (COPY, pipelined
    ``executemany``, array ``unnest``) against the same database."""
    from backbone.store.timescale import TimescaleStore  # Tier 1 only

    results: dict[str, dict[str, Any]] = {}
    for method in ("copy", "executemany", "unnest"):
        one = TimescaleConnectionSettings.from_section(conn, pool_min_size=1, pool_max_size=1)
        with TimescaleStore(one, write_method=method) as store:
            results[method] = bench_store(store, n, batch_size=batch_size)
    return results
