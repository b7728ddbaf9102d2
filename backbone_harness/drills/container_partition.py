"""Drill: a Kafka broker's container taken off its network (a real partition), then back.

Compose stacks only. ``podman network disconnect`` removes the container's
interface: the broker keeps running and keeps its data, but nothing reaches it
and it reaches nobody — not the other brokers, not the clients on the host
(podman still holds the published port, so connections hang instead of being
refused, which is what a partitioned peer looks like). On ``ha`` the other
brokers fence it and elect new leaders for its partitions; on ``minimal`` the
only broker is gone until the heal. The writer ingests through
``Backbone.ingest`` as in ``kafka-outage``: it may block or fail loudly
(:data:`~backbone_harness.drills.kafka_outage.LOUD_ERRORS`), never drop. After
``podman network connect`` the drill waits for an ingest acknowledged after
the heal; then every acknowledged bar must be stored exactly once.

Processes on loopback share one network namespace, so the local environment
has no such fault: its path partition is ``network-partition`` (Toxiproxy).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from backbone.bars import Bar
from backbone.job_logins import harness_section
from backbone_harness.drills.base import Fault, wait_until
from backbone_harness.drills.kafka_outage import KafkaOutageDrill
from backbone_infra.targets.local.kafka import tls_handshakes

__all__ = ["ContainerPartitionDrill"]

#: The partition whose leader is cut off (the same role as ``kafka-leader-kill``).
TOPIC = "intraday_bars"
PARTITION = 0
#: Seconds the heal may take to show as an acknowledged ingest (a client's
#: request to the partitioned broker times out first: 30 s by default).
HEAL_TIMEOUT_S = 180.0


class ContainerPartitionDrill(KafkaOutageDrill):
    name = "container-partition"
    #: Seconds writes may stop: no ceiling (the partitioned node is cut off for the hold).
    max_unavailable_s: float | None = None
    summary = (
        "take the Kafka broker leading intraday-bars partition 0 off the container "
        "network (a real partition) for the hold, then reconnect it: ingest blocks or "
        "fails loudly, nothing acknowledged is lost or stored twice"
    )
    fault = Fault(
        role="the Kafka broker leading market-data.intraday-bars partition 0", kind="disconnect"
    )
    symbol_prefix = "DCP"
    stack_sizes = ("minimal", "ha")
    environments = ("compose",)
    needs = (
        "processes on loopback share one network namespace, so no node can be taken "
        "off a network; the local path partition is network-partition (Toxiproxy)"
    )

    def __init__(self, stack: Any) -> None:
        super().__init__(stack)
        self._acked_at: list[float] = []
        self._acked_lock = threading.Lock()
        self._fault_at = 0.0

    def target(self) -> str:
        kafka = self.doc.kafka
        assert kafka is not None
        return self.stack.kafka_partition_leader(kafka.topics[TOPIC].name, PARTITION)

    def after_write(self, bars: list[Bar], duplicates: int) -> None:
        super().after_write(bars, duplicates)
        with self._acked_lock:
            self._acked_at.append(time.monotonic())

    def _acked_since(self, since: float) -> int:
        with self._acked_lock:
            return sum(1 for t in self._acked_at if t > since)

    def inject(self, node: str) -> None:
        self.fault.apply(self.stack, node)
        self._fault_at = time.monotonic()

    def during_fault(self, node: str) -> None:
        # The partition must be real: the broker's published port stops answering.
        time.sleep(2.0)
        self.figures["broker_answered_while_partitioned"] = str(self._answers(node))
        if self._answers(node):
            self.problems.append(f"{node} still answered on its published port: no partition")

    def _answers(self, node: str) -> bool:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        # A metadata probe: any job may log in and ask; the writer's login, as the drill's producer.
        kafka = harness_section(self.doc, "producer")
        server = f"127.0.0.1:{self.stack.node_ports(node)['client']}"
        if kafka.ssl_cafile and not tls_handshakes(server, kafka.ssl_cafile, 3.0):
            # kafka-python waits for a TLS handshake without a deadline; behind
            # podman's forwarder a partitioned broker accepts and never answers.
            return False
        try:
            KafkaAdminClient(
                bootstrap_servers=[server],
                security_protocol=kafka.security_protocol,
                ssl_cafile=kafka.ssl_cafile,
                sasl_mechanism=kafka.sasl_mechanism,
                sasl_plain_username=kafka.username,
                sasl_plain_password=kafka.password.get_secret_value() if kafka.password else None,
                request_timeout_ms=3000,
                bootstrap_timeout_ms=3000,
            ).close()
        except KafkaError:
            return False
        return True

    def recover(self, node: str) -> None:
        self.figures["acknowledged_while_partitioned"] = self._acked_since(self._fault_at)
        self.fault.undo(self.stack, node)
        healed = time.monotonic()
        self.figures["first_ingest_after_reconnect_s"] = round(
            wait_until(
                lambda: self._acked_since(healed) > 0,
                HEAL_TIMEOUT_S,
                "an ingest acknowledged after the reconnect",
            ),
            2,
        )
        self.figures["broker_answers_after_reconnect"] = str(self._answers(node))
        if not self._answers(node):
            self.problems.append(f"{node} did not answer again after the reconnect")
