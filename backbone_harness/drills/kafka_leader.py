"""Drill: SIGKILL the leader of ``market-data.intraday-bars`` partition 0 while producing.

The topic has replication factor 3 and ``min.insync.replicas=2``; the producer
sends with ``acks=all`` and idempotence. A record is acknowledged only once
every in-sync replica has it, so the broker that survives as the new leader
has every acknowledged record: none may be missing when partition 0 is read
back from the drill's start offset, and idempotence means none twice.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Hashable, Iterator
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner.default import murmur2

from backbone.bars import Bar
from backbone.job_logins import harness_section
from backbone.settings import KafkaConnectionSettings
from backbone.stream.codec import decode_record
from backbone.stream.producer import BarProducer, ProducerTuning, kafka_client_config
from backbone_harness.drills.base import Drill, Fault, wait_until
from backbone_harness.drills.writer import drill_bars
from backbone_infra.render.kafka import node_id

__all__ = ["KafkaLeaderKillDrill"]

PARTITION = 0
#: Symbols (record keys) per run, all hashing to :data:`PARTITION`.
SYMBOLS = 4


def symbols_for_partition(partitions: int, partition: int, count: int, prefix: str) -> list[str]:
    """``count`` symbols whose record key the default partitioner sends to ``partition``."""
    out: list[str] = []
    n = 0
    while len(out) < count:
        symbol = f"{prefix}{n}"
        if (murmur2(symbol.encode()) & 0x7FFFFFFF) % partitions == partition:
            out.append(symbol)
        n += 1
    return out


class KafkaLeaderKillDrill(Drill):
    name = "kafka-leader-kill"
    summary = "SIGKILL the leader of intraday-bars partition 0 during acks=all produce"
    fault = Fault(role="the leader of market-data.intraday-bars partition 0", kind="kill")
    #: Seconds writes may stop (issue 12's target: a new leader from the ISR).
    max_unavailable_s: float | None = 10.0
    min_acknowledged = 500

    def __init__(self, stack: Any) -> None:
        super().__init__(stack)
        kafka = stack.document.kafka
        if kafka is None:
            raise ValueError(f"stack {stack.name!r} has no Kafka; drills need an ha stack")
        # The producer logs in as the writer; the read-back (no group) as the
        # consumer, which may read the bar topics (the reader has no Kafka login).
        doc = stack.document
        self.kafka = KafkaConnectionSettings.from_section(harness_section(doc, "producer"))
        self.reading = KafkaConnectionSettings.from_section(harness_section(doc, "topic-reader"))
        self.topic = kafka.topics["intraday_bars"].name
        partitions = kafka.partitions("intraday_bars")
        prefix = f"DK{secrets.token_hex(2).upper()}"
        self.symbols = symbols_for_partition(partitions, PARTITION, SYMBOLS, prefix)
        self.tp = TopicPartition(self.topic, PARTITION)
        self.start_offset = 0
        self.producer: BarProducer | None = None

    def target(self) -> str:
        return self.stack.kafka_partition_leader(self.topic, PARTITION)

    def _consumer(self) -> KafkaConsumer:
        return KafkaConsumer(
            **kafka_client_config(self.reading, client_id=f"drill-reader-{self.name}"),
            enable_auto_commit=False,
        )

    def prepare(self) -> None:
        reader = self._consumer()
        try:
            self.start_offset = reader.end_offsets([self.tp])[self.tp]
        finally:
            reader.close()
        # The flush wait covers a leader election (session timeout + election).
        self.producer = BarProducer(
            self.kafka,
            tuning=ProducerTuning(bars_per_record=25, flush_timeout_s=45.0),
            client_id=f"drill-{self.name}",
        )

    def bars(self) -> Iterator[Bar]:
        return drill_bars(self.symbols)

    def write(self, bars: list[Bar]) -> None:
        assert self.producer is not None
        self.producer.send_bars(bars)
        self.producer.flush()  # raises ProduceError unless every record was acknowledged

    def during_fault(self, node: str) -> None:
        began = time.monotonic()

        def new_leader() -> bool:
            return self.target() != node

        wait_until(new_leader, 60, f"a new leader of {self.topic}/{PARTITION}")
        self.figures["new_leader"] = self.target()
        self.figures["leader_elected_after_s"] = round(time.monotonic() - began, 2)

    def recover(self, node: str) -> None:
        self.fault.undo(self.stack, node)
        me = node_id(node)

        def back_in_isr() -> bool:
            with self.stack.kafka_admin() as admin:
                info = admin.describe_topics([self.topic])[0]
            part = next(p for p in info["partitions"] if p["partition_index"] == PARTITION)
            return me in part["isr_nodes"]

        self.figures["back_in_isr_after_restart_s"] = round(
            wait_until(back_in_isr, 90, f"{node} to rejoin the ISR of {self.topic}/{PARTITION}"), 2
        )
        # As found: hand leadership back to the preferred replica (best effort;
        # the broker's own auto rebalance would do it within 5 minutes).
        with contextlib.suppress(Exception), self.stack.kafka_admin() as admin:
            admin.elect_leaders(0, {self.topic: [PARTITION]}, raise_errors=False)

    def found_keys(self, acknowledged: list[Any]) -> list[Hashable]:
        reader = self._consumer()
        found: list[Hashable] = []
        mine = set(self.symbols)
        try:
            reader.assign([self.tp])
            end = reader.end_offsets([self.tp])[self.tp]
            reader.seek(self.tp, self.start_offset)
            deadline = time.monotonic() + 60
            while reader.position(self.tp) < end:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading {self.topic}/{PARTITION} back took over 60 s")
                for records in reader.poll(timeout_ms=500, max_records=2000).values():
                    for rec in records:
                        if rec.key is None or rec.key.decode() not in mine:
                            continue
                        decoded = decode_record(rec.value, rec.headers, key=rec.key, origin="drill")
                        found.extend(b.key for b in decoded.bars)
        finally:
            reader.close()
        self.figures["read_back_offsets"] = f"{self.start_offset}..{end}"
        return found

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close(timeout_s=10)
