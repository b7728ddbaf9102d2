"""Drill: every Redis server down, and the consumer restarted during the outage.

The writer ingests through ``Backbone.ingest`` while a reader asks for the
latest bar of each drill symbol every 0.1 s through the same runtime's cache.
Then every Redis server stops and the runtime is *restarted* (closed, opened
again in the same consumer group) while Redis is down: it must start in
cache-degraded mode instead of refusing, and ingest must go on. When Redis is
back, the cache's probe re-attaches it, flushes the namespace and warms the hot
symbols (the drill's); the drill measures how long that took, the hit ratio
after it (overall, and for a hot symbol written once before the fault, which
the warm-up must have put back: the writer's own symbols change every batch and
miss by design), and every read that returned a bar older than one already
acknowledged (a stale read: there must be none).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from backbone.bars import Bar
from backbone.cache import CachePolicy, DegradableCache
from backbone_harness.drills.base import Fault, wait_until
from backbone_harness.drills.outage import TIMEFRAME, OutageDrill
from backbone_harness.drills.writer import drill_bars

__all__ = ["RedisOutageRestartDrill"]


class RedisOutageRestartDrill(OutageDrill):
    name = "redis-outage-restart"
    #: Seconds writes may stop: no ceiling (every Redis server is down for the hold).
    max_unavailable_s: float | None = None
    summary = (
        "stop every Redis server and restart the consumer meanwhile; it starts "
        "cache-degraded, ingest goes on, the cache re-attaches and warms, no stale read"
    )
    fault = Fault(role="every Redis server, then a consumer restart", kind="stop")
    prefix = "redis-"
    symbol_prefix = "DRO"

    def __init__(self, stack: Any) -> None:
        super().__init__(stack)
        #: Newest acknowledged bar time per symbol (what a read must not go below).
        self._acked: dict[str, datetime] = {}
        self.reads = 0
        self.read_failures = 0
        self.stale_reads = 0
        self._fault_at = 0.0
        self._acked_during_fault = 0
        self._faulted = False
        #: A hot symbol with one bar, stored before the fault and never written again.
        self.quiet_symbol = f"{self.symbols[0]}Q"
        self.quiet_reads_after_attach = 0
        self.quiet_hits_after_attach = 0
        self._attached_seen = False

    def settings(self) -> Any:
        return (
            super()
            .settings()
            .model_copy(
                update={
                    "cache": CachePolicy(
                        hot_symbols=frozenset([*self.symbols, self.quiet_symbol]),
                        warm_timeframes=(TIMEFRAME,),
                    )
                }
            )
        )

    def prepare(self) -> None:
        super().prepare()
        assert self.backbone is not None
        quiet = next(drill_bars([self.quiet_symbol], TIMEFRAME))
        self.backbone.ingest([quiet])
        self._acked[self.quiet_symbol] = quiet.ts

    def after_write(self, bars: list[Bar], duplicates: int) -> None:
        for bar in bars:
            seen = self._acked.get(bar.symbol)
            if seen is None or bar.ts > seen:
                self._acked[bar.symbol] = bar.ts
        if self._faulted:
            self._acked_during_fault += len(bars)

    def probe(self) -> None:
        with self.lock:
            backbone = self.backbone
            if backbone is None:
                return
            cache = backbone.cache
            attached = isinstance(cache, DegradableCache) and self._faulted and cache.attached
            for symbol in [*self.symbols, self.quiet_symbol]:
                floor = self._acked.get(symbol)
                hits_before = cache.stats().hits if attached else 0
                try:
                    got = backbone.latest(symbol, TIMEFRAME)
                except Exception as exc:
                    self.read_failures += 1
                    self.problems.append(f"a read raised {type(exc).__name__}: {str(exc)[:120]}")
                    continue
                self.reads += 1
                if attached and symbol == self.quiet_symbol:
                    self.quiet_reads_after_attach += 1
                    self.quiet_hits_after_attach += cache.stats().hits > hits_before
                if floor is not None and (got is None or got.ts < floor):
                    self.stale_reads += 1
                    self.problems.append(
                        f"a read of {symbol} returned {got.ts if got else None}, older than "
                        f"the acknowledged {floor}"
                    )

    def inject(self, node: str) -> None:
        super().inject(node)
        self._faulted = True
        self._fault_at = time.monotonic()
        # The consumer restarts while the cache is down (a deploy, an OOM kill).
        with self.lock:
            old, self.backbone = self.backbone, None
            if old is not None:
                old.close()
            began = time.monotonic()
            self.backbone = self.open_backbone()
            self.figures["restart_while_redis_down_s"] = round(time.monotonic() - began, 2)
        cache = self.backbone.cache
        degraded = isinstance(cache, DegradableCache) and cache.state().degraded
        self.figures["started_cache_degraded"] = str(degraded)
        if not degraded:
            self.problems.append("the restarted runtime did not start in cache-degraded mode")

    def recover(self, node: str) -> None:
        super().recover(node)
        back_at = time.monotonic()
        self.figures["acknowledged_while_redis_down"] = self._acked_during_fault
        if self._acked_during_fault == 0:
            self.problems.append("nothing was ingested while Redis was down")
        backbone = self.backbone
        assert backbone is not None
        cache = backbone.cache
        assert isinstance(cache, DegradableCache)
        wait_until(lambda: cache.attached, 60, "the cache probe to re-attach Redis")
        self.figures["reattached_after_redis_back_s"] = round(time.monotonic() - back_at, 2)
        state = cache.state()
        self.figures["flushed_keys_at_attach"] = state.flushed_keys
        self.figures["warmed_entries_at_attach"] = state.warmed_entries
        self._stats_at_attach = cache.stats()
        if self.stack.spec.redis.sentinels:
            primary = self.nodes[0]
            wait_until(
                lambda: self.stack.redis_primary() == primary, 60, f"{primary} to be primary"
            )

    def found_keys(self, acknowledged: list[Any]) -> list[Any]:
        found = super().found_keys(acknowledged)
        backbone = self.backbone
        if backbone is not None:
            end = backbone.cache.stats()
            start = getattr(self, "_stats_at_attach", None)
            if start is not None:
                hits, reads = end.hits - start.hits, end.reads - start.reads
                self.figures["hit_ratio_after_reattach"] = round(hits / reads, 3) if reads else 0.0
                self.figures["reads_after_reattach"] = reads
            self.figures["reads_served_by_the_store_while_degraded"] = end.fallbacks
        self.figures.update(
            reads=self.reads,
            read_failures=self.read_failures,
            stale_reads=self.stale_reads,
            quiet_hot_symbol_reads_after_reattach=self.quiet_reads_after_attach,
            quiet_hot_symbol_hits_after_reattach=self.quiet_hits_after_attach,
        )
        if self.quiet_reads_after_attach and not self.quiet_hits_after_attach:
            self.problems.append("the warmed hot symbol never hit after the re-attach")
        return found
