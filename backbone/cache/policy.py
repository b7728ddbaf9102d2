"""What the bar cache keeps, for how long, and under which keys.

Both backings (Redis for Tier 1, memory for Tier 0) follow one policy:

* every entry expires ``ttl_seconds`` after it is written (``hot_ttl_seconds``
  for the symbols in ``hot_symbols``, which are read far more often);
* at most ``max_keys`` entries per namespace; beyond that the least recently
  used entries are evicted and counted;
* new bars for a (symbol, timeframe) invalidate every entry of that pair, so a
  read after ingest never returns a bar older than the store's.

Key scheme (one namespace per runtime, so stacks and tests never collide)::

    {namespace}:bar:{symbol}:{timeframe}:latest
    {namespace}:bar:{symbol}:{timeframe}:range:{start_ms}:{end_ms}
    {namespace}:tag:{symbol}:{timeframe}      (Redis: the pair's keys, for invalidation)
    {namespace}:lru                           (Redis: keys scored by last access, for max keys)
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CachePolicy"]


def _part(value: str) -> str:
    # ':' separates key parts; keep a symbol like "EUR:USD" from forging another pair's key.
    return value.replace("%", "%25").replace(":", "%3A")


class CachePolicy(BaseModel):
    """TTL, size bound and key scheme of the bar cache."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ttl_seconds: float = Field(default=300.0, gt=0)
    max_keys: int = Field(default=10_000, ge=1)
    hot_symbols: frozenset[str] = frozenset()
    hot_ttl_seconds: float | None = Field(default=None, gt=0)
    invalidate_on_new_bars: bool = True
    #: Timeframes of the hot symbols warmed when a detached cache re-attaches.
    warm_timeframes: tuple[str, ...] = ("1d", "1m")

    def ttl_for(self, symbol: str) -> float:
        """Seconds an entry for ``symbol`` lives."""
        if symbol in self.hot_symbols and self.hot_ttl_seconds is not None:
            return self.hot_ttl_seconds
        return self.ttl_seconds

    @property
    def longest_ttl(self) -> float:
        """The longest any entry lives (index entries older than this are dead)."""
        return max(self.ttl_seconds, self.hot_ttl_seconds or 0.0)

    @staticmethod
    def pair_prefix(namespace: str, symbol: str, timeframe: str) -> str:
        """The key prefix every entry of one (symbol, timeframe) shares."""
        return f"{namespace}:bar:{_part(symbol)}:{_part(timeframe)}:"

    def latest_key(self, namespace: str, symbol: str, timeframe: str) -> str:
        """Key of the latest bar of a pair."""
        return self.pair_prefix(namespace, symbol, timeframe) + "latest"

    def range_key(
        self, namespace: str, symbol: str, timeframe: str, start: datetime, end: datetime
    ) -> str:
        """Key of the bars of a pair with ``start <= ts < end``."""
        return (
            self.pair_prefix(namespace, symbol, timeframe)
            + f"range:{round(start.timestamp() * 1000)}:{round(end.timestamp() * 1000)}"
        )

    @staticmethod
    def tag_key(namespace: str, symbol: str, timeframe: str) -> str:
        """Redis set holding every cached key of a pair."""
        return f"{namespace}:tag:{_part(symbol)}:{_part(timeframe)}"

    @staticmethod
    def lru_key(namespace: str) -> str:
        """Redis sorted set of cached keys scored by last access (ms)."""
        return f"{namespace}:lru"
