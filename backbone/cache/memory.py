"""``MemoryCache``: the Tier 0 bar cache, in process, with the Redis cache's semantics.

Entries expire ``policy.ttl_for(symbol)`` seconds after they are written; beyond
``policy.max_keys`` the least recently used entry is evicted and counted; new
bars drop every entry of their (symbol, timeframe). Bars are stored as objects
(they are frozen), so a read costs a dict lookup.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from backbone.bars import Bar
from backbone.bus import EventBus
from backbone.cache.policy import CachePolicy
from backbone.cache.protocol import Backing, CacheStats, LatestLoader, RangeLoader
from backbone.cache.telemetry import CacheTelemetry
from backbone.telemetry import Telemetry

__all__ = ["MemoryCache"]


@dataclass(frozen=True, slots=True)
class _Entry:
    expires_at: float
    pair: tuple[str, str]
    value: Bar | tuple[Bar, ...]


class MemoryCache:
    """LRU + TTL bar cache in process memory; thread-safe. ``clock`` is monotonic seconds."""

    backing: Backing = "memory"

    def __init__(
        self,
        policy: CachePolicy | None = None,
        *,
        namespace: str = "backbone",
        telemetry: Telemetry | None = None,
        bus: EventBus | None = None,
        clock: Callable[[], float] = time.monotonic,
        publish_every: int = 100,
    ) -> None:
        self.policy = policy or CachePolicy()
        self.namespace = namespace
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._by_pair: dict[tuple[str, str], set[str]] = {}
        self._counters = CacheTelemetry(
            namespace, "memory", telemetry=telemetry, bus=bus, publish_every=publish_every
        )
        self._closed = False

    # --- BarCache -------------------------------------------------------------
    def get_latest(self, symbol: str, timeframe: str, loader: LatestLoader) -> Bar | None:
        key = self.policy.latest_key(self.namespace, symbol, timeframe)
        cached = self._get(key)
        if cached is not None:
            assert isinstance(cached, Bar)
            self._read_done(self._counters.hit())
            return cached
        self._read_done(self._counters.miss())
        bar = loader()
        if bar is not None:
            self._put(key, (symbol, timeframe), bar)
        return bar

    def get_range(
        self, symbol: str, timeframe: str, start: datetime, end: datetime, loader: RangeLoader
    ) -> list[Bar]:
        key = self.policy.range_key(self.namespace, symbol, timeframe, start, end)
        cached = self._get(key)
        if cached is not None:
            assert isinstance(cached, tuple)
            self._read_done(self._counters.hit())
            return list(cached)
        self._read_done(self._counters.miss())
        bars = tuple(loader())
        self._put(key, (symbol, timeframe), bars)
        return list(bars)

    def on_new_bars(self, bars: Iterable[Bar]) -> int:
        if not self.policy.invalidate_on_new_bars:
            return 0
        pairs = {(b.symbol, b.timeframe) for b in bars}
        dropped = 0
        with self._lock:
            for pair in pairs:
                for key in self._by_pair.pop(pair, set()):
                    if self._entries.pop(key, None) is not None:
                        dropped += 1
        return dropped

    def stats(self) -> CacheStats:
        with self._lock:
            size = len(self._entries)
        return self._counters.snapshot(size)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._counters.publish(self.stats())

    # --- internals ------------------------------------------------------------
    def _get(self, key: str) -> Bar | tuple[Bar, ...] | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.expires_at <= now:
                self._drop(key, entry)
                return None
            self._entries.move_to_end(key)
            return entry.value

    def _put(self, key: str, pair: tuple[str, str], value: Bar | tuple[Bar, ...]) -> None:
        expires_at = self._clock() + self.policy.ttl_for(pair[0])
        evicted = 0
        with self._lock:
            self._entries[key] = _Entry(expires_at, pair, value)
            self._entries.move_to_end(key)
            self._by_pair.setdefault(pair, set()).add(key)
            while len(self._entries) > self.policy.max_keys:
                old_key, old = self._entries.popitem(last=False)
                self._unindex(old_key, old)
                evicted += 1
        if evicted:
            self._counters.evicted(evicted)
            self._counters.publish(self.stats())

    def _drop(self, key: str, entry: _Entry) -> None:
        del self._entries[key]
        self._unindex(key, entry)

    def _unindex(self, key: str, entry: _Entry) -> None:
        keys = self._by_pair.get(entry.pair)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_pair[entry.pair]

    def _read_done(self, publish_due: bool) -> None:
        if publish_due:
            self._counters.publish(self.stats())
