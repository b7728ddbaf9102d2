"""MemoryCache: the Tier 0 cache obeys the cache policy (TTL, max keys, invalidation)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from backbone.bars import Bar
from backbone.bus import EventBus
from backbone.cache import CACHE_STATS_TOPIC, BarCache, CachePolicy, MemoryCache
from backbone.telemetry import Telemetry

T0 = datetime(2024, 1, 2, tzinfo=UTC)


def bar(symbol: str, minute: int = 0, timeframe: str = "1m", close: float = 1.1) -> Bar:
    return Bar(symbol, timeframe, T0 + timedelta(minutes=minute), 1.0, 2.0, 0.5, close, 10.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Store:
    """The loader's source of truth: latest bar per symbol, with a call counter."""

    def __init__(self) -> None:
        self.latest: dict[str, Bar] = {}
        self.loads = 0

    def loader(self, symbol: str):  # type: ignore[no-untyped-def]
        def load() -> Bar | None:
            self.loads += 1
            return self.latest.get(symbol)

        return load


def test_memory_cache_is_a_bar_cache() -> None:
    assert isinstance(MemoryCache(), BarCache)


def test_second_read_is_a_hit_and_does_not_touch_the_store() -> None:
    store = Store()
    store.latest["EURUSD"] = bar("EURUSD")
    cache = MemoryCache()
    assert cache.get_latest("EURUSD", "1m", store.loader("EURUSD")) == bar("EURUSD")
    assert cache.get_latest("EURUSD", "1m", store.loader("EURUSD")) == bar("EURUSD")
    stats = cache.stats()
    assert (stats.hits, stats.misses, store.loads) == (1, 1, 1)
    assert stats.hit_ratio == 0.5


def test_a_missing_bar_is_not_cached() -> None:
    store = Store()
    cache = MemoryCache()
    assert cache.get_latest("GBPUSD", "1m", store.loader("GBPUSD")) is None
    assert cache.get_latest("GBPUSD", "1m", store.loader("GBPUSD")) is None
    assert store.loads == 2 and cache.stats().size == 0


def test_entries_expire_after_the_ttl_on_the_injected_clock() -> None:
    clock = Clock()
    store = Store()
    store.latest["EURUSD"] = bar("EURUSD")
    cache = MemoryCache(CachePolicy(ttl_seconds=10), clock=clock)
    cache.get_latest("EURUSD", "1m", store.loader("EURUSD"))
    clock.now = 9.999
    cache.get_latest("EURUSD", "1m", store.loader("EURUSD"))
    assert store.loads == 1
    clock.now = 10.0
    cache.get_latest("EURUSD", "1m", store.loader("EURUSD"))
    assert store.loads == 2
    assert cache.stats().evictions == 0  # expiry is not an eviction


def test_hot_symbols_live_longer() -> None:
    clock = Clock()
    store = Store()
    store.latest = {"EURUSD": bar("EURUSD"), "NZDCHF": bar("NZDCHF")}
    policy = CachePolicy(ttl_seconds=5, hot_symbols=frozenset({"EURUSD"}), hot_ttl_seconds=60)
    cache = MemoryCache(policy, clock=clock)
    for s in ("EURUSD", "NZDCHF"):
        cache.get_latest(s, "1m", store.loader(s))
    clock.now = 30
    for s in ("EURUSD", "NZDCHF"):
        cache.get_latest(s, "1m", store.loader(s))
    assert store.loads == 3  # only the cold symbol was reloaded


def test_the_least_recently_used_entry_is_evicted_and_counted() -> None:
    store = Store()
    store.latest = {s: bar(s) for s in ("A", "B", "C", "D")}
    t = Telemetry()
    cache = MemoryCache(CachePolicy(max_keys=3), namespace="ns", telemetry=t)
    for s in ("A", "B", "C"):
        cache.get_latest(s, "1m", store.loader(s))
    cache.get_latest("A", "1m", store.loader("A"))  # A is now the most recent
    cache.get_latest("D", "1m", store.loader("D"))  # evicts B
    loads = store.loads
    cache.get_latest("A", "1m", store.loader("A"))
    assert store.loads == loads
    cache.get_latest("B", "1m", store.loader("B"))
    assert store.loads == loads + 1
    assert cache.stats().evictions == 2 and cache.stats().size == 3
    assert t.value("backbone_cache_evictions_total", namespace="ns", backing="memory") == 2


def test_new_bars_invalidate_latest_and_ranges_of_their_pair_only() -> None:
    store = Store()
    store.latest = {"A": bar("A"), "B": bar("B")}
    cache = MemoryCache()
    cache.get_latest("A", "1m", store.loader("A"))
    cache.get_latest("B", "1m", store.loader("B"))
    window = (T0, T0 + timedelta(hours=1))
    cache.get_range("A", "1m", *window, lambda: [bar("A", 0), bar("A", 1)])
    assert cache.on_new_bars([bar("A", 2), bar("A", 3)]) == 2
    loads = store.loads
    cache.get_latest("B", "1m", store.loader("B"))
    assert store.loads == loads
    cache.get_latest("A", "1m", store.loader("A"))
    assert store.loads == loads + 1
    assert cache.get_range("A", "1m", *window, lambda: [bar("A", 9)]) == [bar("A", 9)]


def test_range_reads_are_cached_per_window() -> None:
    cache = MemoryCache()
    calls: list[int] = []

    def load() -> list[Bar]:
        calls.append(1)
        return [bar("A", 0), bar("A", 1)]

    w1 = (T0, T0 + timedelta(minutes=2))
    w2 = (T0, T0 + timedelta(minutes=3))
    assert cache.get_range("A", "1m", *w1, load) == [bar("A", 0), bar("A", 1)]
    assert cache.get_range("A", "1m", *w1, load) == [bar("A", 0), bar("A", 1)]
    cache.get_range("A", "1m", *w2, load)
    assert len(calls) == 2


def test_stats_are_published_on_the_bus() -> None:
    bus = EventBus()
    events: list[dict[str, object]] = []
    bus.subscribe(CACHE_STATS_TOPIC, events.append)
    cache = MemoryCache(namespace="q", bus=bus, publish_every=2)
    cache.get_latest("A", "1m", lambda: bar("A"))
    cache.get_latest("A", "1m", lambda: bar("A"))
    assert events and events[-1]["hits"] == 1 and events[-1]["misses"] == 1
    cache.close()
    assert events[-1]["backing"] == "memory" and events[-1]["namespace"] == "q"


operations = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.sampled_from("ABCDEFGH"), st.sampled_from(["1m", "1d"])),
        st.tuples(st.just("ingest"), st.sampled_from("ABCDEFGH"), st.sampled_from(["1m", "1d"])),
        st.tuples(st.just("tick"), st.floats(min_value=0, max_value=20), st.just("")),
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(ops=operations, max_keys=st.integers(min_value=1, max_value=6))
def test_any_sequence_of_operations_keeps_the_policy(
    ops: list[tuple[str, object, str]], max_keys: int
) -> None:
    clock = Clock()
    cache = MemoryCache(CachePolicy(max_keys=max_keys, ttl_seconds=30), clock=clock)
    truth: dict[tuple[str, str], Bar] = {}
    reads = loads = 0
    version = 0
    for kind, arg, timeframe in ops:
        if kind == "tick":
            assert isinstance(arg, float)
            clock.now += arg
        elif kind == "ingest":
            version += 1
            new = bar(str(arg), version, timeframe, close=1.0 + version / 1000)
            truth[(str(arg), timeframe)] = new
            cache.on_new_bars([new])
        else:
            reads += 1
            key = (str(arg), timeframe)

            def load(key: tuple[str, str] = key) -> Bar | None:
                nonlocal loads
                loads += 1
                return truth.get(key)

            # Never stale: a read after ingest returns what the store holds now.
            assert cache.get_latest(key[0], key[1], load) == truth.get(key)
        stats = cache.stats()
        assert stats.size <= max_keys
    stats = cache.stats()
    assert stats.hits + stats.misses == reads
    assert stats.misses == loads
