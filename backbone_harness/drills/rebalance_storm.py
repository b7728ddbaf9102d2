"""Drill: consumer-group members join and leave over and over while bars flow.

The writer produces bars (``acks=all``) to both bar topics. During the fault,
``MEMBERS`` extra members of the drill's group churn: each joins, consumes for
a random 1 to 3 s, and leaves the group. Every join and leave
rebalances the group, so partitions move while polls are in flight and
uncommitted records are re-read by their next owner.

Proof: after the storm a fresh member catches the group up; every acknowledged
bar is in the store (0 lost) and once (the idempotent upsert absorbs every
re-read: counted, never stored twice).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Hashable
from typing import Any

from backbone.job_logins import harness_section
from backbone.settings import KafkaConnectionSettings, TimescaleConnectionSettings
from backbone.store.timescale import TimescaleStore
from backbone.stream.consumer import BarConsumer
from backbone_harness.drills.base import Fault, wait_until
from backbone_harness.drills.consumer_crash import TOPICS, ConsumerCrashDrill
from backbone_harness.drills.writer import drain_group, stored_keys

__all__ = ["ConsumerRebalanceStormDrill"]

#: Churning members at once.
MEMBERS = 3
#: The drill fails unless the storm caused at least this many joins.
MIN_JOINS = 6


class ConsumerRebalanceStormDrill(ConsumerCrashDrill):
    name = "consumer-rebalance-storm"
    summary = "members join and leave the ingest group repeatedly under load: 0 lost, 0 twice"
    fault = Fault(role="the members of the ingest consumer group", kind="stop")
    #: Seconds writes may stop (the writer produces; group churn must not stop acknowledgements).
    max_unavailable_s: float | None = 5.0

    def __init__(self, stack: Any) -> None:
        super().__init__(stack)
        self._storming = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.joins = self.leaves = 0
        self.stored_by_members = self.reread_absorbed = 0
        self.member_errors: list[str] = []

    def prepare(self) -> None:
        super().prepare()
        assert self.store is not None
        self.store.close()
        # One connection per churning member and one for the last member; the
        # members and their store log in as the consumer job.
        self.store = TimescaleStore(
            TimescaleConnectionSettings.from_section(
                harness_section(self.doc, "store"), pool_max_size=MEMBERS + 1
            ),
            timeout=30.0,
        )
        self.member_kafka = KafkaConnectionSettings.from_section(
            harness_section(self.doc, "consumer")
        )

    def target(self) -> str:
        return f"consumer group {self.group}"

    def inject(self, node: str) -> None:
        self._storming.set()
        for i in range(MEMBERS):
            t = threading.Thread(target=self._churn, args=(i,), name=f"storm-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def _churn(self, slot: int) -> None:
        rng = random.Random(slot)
        n = 0
        while self._storming.is_set():
            n += 1
            try:
                member = BarConsumer(
                    self.member_kafka,
                    self.store,
                    group_id=self.group,
                    topics=TOPICS,
                    session_timeout_ms=6000,
                    client_id=f"storm-{slot}-{n}",
                )
            except Exception as exc:
                self._error(exc)
                time.sleep(0.5)
                continue
            with self._lock:
                self.joins += 1
            try:
                stats = member.run(timeout_s=rng.uniform(1.0, 3.0))
                with self._lock:
                    self.stored_by_members += stats.stored
                    self.reread_absorbed += stats.duplicates
            except Exception as exc:
                self._error(exc)
            finally:
                with contextlib.suppress(Exception):
                    member.close()
                with self._lock:
                    self.leaves += 1

    def _error(self, exc: Exception) -> None:
        with self._lock:
            if len(self.member_errors) < 20:
                self.member_errors.append(f"{type(exc).__name__}: {str(exc)[:160]}")

    def during_fault(self, node: str) -> None:
        wait_until(lambda: self.joins >= MIN_JOINS, 90, f"{MIN_JOINS} members to join the group")

    def recover(self, node: str) -> None:
        self._storming.clear()
        for t in self._threads:
            t.join(30)

    def found_keys(self, acknowledged: list[Any]) -> list[Hashable]:
        assert self.store is not None
        stats = drain_group(self.member_kafka, self.store, self.group, TOPICS)
        self.figures.update(
            member_joins=self.joins,
            member_leaves=self.leaves,
            stored_by_churning_members=self.stored_by_members,
            stored_by_the_last_member=stats.stored,
            reread_bars_absorbed=self.reread_absorbed + stats.duplicates,
            member_errors=len(self.member_errors),
        )
        if self.joins < MIN_JOINS:
            self.problems.append(f"only {self.joins} members joined: no storm")
        return stored_keys(self.store, self.symbols, "1m")

    def close(self) -> None:
        self._storming.clear()
        for t in self._threads:
            t.join(30)
        for part in (self.producer, self.store):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.close()
