"""Drill: the PostgreSQL primary (and, on ``ha``, its standby) stopped for the hold.

The writer ingests through ``Backbone.ingest``: each call returns once its bars
are stored and their offsets committed. With the store gone, the consumer
inside must not crash or loop: it pauses its partitions, holds its poll
uncommitted and retries with backoff and jitter; ``ingest`` blocks meanwhile.
When the store is back, the held poll is stored once, the offsets committed,
the partitions resumed. Every acknowledged bar must then be stored exactly
once, and the consumer must have paused: the drill holds the outage until it
does (the store's own connection wait absorbs a short one).
"""

from __future__ import annotations

from typing import Any

from backbone_harness.drills.base import Fault, wait_until
from backbone_harness.drills.outage import OutageDrill

__all__ = ["StoreOutageDrill"]


class StoreOutageDrill(OutageDrill):
    name = "store-outage"
    #: Seconds writes may stop: no ceiling (every PostgreSQL server is down for the hold).
    max_unavailable_s: float | None = None
    summary = (
        "stop the PostgreSQL primary (and standby) for the hold; the consumer pauses "
        "and retries, no crash loop, resumes with 0 lost and 0 duplicates"
    )
    fault = Fault(role="every PostgreSQL server (primary and standby)", kind="stop")
    prefix = "postgres-"
    symbol_prefix = "DSO"

    def during_fault(self, node: str) -> None:
        # Hold the outage until the consumer has paused: a shorter one is absorbed
        # by the store's own connection wait and would not exercise the pause.
        backbone = self.backbone
        assert backbone is not None and backbone.consumer is not None
        consumer = backbone.consumer
        self.figures["consumer_paused_after_s"] = round(
            wait_until(lambda: consumer.paused_for_store, 120, "the consumer to pause"), 2
        )

    def found_keys(self, acknowledged: list[Any]) -> list[Any]:
        found = super().found_keys(acknowledged)
        backbone = self.backbone
        assert backbone is not None and backbone.consumer is not None
        stats = backbone.consumer.stats
        self.figures.update(
            store_pauses=stats.store_pauses,
            store_paused_s=round(stats.store_paused_s, 2),
            consumer_duplicates=stats.duplicates,
            commit_failures=stats.commit_failures,
        )
        if stats.store_pauses == 0:
            self.problems.append("the consumer never paused: the outage missed every write")
        return found
