"""Cache counters, published as Prometheus metrics and as events on the bus.

Every read updates the Prometheus counters at once. The bus gets a snapshot
event on :data:`CACHE_STATS_TOPIC` every ``publish_every`` reads, after
evictions, when Redis answers again after an outage, and on ``close()``, so
subscribers see the counters without one event per read.
"""

from __future__ import annotations

import threading
from dataclasses import asdict
from typing import Any

from backbone.bus import EventBus
from backbone.cache.protocol import Backing, CacheStats
from backbone.telemetry import CacheMeters, Telemetry

__all__ = ["CACHE_STATS_TOPIC", "CacheTelemetry"]

#: Topic of the cache-stats events on the in-process bus.
CACHE_STATS_TOPIC = "telemetry.cache"


class CacheTelemetry:
    """Thread-safe counters of one cache, mirrored to Prometheus and the bus."""

    def __init__(
        self,
        namespace: str,
        backing: Backing,
        *,
        telemetry: Telemetry | None = None,
        bus: EventBus | None = None,
        publish_every: int = 100,
    ) -> None:
        if publish_every < 1:
            raise ValueError("publish_every must be at least 1")
        self.namespace = namespace
        self.backing: Backing = backing
        self._meters: CacheMeters | None = None
        self._bus = bus
        self._publish_every = publish_every
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._fallbacks = 0
        if telemetry is not None:
            self._meters = telemetry.cache_meters(namespace, backing, hit_ratio=self._ratio)

    def hit(self) -> bool:
        """Count one read answered by the cache; ``True`` when a stats event is due."""
        with self._lock:
            self._hits += 1
        if self._meters is not None:
            self._meters.hit(1)
        return self._after_read()

    def miss(self, *, fallback: bool = False) -> bool:
        """Count one read answered by the loader (``fallback``: the backing was down).

        Returns ``True`` when a stats event is due: the cache then calls :meth:`publish`.
        """
        with self._lock:
            self._misses += 1
            if fallback:
                self._fallbacks += 1
        if self._meters is not None:
            self._meters.miss(1)
            if fallback:
                self._meters.fallback(1)
        return self._after_read()

    def evicted(self, count: int) -> None:
        """Count entries evicted for max keys."""
        if count <= 0:
            return
        with self._lock:
            self._evictions += count
        if self._meters is not None:
            self._meters.evicted(count)

    def snapshot(self, size: int) -> CacheStats:
        """The counters now, with the cache's current ``size``."""
        with self._lock:
            return CacheStats(
                namespace=self.namespace,
                backing=self.backing,
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                fallbacks=self._fallbacks,
                size=size,
            )

    def publish(self, stats: CacheStats) -> None:
        """Send ``stats`` to the bus as a dict with ``hit_ratio``."""
        if self._bus is not None:
            event: dict[str, Any] = {**asdict(stats), "hit_ratio": stats.hit_ratio}
            self._bus.publish(CACHE_STATS_TOPIC, event)

    def _ratio(self) -> float:
        with self._lock:
            reads = self._hits + self._misses
            return self._hits / reads if reads else 0.0

    def _after_read(self) -> bool:
        if self._bus is None:
            return False
        with self._lock:
            reads = self._hits + self._misses
        return reads % self._publish_every == 0
