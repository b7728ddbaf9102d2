"""Drill: every Kafka broker stopped for the hold.

The writer ingests through ``Backbone.ingest``. With no broker, the producer
keeps at most ``max_bars_in_flight`` bars unacknowledged and then blocks;
``ingest`` either returns once the brokers are back (it blocked) or fails with
:class:`~backbone.stream.producer.ProduceError` naming the unacknowledged bars
(it failed loudly) — never a silent drop, never any other error. The writer
resends a failed batch (only what was not acknowledged); after recovery every
acknowledged bar must be stored exactly once.
"""

from __future__ import annotations

from typing import Any

from backbone.bars import Bar
from backbone_harness.drills.base import Fault
from backbone_harness.drills.outage import OutageDrill

__all__ = ["KafkaOutageDrill"]

#: What an ``ingest`` may raise while the brokers are gone: the producer's own
#: error, or the consumer's catch-up deadline (both name what to check).
LOUD_ERRORS = ("ProduceError", "TimeoutError")


class KafkaOutageDrill(OutageDrill):
    name = "kafka-outage"
    #: Seconds writes may stop: no ceiling (every broker is down for the hold).
    max_unavailable_s: float | None = None
    summary = (
        "stop every Kafka broker for the hold; producers block or fail loudly, "
        "nothing acknowledged is lost or stored twice after recovery"
    )
    fault = Fault(role="every Kafka broker", kind="stop")
    prefix = "kafka-"
    symbol_prefix = "DKO"

    def __init__(self, stack: Any) -> None:
        super().__init__(stack)
        self.loud_failures = 0
        self.duplicates_seen = 0

    def write(self, bars: list[Bar]) -> None:
        try:
            super().write(bars)
        except Exception as exc:
            kind = type(exc).__name__
            if kind in LOUD_ERRORS:
                self.loud_failures += 1
            else:
                self.problems.append(f"ingest failed with an unexpected {kind}: {str(exc)[:150]}")
            raise

    def after_write(self, bars: list[Bar], duplicates: int) -> None:
        self.duplicates_seen += duplicates

    def found_keys(self, acknowledged: list[Any]) -> list[Any]:
        found = super().found_keys(acknowledged)
        backbone = self.backbone
        producer = backbone.producer if backbone is not None else None
        self.figures.update(
            loud_failures=self.loud_failures,
            redelivered_or_resent_bars_absorbed_by_the_store=self.duplicates_seen,
            max_bars_in_flight=producer.tuning.max_bars_in_flight if producer else 0,
            backpressure_waits=producer.backpressure_waits if producer else 0,
        )
        return found
