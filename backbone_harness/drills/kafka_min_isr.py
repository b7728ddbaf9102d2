"""Drill: stop two of the three brokers, so partition 0 is below ``min.insync.replicas``.

The topic has replication factor 3 and ``min.insync.replicas=2``; the producer
sends with ``acks=all``. The drill stops (cleanly) every replica of
``market-data.intraday-bars`` partition 0 except its leader. With one replica
left no record can be replicated, so none may be acknowledged: the producer
must get errors or block (here it blocks, retrying inside its delivery
timeout) until the brokers are back. In combined KRaft mode the two stopped
nodes are also two of the three controller voters, so the metadata quorum is
lost too: the drill covers "no quorum" as well.

Proof: acknowledgements are timed by the drill; none may fall between the
moment the second broker stopped and the moment the first came back. After
recovery the partition is read back from the drill's start offset: every
acknowledged bar present (0 lost), none twice (idempotent producer).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from backbone.bars import Bar
from backbone.stream.producer import BarProducer, ProducerTuning
from backbone_harness.drills.base import wait_until
from backbone_harness.drills.faults import NodeGroupFault, join_nodes, split_nodes
from backbone_harness.drills.kafka_leader import PARTITION, KafkaLeaderKillDrill
from backbone_infra.render.kafka import node_id

__all__ = ["KafkaBelowMinIsrDrill"]

#: A write may block this long: the hold plus two broker restarts, below the
#: producer's 120 s delivery timeout (so a blocked record is delivered, not
#: failed and resent as a second copy).
BLOCK_FOR_S = 110.0
#: Seconds with a single replica, at least (the runner's ``--hold`` may add more).
BELOW_FOR_S = 8.0


class KafkaBelowMinIsrDrill(KafkaLeaderKillDrill):
    name = "kafka-below-min-isr"
    #: Seconds writes may stop: no ceiling (below min.insync.replicas nothing
    #: may be acknowledged, by design, for the hold).
    max_unavailable_s: float | None = None
    summary = (
        "stop two of three brokers (every follower of intraday-bars/0): nothing is "
        "acknowledged while it cannot be replicated; 0 lost after recovery"
    )
    fault = NodeGroupFault(
        role="both followers of market-data.intraday-bars partition 0 (2 of 3 brokers)",
        kind="stop",
        together=True,  # restarted at once: a lone restart timed out on a loaded machine
    )
    min_acknowledged = 500

    def __init__(self, stack: Any) -> None:
        super().__init__(stack)
        self._lock = threading.Lock()
        self._acked_at: list[float] = []
        self._errors_during_fault = 0
        self._below_since: float | None = None
        self._restart_at: float | None = None

    def target(self) -> str:
        leader = self.stack.kafka_partition_leader(self.topic, PARTITION)
        brokers = [n for n in self.stack.node_names() if n.startswith("kafka-")]
        followers = sorted(n for n in brokers if n != leader)
        self.figures["surviving_leader"] = leader
        return join_nodes(followers)

    def prepare(self) -> None:
        super().prepare()
        assert self.producer is not None
        self.producer.close(timeout_s=10)
        self.producer = BarProducer(
            self.kafka,
            tuning=ProducerTuning(bars_per_record=25, flush_timeout_s=BLOCK_FOR_S),
            client_id=f"drill-{self.name}",
        )

    def write(self, bars: list[Bar]) -> None:
        try:
            super().write(bars)
        except Exception:
            with self._lock:
                if self._below_since is not None and self._restart_at is None:
                    self._errors_during_fault += 1
            raise
        with self._lock:
            self._acked_at.append(time.monotonic())

    def inject(self, node: str) -> None:
        super().inject(node)  # returns once both brokers have stopped
        with self._lock:
            self._below_since = time.monotonic()

    def during_fault(self, node: str) -> None:
        """The leader survives alone: keep it below min ISR for ``BELOW_FOR_S``
        after the second broker stopped (stopping them took a while)."""
        since = self._below_since or time.monotonic()
        time.sleep(max(0.0, since + BELOW_FOR_S - time.monotonic()))

    def recover(self, node: str) -> None:
        with self._lock:
            self._restart_at = time.monotonic()
            below_since = self._below_since or self._restart_at
            acked = sum(1 for t in self._acked_at if below_since < t < self._restart_at)
        self.figures["below_min_isr_s"] = round(self._restart_at - below_since, 2)
        self.figures["writes_acknowledged_below_min_isr"] = acked
        self.figures["writes_failed_below_min_isr"] = self._errors_during_fault
        if acked:
            self.problems.append(
                f"{acked} writes were acknowledged while partition {PARTITION} had one replica"
            )
        self.fault.undo(self.stack, node)
        wanted = {node_id(n) for n in split_nodes(node)}

        def isr() -> set[int]:
            with self.stack.kafka_admin() as admin:
                info = admin.describe_topics([self.topic])[0]
            part = next(p for p in info["partitions"] if p["partition_index"] == PARTITION)
            return set(part["isr_nodes"])

        self.figures["back_in_isr_after_restart_s"] = round(
            wait_until(lambda: wanted <= isr(), 90, f"{node} to rejoin the ISR"), 2
        )
        self.figures["isr_after_recovery"] = len(isr())
        with contextlib.suppress(Exception), self.stack.kafka_admin() as admin:
            admin.elect_leaders(0, {self.topic: [PARTITION]}, raise_errors=False)

    def close(self) -> None:
        # A close while brokers were down must not wait the full block time.
        if self.producer is not None:
            self.producer.close(timeout_s=10)
