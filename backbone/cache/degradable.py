"""``DegradableCache``: the Tier 1 cache that may start, and run, without Redis.

The cache is an accelerator, not a dependency of ingest (``backbone.tiers``:
Redis is *degradable*). When Redis does not answer at start, the runtime opens
this class *detached* — **cache-degraded mode**:

* reads go straight to the loader (the store), counted as misses and fallbacks;
* writes skip cache population, and ``on_new_bars`` skips invalidation (the
  pairs are remembered, so the attach below can drop what they touched);
* a daemon probe tries to open a :class:`RedisCache` every ``probe_interval``
  seconds. When Redis answers, it **flushes the namespace** (every key under
  ``{namespace}:``), warms the policy's hot symbols from the store, drops the
  pairs ingested while it warmed, and only then attaches.

Why flush rather than versioned keys: entries that were in Redis before the
outage (written by this process's predecessor, or kept on disk by Redis) may
predate bars stored while nobody could invalidate them. Flushing the namespace
drops them all in one step and keeps the key scheme unchanged (other readers
of the namespace keep working); the cost is a cold cache, which the warm-up of
the hot symbols offsets. Versioned keys would leave the old generation to
expire by TTL and need every reader to agree on the generation.

Once attached, a Redis that dies mid-run is :class:`RedisCache`'s business (its
heartbeat falls back to the store and replays invalidations on recovery); this
class reports that as degraded too, so status, metrics and the health payload
say the same thing in both cases.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from backbone.bars import Bar
from backbone.cache.policy import CachePolicy
from backbone.cache.protocol import Backing, CacheStats, LatestLoader, RangeLoader
from backbone.cache.redis import RedisCache
from backbone.cache.telemetry import CacheTelemetry
from backbone.telemetry import Telemetry

__all__ = ["CacheState", "DegradableCache"]

_log = logging.getLogger(__name__)

#: Opens a :class:`RedisCache` (raises when Redis does not answer).
Connect = Callable[[], RedisCache]
#: Reads the latest stored bar of a pair, for the warm-up.
WarmLoader = Callable[[str, str], Bar | None]


@dataclass(frozen=True)
class CacheState:
    """Whether the cache serves, and since when and why not."""

    degraded: bool
    #: Unix seconds when the cache became degraded; ``None`` when attached.
    since: float | None
    reason: str | None
    #: Times the probe re-attached Redis; entries flushed and warmed at the last one.
    reattachments: int
    flushed_keys: int
    warmed_entries: int

    @property
    def label(self) -> str:
        """``attached`` or ``degraded (since …, reason …)``, as ``backbone status`` shows it."""
        if not self.degraded:
            return "attached"
        since = (
            datetime.fromtimestamp(self.since, UTC).isoformat(timespec="seconds")
            if self.since is not None
            else "?"
        )
        return f"degraded (since {since}, reason {self.reason})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": "degraded" if self.degraded else "attached",
            "degraded_since": None
            if self.since is None
            else datetime.fromtimestamp(self.since, UTC).isoformat(timespec="seconds"),
            "degraded_reason": self.reason,
            "reattachments": self.reattachments,
            "flushed_keys_at_attach": self.flushed_keys,
            "warmed_entries_at_attach": self.warmed_entries,
        }


class DegradableCache:
    """A :class:`~backbone.cache.BarCache` over Redis that serves from the store while detached."""

    backing: Backing = "redis"

    def __init__(
        self,
        connect: Connect,
        *,
        policy: CachePolicy | None = None,
        namespace: str = "backbone",
        telemetry: Telemetry | None = None,
        warm: WarmLoader | None = None,
        probe_interval: float = 2.0,
        endpoint: str = "redis",
        reason: str | None = None,
    ) -> None:
        """Attach at once unless ``reason`` (a failed validation) says Redis is down."""
        self.policy = policy or CachePolicy()
        self.namespace = namespace
        self.endpoint = endpoint
        self._connect = connect
        self._warm = warm
        self._probe_interval = probe_interval
        # Reads while detached; RedisCache counts its own once attached.
        self._counters = CacheTelemetry(namespace, "redis", telemetry=telemetry)
        self._lock = threading.Lock()
        self._inner: RedisCache | None = None
        self._missed: set[tuple[str, str]] = set()
        self._since: float | None = None
        self._reason: str | None = None
        self._reattachments = 0
        self._flushed = 0
        self._warmed = 0
        self._stop = threading.Event()
        self._probe: threading.Thread | None = None
        if telemetry is not None:
            telemetry.cache_degraded(namespace, lambda: 1.0 if self.state().degraded else 0.0)
        if reason is None:
            try:
                self._inner = connect()
            except Exception as exc:
                reason = _describe(exc)
        if self._inner is None:
            self._detach(reason or "Redis did not answer")

    # --- BarCache ---------------------------------------------------------------
    def get_latest(self, symbol: str, timeframe: str, loader: LatestLoader) -> Bar | None:
        inner = self._inner
        if inner is not None:
            return inner.get_latest(symbol, timeframe, loader)
        self._counters.miss(fallback=True)
        return loader()

    def get_range(
        self, symbol: str, timeframe: str, start: datetime, end: datetime, loader: RangeLoader
    ) -> list[Bar]:
        inner = self._inner
        if inner is not None:
            return inner.get_range(symbol, timeframe, start, end, loader)
        self._counters.miss(fallback=True)
        return list(loader())

    def on_new_bars(self, bars: Iterable[Bar]) -> int:
        # Under the lock: the probe swaps the inner cache in under it too, so a
        # pair is either remembered for the attach or invalidated in Redis.
        with self._lock:
            inner = self._inner
            if inner is None:
                self._missed |= {(b.symbol, b.timeframe) for b in bars}
                return 0
        return inner.on_new_bars(bars)

    def stats(self) -> CacheStats:
        own = self._counters.snapshot(0)
        inner = self._inner
        if inner is None:
            return own
        theirs = inner.stats()
        return CacheStats(
            namespace=self.namespace,
            backing="redis",
            hits=theirs.hits + own.hits,
            misses=theirs.misses + own.misses,
            evictions=theirs.evictions,
            fallbacks=theirs.fallbacks + own.fallbacks,
            size=theirs.size,
        )

    def close(self) -> None:
        self._stop.set()
        if self._probe is not None:
            self._probe.join(timeout=30)
        with self._lock:
            inner, self._inner = self._inner, None
        if inner is not None:
            inner.close()

    # --- state ------------------------------------------------------------------
    @property
    def attached(self) -> bool:
        """Whether a Redis client is attached (it may still be failing over)."""
        return self._inner is not None

    @property
    def redis(self) -> RedisCache | None:
        """The attached Redis cache, if any."""
        return self._inner

    def state(self) -> CacheState:
        """Degraded when detached, or attached to a Redis that does not answer now."""
        inner = self._inner
        since: float | None
        reason: str | None
        if inner is not None and not inner.available:
            since = inner.unavailable_since
            degraded, reason = True, f"Redis at {self.endpoint} stopped answering mid-run"
        else:
            since, reason = self._since, self._reason
            degraded = inner is None
        return CacheState(
            degraded=degraded,
            since=since if degraded else None,
            reason=reason if degraded else None,
            reattachments=self._reattachments,
            flushed_keys=self._flushed,
            warmed_entries=self._warmed,
        )

    def attach_now(self) -> bool:
        """Try to attach once (what the probe does); ``True`` when attached."""
        if self._inner is not None:
            return True
        try:
            inner = self._connect()
        except Exception as exc:
            _log.debug("cache probe: %s", _describe(exc))
            return False
        with self._lock:
            # The flush below drops every entry the pairs missed so far could touch;
            # from here on, missed pairs are those the warm-up may have raced.
            self._missed = set()
        try:
            if inner.fills:
                flushed = inner.flush_namespace()
                warmed = self._warm_up(inner)
            else:
                # A login that may only read (the reader job's) can neither delete
                # nor write entries: the filling processes' own re-attach flushes
                # stale ones; this one attaches and reads.
                flushed = warmed = 0
        except Exception as exc:  # Redis went again mid-attach: stay detached
            _log.info("cache attach broke off (%s); probing again", _describe(exc))
            inner.close()
            return False
        with self._lock:
            missed, self._missed = self._missed, set()
            # Pairs ingested since the flush began may have been warmed with older bars.
            if missed:
                inner.invalidate_pairs(missed)
            self._inner = inner
        down_for = time.time() - (self._since or time.time())
        self._reattachments += 1
        self._flushed, self._warmed = flushed, warmed
        self._since = self._reason = None
        _log.warning(
            "cache re-attached: Redis at %s answers again after %.1fs; flushed %d keys of "
            "namespace %r (no stale bars), warmed %d hot entries",
            self.endpoint,
            down_for,
            flushed,
            self.namespace,
            warmed,
        )
        return True

    # --- internals --------------------------------------------------------------
    def _detach(self, reason: str) -> None:
        self._since, self._reason = time.time(), reason
        _log.warning(
            "cache-degraded: Redis at %s is unreachable (%s); ingest continues, reads go "
            "to the store, a probe re-attaches the cache every %gs (pass --require-cache "
            "to refuse instead)",
            self.endpoint,
            reason,
            self._probe_interval,
        )
        self._probe = threading.Thread(
            target=self._run_probe, name=f"cache-probe[{self.namespace}]", daemon=True
        )
        self._probe.start()

    def _run_probe(self) -> None:
        while not self._stop.wait(self._probe_interval):
            if self.attach_now():
                return

    def _warm_up(self, inner: RedisCache) -> int:
        """Load the latest bar of every hot symbol x warm timeframe into Redis."""
        if self._warm is None:
            return 0
        warm = self._warm
        warmed = 0
        for symbol in sorted(self.policy.hot_symbols):
            for timeframe in self.policy.warm_timeframes:
                got = inner.get_latest(
                    symbol, timeframe, functools.partial(warm, symbol, timeframe)
                )
                warmed += got is not None
        return warmed


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
