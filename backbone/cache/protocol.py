"""The one interface both bar caches implement, and what they report."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from backbone.bars import Bar

__all__ = ["Backing", "BarCache", "CacheStats", "LatestLoader", "RangeLoader"]

Backing = Literal["redis", "memory"]
#: Reads the latest bar of a pair from the store (the cache's source of truth).
LatestLoader = Callable[[], Bar | None]
#: Reads the bars of a pair in a time range from the store.
RangeLoader = Callable[[], Sequence[Bar]]


@dataclass(frozen=True)
class CacheStats:
    """Counters since the cache started; ``hits + misses`` is every read."""

    namespace: str
    backing: Backing
    hits: int
    misses: int
    evictions: int
    #: Reads answered by the loader because the backing was unreachable (also misses).
    fallbacks: int
    #: Entries held now (Redis: entries in the namespace's access index).
    size: int

    @property
    def reads(self) -> int:
        return self.hits + self.misses

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.reads if self.reads else 0.0


@runtime_checkable
class BarCache(Protocol):
    """Read-through cache of bars in front of a store; Tier 0 and Tier 1 alike."""

    namespace: str
    backing: Backing

    def get_latest(self, symbol: str, timeframe: str, loader: LatestLoader) -> Bar | None:
        """The latest bar of a pair: cached, else ``loader()`` (then cached when not ``None``)."""
        ...

    def get_range(
        self, symbol: str, timeframe: str, start: datetime, end: datetime, loader: RangeLoader
    ) -> list[Bar]:
        """Bars with ``start <= ts < end``: cached, else ``loader()`` (then cached)."""
        ...

    def on_new_bars(self, bars: Iterable[Bar]) -> int:
        """Invalidation hook: drop every entry of the bars' pairs; returns entries dropped."""
        ...

    def stats(self) -> CacheStats:
        """Counters and size now."""
        ...

    def close(self) -> None:
        """Stop background work and release connections (idempotent)."""
        ...
