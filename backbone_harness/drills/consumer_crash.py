"""Drill: the ingest consumer is SIGKILLed between its store commit and its offset commit.

The writer produces bars (acks=all). A ``backbone consume`` process of a fresh
group runs with the crash hook ``BACKBONE_TEST_CRASH_POINT=after-store-commit``:
after its first store transaction commits it SIGKILLs itself, before the
offsets are committed. A new member of the group then re-reads that poll: the
idempotent upsert absorbs the redelivered bars (counted as duplicates by the
consumer, never stored twice) and every acknowledged bar must be in the store
exactly once.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Hashable, Iterator
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from backbone.bars import Bar
from backbone.job_logins import harness_section
from backbone.settings import KafkaConnectionSettings, TimescaleConnectionSettings
from backbone.store.timescale import TimescaleStore
from backbone.stream.consumer import CRASH_POINT_ENV
from backbone.stream.producer import BarProducer, ProducerTuning, kafka_client_config
from backbone_harness.drills.base import Drill, Fault, wait_until
from backbone_harness.drills.writer import drain_group, drill_bars, stored_keys

__all__ = ["ConsumerCrashDrill"]

TOPICS = ("daily_bars", "intraday_bars")


class ConsumerCrashDrill(Drill):
    name = "consumer-crash-after-store-commit"
    #: Seconds writes may stop (the writer produces; a consumer crash must not
    #: stop acknowledgements).
    max_unavailable_s: float | None = 5.0
    summary = "SIGKILL the consumer after its store commit, before its offset commit"
    fault = Fault(role="the ingest consumer, between store commit and offset commit", kind="kill")
    min_acknowledged = 200
    load_produces = False  # its consumer group reads the bar topic

    def __init__(self, stack: Any) -> None:
        super().__init__(stack)
        doc = stack.document
        if doc.kafka is None or doc.timescale is None:
            raise ValueError(f"stack {stack.name!r} has no Kafka and PostgreSQL (Tier 1)")
        self.doc = doc
        self.group = f"backbone-drill-consumer-{secrets.token_hex(3)}"
        self.symbols = [f"DC{secrets.token_hex(2).upper()}{i}" for i in range(4)]
        self.producer: BarProducer | None = None
        self.store: TimescaleStore | None = None
        self.crashing: subprocess.Popen[bytes] | None = None
        self.log_path = stack.dir / f"{self.group}.log"

    def target(self) -> str:
        return f"backbone consume --group {self.group}"

    def prepare(self) -> None:
        assert self.doc.kafka is not None and self.doc.timescale is not None
        self._start_group_at_the_end()
        # Each client logs in as its job: the producer as the writer; the group's
        # set-up, its new member and their store (writes, then the read-back) as
        # the consumer, as `backbone consume` does.
        self.producer = BarProducer(
            KafkaConnectionSettings.from_section(harness_section(self.doc, "producer")),
            tuning=ProducerTuning(bars_per_record=25, flush_timeout_s=30.0),
            client_id=f"drill-{self.name}",
        )
        self.store = TimescaleStore(
            TimescaleConnectionSettings.from_section(
                harness_section(self.doc, "store"), pool_max_size=2
            ),
            timeout=30.0,
        )

    def _start_group_at_the_end(self) -> None:
        # The drill's group starts where the topics end now: only its own bars
        # (and concurrent ones) are read, never the whole retained history.
        kafka = harness_section(self.doc, "consumer")
        client = KafkaConsumer(
            **kafka_client_config(
                KafkaConnectionSettings.from_section(kafka), client_id=f"drill-{self.name}-setup"
            ),
            group_id=self.group,
            enable_auto_commit=False,
        )
        try:
            tps = [
                TopicPartition(kafka.topics[t].name, p)
                for t in TOPICS
                for p in range(kafka.partitions(t))
            ]
            ends = client.end_offsets(tps)
            client.commit({tp: OffsetAndMetadata(end, "", -1) for tp, end in ends.items()})
        finally:
            client.close()

    def bars(self) -> Iterator[Bar]:
        return drill_bars(self.symbols, "1m")

    def write(self, bars: list[Bar]) -> None:
        assert self.producer is not None
        self.producer.send_bars(bars)
        self.producer.flush()

    def inject(self, node: str) -> None:
        env = {**os.environ, CRASH_POINT_ENV: "after-store-commit"}
        self.log_path = self.stack.dir / f"{self.group}.log"
        with self.log_path.open("wb") as log:
            self.crashing = subprocess.Popen(
                [sys.executable, "-m", "backbone", "consume", "--outputs",
                 str(self.stack.outputs_path), "--group", self.group, "--timeout", "90"],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def during_fault(self, node: str) -> None:
        crashing = self.crashing
        assert crashing is not None
        try:
            wait_until(lambda: crashing.poll() is not None, 90, "the consumer to crash")
        except TimeoutError:
            tail = self.log_path.read_text(errors="replace").splitlines()[-5:]
            raise TimeoutError(
                f"the consumer never reached its crash point in 90 s; its log "
                f"{self.log_path} ends: {' | '.join(tail)}"
            ) from None
        self.figures["crashing_consumer_exit"] = crashing.returncode
        if crashing.returncode != -signal.SIGKILL:
            self.problems.append(
                f"the consumer exited with {crashing.returncode}, not SIGKILL at its crash point"
            )

    def recover(self, node: str) -> None:
        """Nothing of the stack was touched; the new member starts in ``found_keys``."""

    def found_keys(self, acknowledged: list[Any]) -> list[Hashable]:
        assert self.doc.kafka is not None and self.store is not None
        stats = drain_group(
            KafkaConnectionSettings.from_section(harness_section(self.doc, "consumer")),
            self.store,
            self.group,
            TOPICS,
        )
        self.figures["redelivered_bars_absorbed"] = stats.duplicates
        self.figures["stored_by_the_new_member"] = stats.stored
        if stats.duplicates == 0:
            self.problems.append(
                "the new member re-read nothing: the crash did not happen between the commits"
            )
        return stored_keys(self.store, self.symbols, "1m")

    def close(self) -> None:
        if self.crashing is not None and self.crashing.poll() is None:
            self.crashing.kill()
            self.crashing.wait(10)
        for part in (self.producer, self.store):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.close()
