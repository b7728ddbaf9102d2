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

Two rules of the data contract (``docs/data-contract.md``) apply here too:

* a stored bar that breaks today's contract (stored before the contract, or
  under looser settings) is not re-sent; it is counted per reason code;
* a stored bar whose key the topics hold *with other values* was corrected after
  it was streamed: it is re-sent, in the snapshot's time order per symbol, so
  downstream consumers get the corrections in the order they apply.
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
from backbone.contract import DEFAULT_POLICY, BarContract
from backbone.settings import KafkaConnectionSettings
from backbone.store.revisions import VALUE_FIELDS
from backbone.stream.codec import decode_record
from backbone.stream.producer import BarProducer, kafka_client_config

__all__ = ["BAR_TOPICS", "ReplayResult", "keys_in_topics", "replay"]

#: Logical topics a replay writes to and scans.
BAR_TOPICS: tuple[str, ...] = ("daily_bars", "intraday_bars")

BarKey = tuple[str, str, datetime]
BarValues = tuple[float, ...]


@dataclass
class ReplayResult:
    """What a replay did; ``sent + skipped + refused`` is every bar of the window in the store."""

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
    #: Bars sent because the topics held their key with other (pre-correction) values.
    corrections_resent: int = 0
    #: Stored bars not sent because they break the contract, per reason code.
    refused_by_reason: dict[str, int] = field(default_factory=dict)

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
            "corrections_resent": self.corrections_resent,
            "refused_by_reason": dict(sorted(self.refused_by_reason.items())),
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
) -> tuple[dict[BarKey, BarValues], int]:
    """Keys of the bars in ``[start, end)`` the bar topics hold now (with the values
    last seen for each), and records read.

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
    keys: dict[BarKey, BarValues] = {}
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
                    keys.update((b.key, _values(b)) for b in decoded.bars if start <= b.ts < end)
    finally:
        consumer.close(autocommit=False)
    return keys, scanned


def _values(bar: Bar) -> BarValues:
    return tuple(getattr(bar, f) for f in VALUE_FIELDS)


def _missing(
    bars: Iterable[Bar],
    present: dict[BarKey, BarValues],
    result: ReplayResult,
    contract: BarContract,
) -> Iterator[Bar]:
    for bar in bars:
        problem = contract.check(bar)
        if problem is not None:
            result.refused_by_reason[problem.code] = (
                result.refused_by_reason.get(problem.code, 0) + 1
            )
            continue
        seen = present.get(bar.key)
        if seen is not None:
            if seen == _values(bar):
                result.skipped += 1
                continue
            result.corrections_resent += 1
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
    contract: BarContract | None = None,
    scan: KafkaConnectionSettings | None = None,
) -> ReplayResult:
    """Backfill the bar topics with the store's bars in ``[start, end)`` they lack.

    ``store`` is a :class:`~backbone.store.base.BarStore`. Returns once every
    sent record is acknowledged (``acks=all``). ``scan``: the login the bar
    topics are read with to find what they hold (default: the producer's). With
    one principal per job the writer may not read them: pass the consumer's
    (``Backbone.consumer.kafka``), as ``backbone replay`` does.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("replay bounds must be timezone-aware (e.g. 2024-01-01T00:00Z)")
    if end <= start:
        raise ValueError(f"empty window: --to {end.isoformat()} is not after --from")
    began = time.perf_counter()
    name = run_id or f"replay-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    result = ReplayResult(run_id=name, start=start, end=end, symbols=list(symbols or []) or None)
    present, result.scanned_records = keys_in_topics(scan or producer.kafka, start, end, symbols)
    result.present = len(present)
    snapshot = store.snapshot(start, end, list(symbols) if symbols else None)
    batch: list[Bar] = []
    rules = contract or BarContract(DEFAULT_POLICY)
    for bar in _missing(snapshot, present, result, rules):
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
