"""Bar caches: :class:`MemoryCache` (Tier 0) and :class:`RedisCache` (Tier 1), one interface."""

from __future__ import annotations

from backbone.cache.degradable import CacheState, DegradableCache
from backbone.cache.memory import MemoryCache
from backbone.cache.policy import CachePolicy
from backbone.cache.protocol import BarCache, CacheStats
from backbone.cache.redis import CacheUnavailableError, RedisCache
from backbone.cache.telemetry import CACHE_STATS_TOPIC, CacheTelemetry

__all__ = [
    "CACHE_STATS_TOPIC",
    "BarCache",
    "CachePolicy",
    "CacheState",
    "CacheStats",
    "CacheTelemetry",
    "CacheUnavailableError",
    "DegradableCache",
    "MemoryCache",
    "RedisCache",
]
