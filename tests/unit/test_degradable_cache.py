"""``DegradableCache`` without any Redis: the detached half of cache-degraded mode.

The attach half (flush, warm-up, no stale read) needs a real Redis and lives in
``tests/integration/test_degraded_modes.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from backbone.bars import Bar
from backbone.cache import CachePolicy, DegradableCache, RedisCache
from backbone.telemetry import Telemetry

T0 = datetime(2024, 1, 2, tzinfo=UTC)


def bar(symbol: str, minute: int = 0) -> Bar:
    return Bar(symbol, "1m", T0 + timedelta(minutes=minute), 1.0, 2.0, 0.5, 1.5, 10.0)


def refused() -> RedisCache:
    raise ConnectionRefusedError("Redis at 127.0.0.1:9 refused the connection")


def detached(**kwargs: object) -> DegradableCache:
    return DegradableCache(refused, probe_interval=3600, endpoint="127.0.0.1:9", **kwargs)  # type: ignore[arg-type]


def test_a_redis_that_refuses_at_start_gives_a_detached_cache_that_says_why() -> None:
    telemetry = Telemetry()
    cache = detached(namespace="ns", telemetry=telemetry)
    try:
        state = cache.state()
        assert state.degraded and not cache.attached
        assert state.reason is not None and "refused the connection" in state.reason
        assert state.label.startswith("degraded (since ") and "refused" in state.label
        assert state.as_dict()["state"] == "degraded"
        assert telemetry.value("backbone_cache_degraded", namespace="ns") == 1.0
        assert not cache.attach_now()  # still refused: stays detached
        assert cache.state().degraded
    finally:
        cache.close()


def test_a_reason_from_validation_skips_the_first_connect() -> None:
    calls: list[int] = []

    def counting() -> RedisCache:
        calls.append(1)
        return refused()

    cache = DegradableCache(counting, probe_interval=3600, reason="PING timed out")
    try:
        assert calls == [] and cache.state().reason == "PING timed out"
    finally:
        cache.close()


@given(st.lists(st.sampled_from(["EURUSD", "GBPUSD", "A:B"]), min_size=1, max_size=20))
def test_while_detached_every_read_is_the_stores_answer_and_counted_as_a_fallback(
    symbols: list[str],
) -> None:
    cache = detached(policy=CachePolicy(hot_symbols=frozenset(symbols)))
    try:
        for i, symbol in enumerate(symbols):
            stored = bar(symbol, i)
            assert cache.get_latest(symbol, "1m", lambda b=stored: b) == stored
            assert cache.get_range(symbol, "1m", T0, T0, lambda b=stored: [b]) == [stored]
            assert cache.on_new_bars([stored]) == 0  # nothing to invalidate in Redis
        stats = cache.stats()
        assert stats.hits == 0
        assert stats.misses == stats.fallbacks == 2 * len(symbols)
    finally:
        cache.close()
