"""Where dead letters are, per tier, and how to list, show and re-submit them.

Tier 0 keeps them in the store's ``dead_letter`` table; Tier 1 sends them to
the Kafka topic ``market-data.dead-letter`` (and a consumer without a
dead-letter producer writes the store's table). :func:`queues_for` returns
every place the active tier has, so ``backbone dead-letters`` and ``backbone
status`` look where the dead letters actually are.

IDs: a store's dead letter is its row id (``42``); a Kafka dead letter is
``PARTITION@OFFSET`` (``0@17``). Re-submitting marks a store row ``replayed_at``;
a Kafka record cannot be changed, so replaying one twice re-sends it twice —
harmless, because an exact re-send is counted as a duplicate.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from kafka import KafkaConsumer, TopicPartition

from backbone.bars import Bar, bar_from_dict
from backbone.contract import reason_code
from backbone.deadletter import DeadLetter
from backbone.settings import KafkaConnectionSettings
from backbone.stream.codec import HEADER_REASON, header
from backbone.stream.producer import kafka_client_config

__all__ = [
    "DeadLetterEntry",
    "DeadLetterQueue",
    "KafkaDeadLetters",
    "StoreDeadLetters",
    "bars_from_payload",
    "queues_for",
]


@dataclass(frozen=True, slots=True)
class DeadLetterEntry:
    """One dead letter wherever it is kept."""

    id: str
    where: str
    received_at: datetime | None
    origin: str
    reason: str
    payload: bytes
    replayed_at: datetime | None = None

    @property
    def code(self) -> str:
        return reason_code(self.reason)

    @property
    def origin_kind(self) -> str:
        """``csv``, ``kafka``, ``ingest`` ...: the part of the origin before the first colon."""
        return self.origin.split(":", 1)[0]

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "where": self.where,
            "received_at": self.received_at.isoformat() if self.received_at else None,
            "code": self.code,
            "origin": self.origin,
            "reason": self.reason,
            "replayed_at": self.replayed_at.isoformat() if self.replayed_at else None,
        }


class DeadLetterQueue(Protocol):
    """A place dead letters are kept."""

    where: str

    def count(self) -> int: ...

    def entries(self, *, limit: int | None = None) -> Iterator[DeadLetterEntry]: ...

    def get(self, ids: Sequence[str]) -> list[DeadLetterEntry]: ...

    def mark_replayed(self, ids: Sequence[str]) -> None: ...


class StoreDeadLetters:
    """The store's ``dead_letter`` table (DuckDB or PostgreSQL)."""

    def __init__(self, store: Any, label: str) -> None:
        self.store = store
        self.where = f"{label}:dead_letter"

    def count(self) -> int:
        return int(self.store.dead_letter_count())

    def entries(self, *, limit: int | None = None) -> Iterator[DeadLetterEntry]:
        for row in self.store.dead_letter_records(limit=limit):
            yield self._entry(row)

    def get(self, ids: Sequence[str]) -> list[DeadLetterEntry]:
        numbers = [_row_id(i) for i in ids]
        return [self._entry(r) for r in self.store.dead_letter_records(numbers)]

    def mark_replayed(self, ids: Sequence[str]) -> None:
        self.store.mark_dead_letters_replayed([_row_id(i) for i in ids])

    def _entry(self, row: Any) -> DeadLetterEntry:
        return DeadLetterEntry(
            id=str(row.id),
            where=self.where,
            received_at=row.received_at,
            origin=row.origin,
            reason=row.reason,
            payload=row.payload,
            replayed_at=row.replayed_at,
        )


class KafkaDeadLetters:
    """The dead-letter topic, read without a consumer group (nothing is committed)."""

    def __init__(self, kafka: KafkaConnectionSettings, *, timeout_s: float = 60.0) -> None:
        self.kafka = kafka
        self.topic = self.kafka.topic("dead_letter")
        self.where = f"kafka:{self.topic}"
        self.timeout_s = timeout_s

    def _consumer(self) -> KafkaConsumer:
        return KafkaConsumer(
            **kafka_client_config(self.kafka, client_id="backbone-dead-letters"),
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
        )

    def _partitions(self, consumer: KafkaConsumer) -> list[TopicPartition]:
        return [
            TopicPartition(self.topic, p)
            for p in sorted(consumer.partitions_for_topic(self.topic) or ())
        ]

    def count(self) -> int:
        consumer = self._consumer()
        try:
            parts = self._partitions(consumer)
            ends = consumer.end_offsets(parts)
            starts = consumer.beginning_offsets(parts)
            return sum(max(0, ends[tp] - starts[tp]) for tp in parts)
        finally:
            consumer.close(autocommit=False)

    def entries(self, *, limit: int | None = None) -> Iterator[DeadLetterEntry]:
        consumer = self._consumer()
        try:
            parts = self._partitions(consumer)
            consumer.assign(parts)
            ends = {tp: off for tp, off in consumer.end_offsets(parts).items() if off > 0}
            consumer.seek_to_beginning(*parts)
            yield from self._read(consumer, ends, limit)
        finally:
            consumer.close(autocommit=False)

    def get(self, ids: Sequence[str]) -> list[DeadLetterEntry]:
        wanted = {_kafka_id(i) for i in ids}
        consumer = self._consumer()
        found: list[DeadLetterEntry] = []
        try:
            for partition, offset in sorted(wanted):
                tp = TopicPartition(self.topic, partition)
                consumer.assign([tp])
                consumer.seek(tp, offset)
                for entry in self._read(consumer, {tp: offset + 1}, 1):
                    found.append(entry)
        finally:
            consumer.close(autocommit=False)
        return found

    def mark_replayed(self, ids: Sequence[str]) -> None:
        """Kafka records are immutable: nothing to mark (a second replay is a duplicate)."""

    def _read(
        self, consumer: KafkaConsumer, ends: dict[TopicPartition, int], limit: int | None
    ) -> Iterator[DeadLetterEntry]:
        deadline = time.monotonic() + self.timeout_s
        given = 0
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"reading {self.topic} took over {self.timeout_s:.0f}s; "
                    "check the brokers with `harness status`"
                )
            for tp, records in consumer.poll(timeout_ms=200).items():
                for rec in records:
                    if rec.offset >= ends.get(tp, 0):
                        continue
                    if limit is not None and given >= limit:
                        return
                    given += 1
                    yield self._entry(rec)

    def _entry(self, rec: Any) -> DeadLetterEntry:
        why = header(rec.headers, HEADER_REASON) or b""
        origin = header(rec.headers, "origin") or (rec.key or b"")
        return DeadLetterEntry(
            id=f"{rec.partition}@{rec.offset}",
            where=self.where,
            received_at=datetime.fromtimestamp(rec.timestamp / 1000, UTC),
            origin=origin.decode("utf-8", "replace"),
            reason=why.decode("utf-8", "replace"),
            payload=bytes(rec.value or b""),
        )


def queues_for(backbone: Any, *, count_only: bool = False) -> list[DeadLetterQueue]:
    """Every place the runtime's tier keeps dead letters (the store's table first).

    The topic is read with the document's own Kafka login (the application's, on
    a stack's full document): no job may ``READ`` the dead-letter topic. With
    ``count_only`` (health reports) the consumer's login serves, since counting
    needs only ``DESCRIBE``.
    """
    queues: list[DeadLetterQueue] = [StoreDeadLetters(backbone.store, backbone.store_label)]
    if backbone.tier != "institutional":
        return queues
    consumer = backbone.consumer
    kafka = consumer.kafka if count_only and consumer is not None else backbone.settings.kafka
    if kafka is not None:
        queues.append(KafkaDeadLetters(kafka))
    return queues


def bars_from_payload(entry: DeadLetterEntry) -> list[Bar] | DeadLetter:
    """The bars a dead letter's payload holds (one object, or a record's array), or,
    if it holds none, a dead letter saying why it cannot be re-submitted."""
    source = "csv" if entry.origin_kind == "csv" else "live"
    try:
        data = json.loads(entry.payload)
        items = data if isinstance(data, list) else [data]
        bars = []
        for item in items:
            if isinstance(item, dict):
                item = {"source": source, **item}
            bars.append(bar_from_dict(item))
        if not bars:
            raise ValueError("no bars in the payload")
        return bars
    except (ValueError, TypeError, RecursionError, OverflowError) as exc:
        return DeadLetter(
            origin=entry.origin,
            reason=entry.reason,
            payload=f"not replayable: {exc}".encode()[:200],
        )


def _row_id(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"dead letter id {raw!r} is not a store row id (a number, from "
            "`backbone dead-letters list`)"
        ) from None


def _kafka_id(raw: str) -> tuple[int, int]:
    partition, sep, offset = raw.partition("@")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise ValueError(
            f"dead letter id {raw!r} is not PARTITION@OFFSET (e.g. 0@17, from "
            "`backbone dead-letters list`)"
        )
    return int(partition), int(offset)
