"""Drill: SIGKILL the active KRaft controller while producing and consuming.

Every node is a broker and a controller voter (combined mode). The drill asks
the quorum for its leader (the active controller) and kills it while a
producer writes ``acks=all`` to ``market-data.intraday-bars`` partition 0 and a
consumer group moves the topic into the store. The remaining two voters elect
a new controller; the producer and the consumer ride through it.

Proof, twice: partition 0 read back from the drill's start offset holds every
acknowledged bar exactly once (the idempotent producer), and the store holds
every acknowledged bar (the consumer lost nothing across the election).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Hashable
from typing import Any

from backbone.job_logins import harness_section
from backbone.settings import KafkaConnectionSettings, TimescaleConnectionSettings
from backbone.store.timescale import TimescaleStore
from backbone.stream.consumer import BarConsumer
from backbone_harness.drills.base import Fault, wait_until
from backbone_harness.drills.kafka_leader import KafkaLeaderKillDrill
from backbone_harness.drills.writer import drain_group, stored_keys

__all__ = ["KafkaControllerKillDrill"]


class KafkaControllerKillDrill(KafkaLeaderKillDrill):
    name = "kafka-controller-kill"
    summary = "SIGKILL the active KRaft controller under acks=all produce and a consuming group"
    fault = Fault(role="the active KRaft controller (leader of the metadata quorum)", kind="kill")
    #: Seconds writes may stop (the quorum elects a controller in seconds;
    #: 7.6-8.2 s measured on a loaded 2-core box).
    max_unavailable_s: float | None = 15.0
    min_acknowledged = 500
    load_produces = False  # its consumer group reads the bar topic

    def __init__(self, stack: Any) -> None:
        super().__init__(stack)
        doc = stack.document
        if doc.timescale is None:
            raise ValueError(f"stack {stack.name!r} has no PostgreSQL; drills need an ha stack")
        # The group member and its store log in as the consumer (it consumes,
        # commits its group and writes bars), as Backbone's consumer does.
        self.timescale = harness_section(doc, "store")
        self.consuming = KafkaConnectionSettings.from_section(harness_section(doc, "consumer"))
        self.group = f"backbone-drill-controller-{secrets.token_hex(3)}"
        self.store: TimescaleStore | None = None
        self.consumer: BarConsumer | None = None
        self._consuming = threading.Event()
        self._thread: threading.Thread | None = None
        self.consume_errors: list[str] = []

    def target(self) -> str:
        return self.stack.kafka_active_controller()

    def prepare(self) -> None:
        super().prepare()
        self.store = TimescaleStore(
            TimescaleConnectionSettings.from_section(self.timescale, pool_max_size=2), timeout=30.0
        )
        self.consumer = BarConsumer(
            self.consuming,
            self.store,
            group_id=self.group,
            topics=("intraday_bars",),
            client_id=f"drill-{self.name}-consumer",
            start_at="latest",
        )
        if not self.consumer.wait_for_assignment(60):
            raise RuntimeError(f"the drill's consumer group {self.group} got no partitions in 60 s")
        self._consuming.set()
        self._thread = threading.Thread(target=self._consume, name="drill-consumer", daemon=True)
        self._thread.start()

    def _consume(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        while self._consuming.is_set():
            try:
                consumer.run(timeout_s=2.0)
            except Exception as exc:  # the election shows as consumer errors: keep going
                if len(self.consume_errors) < 20:
                    self.consume_errors.append(f"{type(exc).__name__}: {str(exc)[:160]}")
                time.sleep(0.5)

    def during_fault(self, node: str) -> None:
        began = time.monotonic()
        elected: list[str] = []

        def a_new_controller() -> bool:
            # One answer, kept: asking again may meet the killed node (ECONNREFUSED).
            controller = self.stack.kafka_active_controller()
            if controller == node:
                return False
            elected.append(controller)
            return True

        wait_until(a_new_controller, 60, "a new active controller")
        self.figures["controller_elected_after_s"] = round(time.monotonic() - began, 2)
        self.figures["new_controller"] = elected[-1]

    def found_keys(self, acknowledged: list[Any]) -> list[Hashable]:
        found = super().found_keys(acknowledged)  # partition 0, from the start offset
        consumer, store = self.consumer, self.store
        assert consumer is not None and store is not None
        self._consuming.clear()
        consumer.stop()
        if self._thread is not None:
            self._thread.join(30)
        consumer.close()
        self.consumer = None
        # A new member of the group drains what the first left uncommitted.
        self.figures["drained_after_recovery"] = drain_group(
            self.consuming,
            store,
            self.group,
            ("intraday_bars",),
            client_id=f"drill-{self.name}-drain",
        ).stored
        stored = set(stored_keys(store, self.symbols, "1m"))
        missing = set(acknowledged) - stored
        self.figures["consumer_errors"] = len(self.consume_errors)
        self.figures["acknowledged_missing_from_store"] = len(missing)
        if missing:
            self.problems.append(f"{len(missing)} acknowledged bars never reached the store")
        return found

    def close(self) -> None:
        self._consuming.clear()
        if self.consumer is not None:
            self.consumer.stop()
            if self._thread is not None:
                self._thread.join(30)
            with contextlib.suppress(Exception):
                self.consumer.close()
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.close()
        super().close()
