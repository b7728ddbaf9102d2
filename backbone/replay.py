"""Replay and backfill: re-publish stored bars of a time window to the Kafka topics.

The store is the source of truth; the topics keep a bounded window (retention,
see ``docs/streaming.md``). A replay streams ``store.snapshot(start, end, symbols)``
and sends every bar the topic does **not** already hold, batched per symbol (key
= symbol, so each symbol's bars stay in time order in one partition), with a
``backfill`` header naming the run and an ``idempotency-key`` header.

"Already holds" is decided by reading the topics first: every retained record of
the bar topics is decoded and the bars' keys ``symbol|timeframe|ts`` inside the
window are collected. A second replay of the same window therefore sends
nothing, and live records still in retention are never duplicated. The scan
costs one read of the retained topic data (filtered by symbol key before
decoding); that bound is what retention buys.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from backbone.bars import Bar
from backbone.settings import KafkaConnectionSettings
from backbone.stream.codec import decode_record
from backbone.stream.producer import BarProducer, kafka_client_config

__all__ = ["BAR_TOPICS", "ReplayResult", "keys_in_topics", "replay"]

#: Logical topics a replay writes to and scans.
BAR_TOPICS: tuple[str, ...] = ("daily_bars", "intraday_bars")

BarKey = tuple[str, str, datetime]


@dataclass
class ReplayResult:
    """What a replay did; ``sent + skipped`` is every bar of the window in the store."""

    run_id: str
    start: datetime
    end: datetime
    symbols: list[str] | None
    #: Records read from the topics to learn what they already hold.
    scanned_records: int = 0
    #: Bars of the window the topics already held.
    present: int = 0
    sent: int = 0
    skipped: int = 0
    seconds: float = 0.0
    sent_per_symbol: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "symbols": self.symbols,
            "scanned_records": self.scanned_records,
            "present_in_topics": self.present,
            "sent": self.sent,
            "skipped": self.skipped,
            "sent_per_symbol": dict(sorted(self.sent_per_symbol.items())),
            "seconds": round(self.seconds, 3),
        }


def keys_in_topics(
    kafka: KafkaConnectionSettings,
    start: datetime,
    end: datetime,
    symbols: Sequence[str] | None = None,
    *,
    timeout_s: float = 120.0,
) -> tuple[set[BarKey], int]:
    """Keys of the bars in ``[start, end)`` the bar topics hold now, and records read.

    Reads every partition from its earliest retained offset to the end offset
    seen at the start (without a consumer group, so no offsets are committed).
    """
    wanted = {s.encode() for s in symbols} if symbols else None
    consumer = KafkaConsumer(
        **kafka_client_config(kafka, client_id="backbone-replay-scan"),
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=100,
        max_poll_records=2000,
    )
    keys: set[BarKey] = set()
    scanned = 0
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in (kafka.topic(t) for t in BAR_TOPICS)
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        ends = {tp: off for tp, off in consumer.end_offsets(partitions).items() if off > 0}
        consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < off for tp, off in ends.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"reading the bar topics took over {timeout_s:.0f}s; "
                    "check the brokers with `harness status`"
                )
            for tp, records in consumer.poll(timeout_ms=200).items():
                for rec in records:
                    if rec.offset >= ends.get(tp, 0):
                        continue
                    scanned += 1
                    if wanted is not None and rec.key not in wanted:
                        continue
                    decoded = decode_record(
                        rec.value, rec.headers, key=rec.key, origin="replay-scan"
                    )
                    keys.update(b.key for b in decoded.bars if start <= b.ts < end)
    finally:
        consumer.close(autocommit=False)
    return keys, scanned


def _missing(bars: Iterable[Bar], present: set[BarKey], result: ReplayResult) -> Iterator[Bar]:
    for bar in bars:
        if bar.key in present:
            result.skipped += 1
            continue
        result.sent += 1
        result.sent_per_symbol[bar.symbol] = result.sent_per_symbol.get(bar.symbol, 0) + 1
        yield bar


def replay(
    store: Any,
    producer: BarProducer,
    start: datetime,
    end: datetime,
    symbols: Sequence[str] | None = None,
    *,
    run_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Backfill the bar topics with the store's bars in ``[start, end)`` they lack.

    ``store`` is a :class:`~backbone.store.base.BarStore`. Returns once every
    sent record is acknowledged (``acks=all``).
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("replay bounds must be timezone-aware (e.g. 2024-01-01T00:00Z)")
    if end <= start:
        raise ValueError(f"empty window: --to {end.isoformat()} is not after --from")
    began = time.perf_counter()
    name = run_id or f"replay-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    result = ReplayResult(run_id=name, start=start, end=end, symbols=list(symbols or []) or None)
    present, result.scanned_records = keys_in_topics(producer.kafka, start, end, symbols)
    result.present = len(present)
    snapshot = store.snapshot(start, end, list(symbols) if symbols else None)
    batch: list[Bar] = []
    for bar in _missing(snapshot, present, result):
        batch.append(bar)
        if len(batch) >= 10_000:
            producer.send_bars(batch, backfill=name)
            if progress is not None:
                progress(len(batch))
            batch = []
    if batch:
        producer.send_bars(batch, backfill=name)
        if progress is not None:
            progress(len(batch))
    producer.flush()
    result.seconds = time.perf_counter() - began
    return result
