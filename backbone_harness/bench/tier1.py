"""Tier 1 end to end: a producer here, ``k`` ``backbone consume`` processes there.

The path measured is the product's: generate → encode → Kafka (acks=all) →
consumer group members → PostgreSQL → Redis invalidation → bus. The clock runs
from the first send to the last store commit any member reports.

Two details keep the numbers honest:

* Before the members start, the group's offsets are committed at the topics'
  current ends, so a member that is assigned its partitions late (while ``k``
  members join and rebalance) still reads every bar sent after that point, and
  nothing sent before it.
* Each run writes its own symbols, and the run ends when the store holds all of
  them; then the members get SIGTERM, stop cleanly and print their statistics.

With ``profile_dir`` the members run under ``python -m cProfile``, and the
report names the function the consumer spends most of its own time in.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import psycopg
from kafka import KafkaConsumer, TopicPartition

from backbone.bars import Bar, synthetic_bars
from backbone.connections import ConnectionsDocument
from backbone.job_logins import harness_section
from backbone.replay import BAR_TOPICS
from backbone.settings import KafkaConnectionSettings
from backbone.stream.codec import batch_records
from backbone.stream.producer import BarProducer, kafka_client_config
from backbone_harness.bench.measure import Log, load_average, profile_file

__all__ = ["bench_consumer_counts", "bench_end_to_end", "bench_latency"]

_SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD")


def _run_symbols(label: str) -> list[str]:
    run = secrets.token_hex(3).upper()  # the contract: upper-case symbols
    return [f"{s}.{label}{run}" for s in _SYMBOLS]


def _prime_group(doc: ConnectionsDocument, group: str) -> None:
    """Commit ``group``'s offsets at the bar topics' current ends."""
    # The group's offsets: the consumer's login, as its members (`backbone consume`).
    settings = KafkaConnectionSettings.from_section(harness_section(doc, "consumer"))
    consumer = KafkaConsumer(
        **kafka_client_config(settings, client_id="bench-prime"),
        group_id=group, enable_auto_commit=False,
    )  # fmt: skip
    try:
        parts = [
            TopicPartition(topic, p)
            for topic in (settings.topic(t) for t in BAR_TOPICS)
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(parts)
        consumer.seek_to_end(*parts)
        for tp in parts:
            consumer.position(tp)
        consumer.commit()
    finally:
        consumer.close(autocommit=False)


@contextmanager
def _members(
    outputs: Path, group: str, k: int, profile_dir: Path | None
) -> Iterator[list[subprocess.Popen[str]]]:
    """``k`` consumer processes of ``group``, each assigned (or waiting for a share)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("BACKBONE_TEST_CRASH_POINT", None)
    procs: list[subprocess.Popen[str]] = []
    try:
        for i in range(k):
            prof = (
                ["-m", "cProfile", "-o", str(profile_dir / f"consumer-{i}.prof")]
                if profile_dir
                else []
            )
            procs.append(subprocess.Popen(
                [sys.executable, *prof, "-m", "backbone", "consume", "--outputs", str(outputs),
                 "--group", group, "--start", "latest", "--timeout", "900", "--json",
                 # Members share a machine: each serves /metrics on a free port of its own.
                 "--metrics-port", "0"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            ))  # fmt: skip
        for proc in procs:
            assert proc.stderr is not None
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                line = proc.stderr.readline()
                if line.startswith("consuming:"):
                    break
                if not line and proc.poll() is not None:
                    raise RuntimeError(f"a bench consumer exited early ({proc.returncode})")
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _stop_and_collect(procs: Sequence[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    for proc in procs:
        proc.terminate()
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"a bench consumer failed ({proc.returncode}): {err[-400:]}")
        reports.append(json.loads(out))
    return reports


def _wait_stored(doc: ConnectionsDocument, symbols: list[str], n: int, timeout_s: float) -> None:
    ts = harness_section(doc, "store-reader")  # it only counts rows: the reader's login
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(
        ts.conninfo(),
        password=ts.password.get_secret_value() if ts.password else None,
        autocommit=True,
    ) as pg:
        while time.monotonic() < deadline:
            row = pg.execute(
                "SELECT count(*) FROM bars WHERE symbol = ANY(%s)", [symbols]
            ).fetchone()
            if row and row[0] >= n:
                return
            time.sleep(0.25)
    raise TimeoutError(f"the store did not reach {n:,} bars of this run in {timeout_s:.0f}s")


def _produce(doc: ConnectionsDocument, gen: Iterator[Bar]) -> tuple[int, float, float, int, int]:
    """Send all of ``gen``: (bars, first send, acked, bytes, records), wall-clock times."""
    producer = BarProducer(
        KafkaConnectionSettings.from_section(harness_section(doc, "producer")),
        client_id="bench-e2e",
    )
    sent = size = records = 0
    start = time.time()
    try:
        while chunk := list(islice(gen, 20_000)):
            for record in batch_records(chunk, max_bars=producer.tuning.bars_per_record):
                producer.send_record(record)
                size += len(record.value)
                records += 1
            sent += len(chunk)
        producer.flush()
        end = time.time()
    finally:
        producer.close()
    return sent, start, end, size, records


def _latency_p99(reports: list[dict[str, Any]]) -> float | None:
    values = [r["latency_ms"]["p99"] for r in reports if r["latency_ms"]["p99"] is not None]
    return max(values) if values else None


def bench_end_to_end(
    doc: ConnectionsDocument,
    outputs: Path,
    bars: int,
    log: Log,
    *,
    consumers: int = 1,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Bars/s from the first send to the last store commit, with ``consumers`` members."""
    group = f"backbone-bench-e2e-{secrets.token_hex(3)}"
    symbols = _run_symbols("E")
    _prime_group(doc, group)
    with _members(outputs, group, consumers, profile_dir) as procs:
        gen = synthetic_bars(
            symbols, "1m", bars // len(symbols), start=datetime(2001, 1, 1, tzinfo=UTC)
        )
        sent, start, end, size, records = _produce(doc, gen)
        _wait_stored(doc, symbols, sent, timeout_s=600)
        reports = _stop_and_collect(procs)
    last = max(float(r["last_stored_at"]) for r in reports if r["last_stored_at"])
    rate = sent / (last - start)
    out: dict[str, Any] = {
        "consumers": consumers,
        "bars": sent,
        "stored": sum(r["stored"] for r in reports),
        "duplicates": sum(r["duplicates"] for r in reports),
        "reconciles": all(r["reconciles"] for r in reports),
        "seconds": round(last - start, 3),
        "bars_per_s": round(rate),
        "p99_ms": _latency_p99(reports),
        "produce_bars_per_s": round(sent / (end - start)),
        "record_bytes_avg": round(size / max(1, records)),
        "kafka_records": records,
        "load_average": load_average(),
    }
    if profile_dir is not None:
        out["profile"] = profile_file(profile_dir / "consumer-0.prof")
    log(f"end to end, {consumers} consumer(s): {rate:,.0f} bars/s, p99 {out['p99_ms']} ms")
    return out


def bench_consumer_counts(
    doc: ConnectionsDocument, outputs: Path, bars: int, counts: Sequence[int], log: Log
) -> list[dict[str, Any]]:
    """:func:`bench_end_to_end` once per consumer count."""
    return [bench_end_to_end(doc, outputs, bars, log, consumers=k) for k in counts]


def bench_latency(
    doc: ConnectionsDocument, outputs: Path, log: Log, *, rate: int = 5_000, seconds: float = 20.0
) -> dict[str, Any]:
    """Produce at a fixed rate in ticks of 20 ms (each tick's bars of a symbol are one
    record); latency is the record's timestamp (at send) → its store commit."""
    assert doc.kafka is not None
    tick = 0.02
    per_tick = max(1, round(rate * tick))
    symbols = _run_symbols("L")
    ticks = int(seconds / tick)
    total = ticks * per_tick
    group = f"backbone-bench-latency-{secrets.token_hex(3)}"
    gen = synthetic_bars(
        symbols, "1m", total // len(symbols) + 1, start=datetime(2002, 1, 1, tzinfo=UTC)
    )
    _prime_group(doc, group)
    with _members(outputs, group, 1, None) as procs:
        producer = BarProducer(
            KafkaConnectionSettings.from_section(harness_section(doc, "producer")),
            client_id="bench-latency",
        )
        began = time.monotonic()
        try:
            for n in range(ticks):
                wait = began + n * tick - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                producer.send_bars(list(islice(gen, per_tick)))
            producer.flush()
        finally:
            producer.close()
        achieved = total / (time.monotonic() - began)
        _wait_stored(doc, symbols, total, timeout_s=seconds + 120)
        reports = _stop_and_collect(procs)
    lat = reports[0]["latency_ms"]
    log(f"latency at {achieved:,.0f} bars/s: p50 {lat['p50']} ms, p99 {lat['p99']} ms")
    return {
        "target_bars_per_s": rate,
        "achieved_bars_per_s": round(achieved),
        "bars": total,
        "latency_ms": lat,
        "load_average": load_average(),
        "measured": "Kafka record timestamp (at send) to the consumer's store commit, per record",
    }
