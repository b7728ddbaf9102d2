"""Drill: stop every Redis server and every Sentinel; the store serves, the cache warms back.

The writer ingests through ``Backbone.ingest`` (Kafka → PostgreSQL → cache
invalidation), as in ``redis-primary-kill``. Two readers run every 0.1 s:

* the latest bar of each symbol being written (it must never fail, and never
  be missing once acknowledged), and
* the latest bar of ``WARM_SYMBOLS`` fixed symbols, stored once before the
  fault, through a cache of its own: its hit ratio per ``WINDOW_S`` window
  shows the cache draining to 0 during the outage and warming back after.

Then all of Redis is stopped (Sentinels first, so none starts a failover),
held, and restarted (servers first, then Sentinels). The drill waits for the
original primary to be primary again with its replica linked, and for the
warm reader's hit ratio to reach ``WARM_HIT_RATIO`` again: the stated level,
which must be reached within ``WARM_WITHIN_S`` of the restart.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import threading
import time
from collections.abc import Hashable
from typing import Any

from backbone.bars import Bar
from backbone.cache.redis import RedisCache
from backbone.job_logins import harness_section
from backbone.settings import RedisConnectionSettings, TimescaleConnectionSettings
from backbone.store.timescale import TimescaleStore
from backbone_harness.drills.base import wait_redis_roles, wait_until
from backbone_harness.drills.faults import NodeGroupFault, join_nodes
from backbone_harness.drills.redis_primary import TIMEFRAME, RedisPrimaryKillDrill
from backbone_harness.drills.writer import drill_bars

__all__ = ["WARM_HIT_RATIO", "WARM_WITHIN_S", "RedisFullOutageDrill"]

#: Fixed symbols the warm reader asks for (written once, before the fault).
WARM_SYMBOLS = 20
#: The stated warm-up: hit ratio at least this ...
WARM_HIT_RATIO = 0.9
#: ... within this many seconds of the restart of the last Redis node.
WARM_WITHIN_S = 30.0
#: Hit ratio is measured over windows of this many seconds.
WINDOW_S = 1.0


class RedisFullOutageDrill(RedisPrimaryKillDrill):
    name = "redis-full-outage"
    summary = (
        "stop every Redis server and Sentinel: reads from the store never fail, writes "
        f"continue, and the cache is back above {WARM_HIT_RATIO:.0%} hits within "
        f"{WARM_WITHIN_S:.0f}s"
    )
    fault = NodeGroupFault(role="every Redis server and every Sentinel", kind="stop")
    #: Seconds writes may stop (writes go to the store and Kafka, not through
    #: Redis: they should not stop).
    max_unavailable_s: float | None = 5.0

    def __init__(self, stack: Any) -> None:
        super().__init__(stack)
        self.warm_symbols = [f"DW{secrets.token_hex(2).upper()}{i}" for i in range(WARM_SYMBOLS)]
        self.warm_cache: RedisCache | None = None
        self._warm_lock = threading.Lock()
        self.original_primary = ""

    def target(self) -> str:
        self.original_primary = self.stack.redis_primary()
        names = self.stack.node_names()
        sentinels = sorted(n for n in names if n.startswith("sentinel-"))
        replicas = sorted(n for n in names if n.startswith("redis-") and n != self.original_primary)
        # Sentinels first (no failover starts), the primary last (its replicas
        # stop while it still serves); undone in the reverse order.
        return join_nodes([*sentinels, *replicas, self.original_primary])

    def prepare(self) -> None:
        super().prepare()
        # It fills on a miss: the consumer's Redis login (see the parent's cache).
        self.warm_cache = RedisCache(
            RedisConnectionSettings.from_section(harness_section(self.doc, "cache")),
            namespace=f"backbone-drill-warm-{secrets.token_hex(3)}",
            heartbeat_interval=0.5,
            retries=1,
            retry_backoff=0.1,
        )
        bars = drill_bars(self.warm_symbols, TIMEFRAME)
        reference: list[Bar] = [next(bars) for _ in range(len(self.warm_symbols) * 5)]
        # Straight into the store: the warm reader needs them stored, not streamed
        # (the drill's consumer starts at "latest" and may join after they were sent).
        # The drill's own store reads with the reader's login; this one writes, as
        # the consumer, and is closed once they are in.
        with TimescaleStore(
            TimescaleConnectionSettings.from_section(
                harness_section(self.doc, "store"), pool_max_size=1
            ),
            timeout=10.0,
        ) as seeding:
            seeding.write(reference)
        self._warm_reads()  # fill the cache before the fault: the warm baseline

    def _warm_reads(self) -> None:
        cache, store = self.warm_cache, self.store
        assert cache is not None and store is not None
        with self._warm_lock:  # one pass at a time: the window counts stay whole
            for symbol in self.warm_symbols:
                try:
                    got = cache.get_latest(
                        symbol, TIMEFRAME, functools.partial(store.latest, symbol, TIMEFRAME)
                    )
                except Exception as exc:
                    self.read_failures += 1
                    self.problems.append(f"a warm read raised {type(exc).__name__}: {exc!s:.120}")
                    continue
                self.reads += 1
                if got is None:
                    self.problems.append(f"a read of {symbol} found nothing; it was stored")

    def probe(self) -> None:
        super().probe()
        self._warm_reads()

    def _hit_ratio_over(self, seconds: float) -> float:
        cache = self.warm_cache
        assert cache is not None
        before = cache.stats()
        time.sleep(seconds)
        after = cache.stats()
        reads = after.reads - before.reads
        return (after.hits - before.hits) / reads if reads else 0.0

    def during_fault(self, node: str) -> None:
        cache = self.warm_cache
        assert cache is not None
        self.figures["cache_marked_down_after_s"] = round(
            wait_until(lambda: not cache.available, 30, "the cache to notice Redis is gone"), 2
        )
        self.figures["hit_ratio_during_outage"] = round(self._hit_ratio_over(WINDOW_S), 3)

    def inject(self, node: str) -> None:
        self.figures["hit_ratio_before_fault"] = round(self._hit_ratio_over(WINDOW_S), 3)
        super().inject(node)

    def recover(self, node: str) -> None:
        began = time.monotonic()
        self.fault.undo(self.stack, node)
        restarted = time.monotonic()
        self.figures["restart_all_redis_s"] = round(restarted - began, 2)
        primary = self.original_primary
        wait_redis_roles(self.stack, primary)
        self.figures["roles_as_found_after_s"] = round(time.monotonic() - restarted, 2)
        cache = self.warm_cache
        assert cache is not None
        wait_until(lambda: cache.available, 30, "the cache to notice Redis is back")
        self.figures["cache_available_after_s"] = round(time.monotonic() - restarted, 2)
        ratio = 0.0
        while time.monotonic() - restarted < WARM_WITHIN_S:
            ratio = self._hit_ratio_over(WINDOW_S)
            if ratio >= WARM_HIT_RATIO:
                break
        warm_s = round(time.monotonic() - restarted, 2)
        self.figures.update(
            warm_hit_ratio_target=WARM_HIT_RATIO,
            warm_within_s_target=WARM_WITHIN_S,
            warm_hit_ratio_reached=round(ratio, 3),
            warm_after_restart_s=warm_s,
        )
        if ratio < WARM_HIT_RATIO:
            self.problems.append(
                f"the cache hit ratio was {ratio:.0%} {WARM_WITHIN_S:.0f}s after the restart "
                f"(stated: at least {WARM_HIT_RATIO:.0%})"
            )

    def found_keys(self, acknowledged: list[Any]) -> list[Hashable]:
        found = super().found_keys(acknowledged)
        stats = self.warm_cache.stats() if self.warm_cache else None
        if stats is not None:
            self.figures["warm_reads_served_by_store_fallback"] = stats.fallbacks
        return found

    def close(self) -> None:
        if self.warm_cache is not None:
            with contextlib.suppress(Exception):
                self.warm_cache.close()
        super().close()
