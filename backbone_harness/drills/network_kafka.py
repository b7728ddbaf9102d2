"""Drills: the network path from the clients to the Kafka partition leader, cut or slowed.

``network-partition-kafka`` and ``network-latency-kafka`` are the network
drills of :mod:`backbone_harness.drills.network` on the path to the broker
that leads ``market-data.intraday-bars`` partition 0 (found by role when the
drill starts), while a ``BarProducer`` (acks=all, idempotent) writes symbols
that all hash to that partition, each batch flushed.

**Why a listener per broker, not network namespaces.** Kafka clients
bootstrap from any address, then connect to the addresses the brokers
*advertise* in their metadata; a proxy in front of the bootstrap address
alone would be bypassed after the first answer. So every broker of a local
stack has a ``DRILL`` listener (rendered once, in
:mod:`backbone_infra.render.kafka`) advertised at a second loopback port; the
drill's Toxiproxy listens on each of those ports and forwards to the broker's
``DRILL`` port, and the drill's clients bootstrap from the outputs document's
``drill.kafka_bootstrap_servers``. Every connection to every broker then
passes its own proxy, and the drill faults the leader's alone; the brokers
keep replicating over ``INTERNAL``, so the leader stays the leader, which is
the fault being rehearsed (clients cut off from a healthy leader). Network
namespaces (veth pairs, iproute2) would cut a real interface, but the
brokers would have to run inside them (the local renderer starts them on the
host), and every address would leave loopback, which the shared machines
rule out; the listener costs two loopback ports per broker and nothing at
run time (nothing listens on the advertised port outside a drill).

Expect, for the cut: sends to partition 0 block for the hold (their
connections closed every ``PARTITION_CLOSE_MS``, metadata from the other
brokers still naming the same leader), nothing acknowledged in the first
seconds, then every blocked batch delivered after the heal inside the
producer's delivery timeout (the flush waits ``BLOCK_FOR_S``, below it, so a
blocked record is never failed and resent as a second copy). For the slow
link: every acknowledgement ≥ ``LATENCY_MS - JITTER_MS`` later. Either way the
partition read back from the drill's start offset (directly, not through the
proxy) holds every acknowledged bar once.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

from backbone.bars import Bar
from backbone.connections import KafkaConnection, write_document
from backbone.job_logins import harness_section
from backbone.settings import KafkaConnectionSettings
from backbone.stream.producer import BarProducer, ProducerTuning
from backbone_harness.drills.kafka_leader import PARTITION, KafkaLeaderKillDrill
from backbone_harness.drills.network import (
    JITTER_MS,
    LATENCY_MS,
    CutPath,
    PathDrill,
    PathFault,
    SlowPath,
)

__all__ = ["KafkaLeaderLatencyDrill", "KafkaLeaderPartitionDrill"]

#: A write may block this long (the hold and the heal), below the producer's
#: 120 s delivery timeout: a blocked record is delivered, not failed and resent.
BLOCK_FOR_S = 110.0
_ROLE = (
    "the network path from the clients to the leader of market-data.intraday-bars "
    f"partition {PARTITION}"
)


class _LeaderPathDrill(PathDrill, KafkaLeaderKillDrill):
    """A proxy per broker on its ``DRILL`` listener; the producer connects through them."""

    min_acknowledged = 200

    def __init__(self, stack: Any) -> None:
        super().__init__(stack)
        kafka: KafkaConnection = stack.document.kafka
        drill = stack.document.drill
        if drill is None or not drill.kafka_bootstrap_servers:
            raise ValueError(
                f"stack {stack.name!r} has no Kafka DRILL listener (its outputs document lists "
                "no drill.kafka_bootstrap_servers): it was brought up before the listener "
                "existed; bring it up again (`harness down` then `harness up --size ha`)"
            )
        self.proxied = kafka.model_copy(
            update={"bootstrap_servers": list(drill.kafka_bootstrap_servers)}
        )
        self._load_outputs: Path | None = None

    def prepare(self) -> None:
        # One proxy per broker, listening where that broker advertises its DRILL listener.
        for name in self.stack.node_names():
            if name.startswith("kafka-"):
                ports = self.stack.node_ports(name)
                try:
                    self.open_proxy(name, ports["drill"], listen_port=ports["drill_proxy"])
                except RuntimeError as exc:
                    raise RuntimeError(
                        f"cannot proxy {name}'s DRILL listener on 127.0.0.1:"
                        f"{ports['drill_proxy']} ({exc}); another process holds that port: "
                        "free it, or bring the stack up again for new ports"
                    ) from None
        super().prepare()  # the start offset, and a producer we replace
        assert self.producer is not None
        self.producer.close(timeout_s=10)
        # The producer logs in as the writer, through the proxies.
        writer = harness_section(self.stack.document, "producer")
        self.producer = BarProducer(
            KafkaConnectionSettings.from_section(
                writer.model_copy(update={"bootstrap_servers": self.proxied.bootstrap_servers})
            ),
            tuning=ProducerTuning(bars_per_record=25, flush_timeout_s=BLOCK_FOR_S),
            client_id=f"drill-{self.name}",
        )
        proxy = self.proxies[self.target()]
        self.figures["proxied_leader"] = f"{proxy.host}:{proxy.port} -> {proxy.upstream}"
        self._load_outputs = write_document(
            self.stack.document.model_copy(update={"kafka": self.proxied}),
            self.stack.dir / "drills" / f"{self.name}-outputs.json",
        )

    def load_outputs(self) -> Path | None:
        """The stack's document with Kafka behind the proxies: the load's producers
        take the faulted path too."""
        return self._load_outputs

    def write(self, bars: list[Bar]) -> None:
        self.timed(lambda: KafkaLeaderKillDrill.write(self, bars))

    def found_keys(self, acknowledged: list[Any]) -> list[Hashable]:
        self.path_figures()
        self.figures["leader_after_heal"] = self.target()
        return super().found_keys(acknowledged)  # partition 0 read back, not proxied


class KafkaLeaderPartitionDrill(CutPath, _LeaderPathDrill):
    name = "network-partition-kafka"
    #: Seconds writes may stop: no ceiling (the path to the leader is cut for the hold).
    max_unavailable_s: float | None = None
    summary = (
        "cut the path from the clients to the leader of intraday-bars/0 (every byte "
        "dropped) for the hold, then heal it: sends block, nothing acknowledged is lost "
        "or written twice"
    )
    fault = PathFault(role=_ROLE, kind="cut")


class KafkaLeaderLatencyDrill(SlowPath, _LeaderPathDrill):
    name = "network-latency-kafka"
    #: Seconds writes may stop (200 ms per round trip slows acknowledgements,
    #: it must not stop them).
    max_unavailable_s: float | None = 5.0
    summary = (
        f"add {LATENCY_MS} ms ± {JITTER_MS} ms to every reply from the leader of "
        "intraday-bars/0: acknowledgements slow down, none is lost"
    )
    fault = PathFault(role=_ROLE, kind="slow")
