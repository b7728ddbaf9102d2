"""RedisCache and the tier toggle against real Redis processes of a local stack.

Uses the session fixtures of ``tests/conftest.py``: ``local_stack`` (standalone
Redis) and ``ha_stack`` (a primary, a replica and Sentinels). Every test works
in its own namespace, and a test that stops a node starts it again.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.sentinel import Sentinel

from backbone.bars import Bar, bar_to_dict
from backbone.bus import EventBus
from backbone.cache import CACHE_STATS_TOPIC, CachePolicy, RedisCache
from backbone.connections import ConnectionsDocument, write_document
from backbone.settings import RedisConnectionSettings, load_settings
from backbone.telemetry import Telemetry
from backbone.tiers import TierValidationError, switch_to_institutional, validate_institutional
from backbone_infra.render.redis import ADMIN_USER
from backbone_infra.targets.local.secrets import StackSecrets

pytestmark = pytest.mark.integration

T0 = datetime(2024, 3, 4, tzinfo=UTC)


def bar(symbol: str, minute: int = 0, close: float = 1.25) -> Bar:
    return Bar(symbol, "1m", T0 + timedelta(minutes=minute), 1.0, 2.0, 0.5, close, 100.0)


def redis_settings(document: ConnectionsDocument) -> RedisConnectionSettings:
    settings = load_settings(document)
    assert settings.redis is not None, "the stack's document has no redis section"
    return settings.redis


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def current_primary(cache: RedisCache) -> tuple[str, int] | None:
    """The primary Sentinel names now; ``None`` while the Sentinels have none (mid-failover)."""
    try:
        return cache.primary_address()
    except redis.ConnectionError:
        return None


def raw_client(stack: Any, address: tuple[str, int]) -> redis.Redis:
    """An admin client of one node: inspecting roles and flushing scripts are
    not the application user's job (its ACL refuses them). Over the stack's TLS."""
    section = stack.document.redis
    return redis.Redis(
        host=address[0],
        port=address[1],
        username=ADMIN_USER,
        password=StackSecrets.load(stack.dir).redis_admin_password,
        **RedisConnectionSettings.from_section(section).tls_kwargs(),
    )


def _stack(request: pytest.FixtureRequest, name: str) -> Any:
    try:
        return request.getfixturevalue(name)
    except pytest.FixtureLookupError:
        pytest.skip(f"tests/conftest.py does not provide the {name} fixture")


@pytest.fixture
def local(request: pytest.FixtureRequest) -> Any:
    """``local_stack`` from tests/conftest.py (a standalone Redis among the services)."""
    return _stack(request, "local_stack")


@pytest.fixture
def ha(request: pytest.FixtureRequest) -> Any:
    """``ha_stack`` from tests/conftest.py (primary, replica, Sentinels)."""
    return _stack(request, "ha_stack")


@pytest.fixture
def namespace() -> str:
    # Under the application user's key namespace (``backbone-*``, see infra.render.redis).
    return f"backbone-t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def open_cache(
    namespace: str,
) -> Iterator[Callable[..., RedisCache]]:
    caches: list[RedisCache] = []

    def make(document: ConnectionsDocument, **kwargs: Any) -> RedisCache:
        kwargs.setdefault("namespace", namespace)
        cache = RedisCache(redis_settings(document), **kwargs)
        caches.append(cache)
        return cache

    yield make
    for cache in caches:
        cache.close()
    beating = [t.name for t in threading.enumerate() if t.name.startswith("redis-cache-heartbeat")]
    assert not [n for n in beating if namespace in n], "close() must join the heartbeat thread"


def test_ttl_expiry_and_eviction_metrics_on_real_redis(
    local: Any, open_cache: Callable[..., RedisCache], namespace: str
) -> None:
    telemetry = Telemetry()
    bus = EventBus()
    events: list[dict[str, Any]] = []
    bus.subscribe(CACHE_STATS_TOPIC, events.append)
    cache = open_cache(
        local.document,
        policy=CachePolicy(ttl_seconds=1, max_keys=3),
        telemetry=telemetry,
        bus=bus,
    )
    for symbol in ("A", "B", "C", "D", "E"):
        cache.get_latest(symbol, "1m", lambda s=symbol: bar(s))
    labels = {"namespace": namespace, "backing": "redis"}
    assert telemetry.value("backbone_cache_evictions_total", **labels) == 2
    assert telemetry.value("backbone_cache_misses_total", **labels) == 5
    assert events[-1]["backing"] == "redis" and events[-1]["evictions"] == 2
    assert events[-1]["size"] == 3
    client = raw_client(local, cache.primary_address())
    try:
        stored = list(client.scan_iter(match=f"{namespace}:bar:*", count=1000))
        assert len(stored) == 3
        ttl_ms = client.pttl(cache.policy.latest_key(namespace, "E", "1m"))
        assert 0 < ttl_ms <= 1000
        # The least recently used (A, B) went; E is a hit.
        assert cache.get_latest("E", "1m", lambda: None) == bar("E")
        assert telemetry.value("backbone_cache_hits_total", **labels) == 1
        time.sleep(1.2)
        assert client.exists(cache.policy.latest_key(namespace, "E", "1m")) == 0
        loads: list[str] = []
        cache.get_latest("E", "1m", lambda: loads.append("E") or bar("E"))  # type: ignore[func-returns-value]
        assert loads == ["E"]
        assert telemetry.value("backbone_cache_evictions_total", **labels) == 2
        assert telemetry.value("backbone_cache_hit_ratio", **labels) == pytest.approx(1 / 7)
    finally:
        client.close()


_CHILD = """
import json, sys
from backbone.bars import Bar, bar_from_dict
from backbone.cache import RedisCache
from backbone.outputs import load_connections
from backbone.settings import load_settings

mode, namespace, bar_json = sys.argv[1], sys.argv[2], sys.argv[3]
wanted = bar_from_dict(json.loads(bar_json))
settings = load_settings(load_connections())
cache = RedisCache(settings.redis, namespace=namespace)

def loader():
    if mode == "read":
        raise SystemExit("the reader had to ask the store: the cache lost the entry")
    return wanted

got = cache.get_latest(wanted.symbol, wanted.timeframe, loader)
assert got == wanted, got
stats = cache.stats()
cache.close()
print(json.dumps({"hits": stats.hits, "misses": stats.misses}))
"""


def test_state_survives_a_client_process_restart(
    local: Any, namespace: str, tmp_path: Path
) -> None:
    outputs = write_document(local.document, tmp_path / "outputs.json")
    env = {"BACKBONE_OUTPUTS": str(outputs), "PATH": "/usr/bin:/bin"}
    root = Path(__file__).parents[2]
    payload = json.dumps(bar_to_dict(bar("EURUSD")))

    def child(mode: str) -> dict[str, int]:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, mode, namespace, payload],
            cwd=root, env={**env, "PYTHONPATH": str(root)}, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    assert child("write") == {"hits": 0, "misses": 1}
    assert child("read") == {"hits": 1, "misses": 0}


def test_reads_fall_back_to_the_store_while_redis_is_down_and_warm_up_after(
    local: Any, open_cache: Callable[..., RedisCache]
) -> None:
    store = {"EURUSD": bar("EURUSD", 0, close=1.25)}
    loads: list[str] = []

    def load() -> Bar:
        loads.append("EURUSD")
        return store["EURUSD"]

    cache = open_cache(local.document, heartbeat_interval=0.2, retries=1)
    cache.get_latest("EURUSD", "1m", load)
    assert cache.get_latest("EURUSD", "1m", load) == store["EURUSD"] and len(loads) == 1

    node = local.redis_primary()
    local.kill_node(node)
    try:
        for _ in range(5):
            assert cache.get_latest("EURUSD", "1m", load) == store["EURUSD"]
        assert not cache.available
        assert cache.stats().fallbacks == 5 and len(loads) == 6
        # New bars while Redis is down: the invalidation waits for Redis to return.
        store["EURUSD"] = bar("EURUSD", 1, close=1.5)
        cache.on_new_bars([store["EURUSD"]])
    finally:
        local.restart_node(node)
    wait_for(lambda: cache.available, 30, "the heartbeat to see Redis again")
    hits_before = cache.stats().hits
    # Never the bar from before the outage, even if Redis kept it on disk.
    assert cache.get_latest("EURUSD", "1m", load) == store["EURUSD"]
    assert cache.get_latest("EURUSD", "1m", load) == store["EURUSD"]
    assert cache.stats().hits == hits_before + 1  # warmed up again


def test_threads_sharing_one_cache_never_see_a_read_fail_while_redis_goes_away(
    local: Any, open_cache: Callable[..., RedisCache]
) -> None:
    # One runtime's cache, read by many threads (a trading process, or the load
    # test's users): a failed command once closed every pooled socket, under the
    # other threads' commands in flight, and those raised past the fallback.
    cache = open_cache(local.document, heartbeat_interval=0.2, retries=1)
    expected = bar("NZDUSD", 0)
    done: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                got = cache.get_latest("NZDUSD", "1m", lambda: expected)
            except Exception as exc:  # the point: no read may raise
                errors.append(f"{type(exc).__name__}: {exc}")
            else:
                done.append(1) if got == expected else errors.append(f"read {got}")

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    node = local.redis_primary()
    try:
        wait_for(lambda: len(done) > 200, 30, "reads through the cache before the fault")
        local.kill_node(node)
        wait_for(lambda: not cache.available, 30, "the cache to notice Redis is gone")
    finally:
        local.restart_node(node)
    try:
        wait_for(lambda: cache.available, 30, "the heartbeat to see Redis again")
        served = len(done)
        wait_for(lambda: len(done) > served + 200, 30, "reads after Redis is back")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert errors == [], errors[:5]


def test_tier_toggle_with_redis_paused_degrades_and_refuses_only_with_require_cache(
    local: Any,
) -> None:
    doc = local.document
    settings = load_settings(doc)
    assert settings.redis is not None
    node = local.redis_primary()
    local.pause_node(node)
    try:
        degraded = switch_to_institutional(doc, settings, timeout=1.0)
        with pytest.raises(TierValidationError) as caught:
            switch_to_institutional(doc, settings, timeout=1.0, require_cache=True)
    finally:
        local.resume_node(node)
    cache_check = degraded[0]
    assert cache_check.service == "redis" and not cache_check.ok and not cache_check.required
    assert all(r.ok for r in degraded[1:]), [str(r) for r in degraded]
    failed = {f.service: f for f in caught.value.failures}
    assert set(failed) == {"redis"}
    assert f"redis at {settings.redis.endpoint}" in str(caught.value)
    assert settings.redis.password is not None
    assert settings.redis.password.get_secret_value() not in str(caught.value)
    results = validate_institutional(doc, settings, timeout=3.0)
    assert all(r.ok for r in results), [str(r) for r in results]


def _sentinel_admin(document: ConnectionsDocument) -> redis.Redis:
    assert document.redis is not None and document.redis.sentinels
    s = document.redis.sentinels[0]
    pw = document.redis.sentinel_password
    tls = RedisConnectionSettings.from_section(document.redis).tls_kwargs()
    return redis.Redis(
        host=s.host, port=s.port, password=pw.get_secret_value() if pw else None, **tls
    )


def test_a_demoted_primary_answering_readonly_sends_the_client_to_the_new_one(
    ha: Any, open_cache: Callable[..., RedisCache]
) -> None:
    doc = ha.document
    assert doc.redis is not None and doc.redis.mode == "sentinel"
    cache = open_cache(doc, heartbeat_interval=0.2, retries=4, retry_backoff=0.2)
    cache.get_latest("USDJPY", "1m", lambda: bar("USDJPY"))
    before = cache.primary_address()
    admin = _sentinel_admin(doc)
    try:
        assert doc.redis.master_name is not None
        admin.sentinel_failover(doc.redis.master_name)
    finally:
        admin.close()
    wait_for(
        lambda: current_primary(cache) not in (None, before), 60, "Sentinel to promote a replica"
    )
    demoted = raw_client(ha, before)
    try:
        wait_for(lambda: demoted.role()[0] == b"slave", 30, "the old primary to become a replica")
    finally:
        demoted.close()
    # The cache's pooled connection still points at the demoted node, which answers
    # writes with READONLY: the cache must rediscover the primary and retry.
    for minute in range(20):
        cache.get_latest(f"SYM{minute}", "1m", lambda m=minute: bar(f"SYM{m}", m))
    # Every read was answered by Redis (no store fallback); the heartbeat, whose PING
    # may have timed out during the promotion, reports available again within a few
    # of its 0.2 s beats.
    assert cache.stats().fallbacks == 0
    wait_for(lambda: cache.available, 10, "the heartbeat to answer from the new primary")
    after = cache.primary_address()
    client = raw_client(ha, after)
    try:
        assert client.exists(cache.policy.latest_key(cache.namespace, "SYM19", "1m")) == 1
    finally:
        client.close()
    assert cache.get_latest("SYM19", "1m", lambda: None) == bar("SYM19", 19)


def test_killing_the_primary_the_client_follows_sentinel_to_the_new_one(
    ha: Any, open_cache: Callable[..., RedisCache]
) -> None:
    doc = ha.document
    cache = open_cache(doc, heartbeat_interval=0.2, retries=1)
    before = cache.primary_address()
    old = ha.redis_primary()
    ha.kill_node(old)
    try:
        wait_for(lambda: current_primary(cache) not in (None, before), 90, "Sentinel to fail over")
        wait_for(lambda: cache.available, 30, "the cache to reach the new primary")
        loads: list[str] = []
        for _ in range(2):
            got = cache.get_latest("AUDUSD", "1m", lambda: loads.append("x") or bar("AUDUSD"))  # type: ignore[func-returns-value]
            assert got == bar("AUDUSD")
        assert loads == ["x"]  # the second read was a hit on the new primary
    finally:
        ha.restart_node(old)
        # Leave the session's stack as found: the old primary back, as a replica.
        node = raw_client(ha, before)
        try:
            wait_for(lambda: node.role()[0] == b"slave", 60, f"{old} to rejoin as a replica")
        finally:
            node.close()


def test_a_node_answering_readonly_is_retried_and_reads_fall_back_to_the_store(
    ha: Any, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """What a demoted primary does to a live connection, shown on a replica."""
    settings = redis_settings(ha.document)
    replicas: list[tuple[str, int]] = []

    def a_replica_is_in_sync() -> bool:
        sentinel = Sentinel(
            [(x.host, x.port) for x in settings.sentinels],
            sentinel_kwargs=settings.sentinel_kwargs(),
        )
        try:
            assert settings.master_name is not None
            for address in sentinel.discover_slaves(settings.master_name):
                node = raw_client(ha, (str(address[0]), int(address[1])))
                try:
                    if node.role()[0] == b"slave":
                        replicas.append((str(address[0]), int(address[1])))
                finally:
                    node.close()
        finally:
            for x in sentinel.sentinels:
                x.close()
        return bool(replicas)

    wait_for(a_replica_is_in_sync, 60, "a node that is a replica now")
    host, port = replicas[0]
    replica = settings.model_copy(
        update={"mode": "standalone", "host": host, "port": int(port), "sentinels": []}
    )
    caplog.set_level(logging.DEBUG, logger="backbone.cache.redis")
    cache = RedisCache(
        replica, namespace=namespace, retries=2, retry_backoff=0.01, heartbeat_interval=60
    )
    try:
        got = cache.get_latest("CHFJPY", "1m", lambda: bar("CHFJPY"))
        assert got == bar("CHFJPY")  # the store's answer, not an exception
        assert not cache.available
        readonly = [
            r
            for r in caplog.records
            if r.getMessage().startswith("Redis command failed")
            and "ReadOnlyError" in r.getMessage()
        ]
        assert len(readonly) == 3  # the first try and both retries
        assert cache.get_latest("CHFJPY", "1m", lambda: bar("CHFJPY", 1)) == bar("CHFJPY", 1)
        assert cache.stats().fallbacks == 2  # both reads: Redis refused the access update
    finally:
        cache.close()


def test_an_entry_that_cannot_be_decoded_is_a_miss_and_is_replaced(
    local: Any, open_cache: Callable[..., RedisCache], namespace: str
) -> None:
    cache = open_cache(local.document)
    key = cache.policy.latest_key(namespace, "XAUUSD", "1m")
    client = raw_client(local, cache.primary_address())
    try:
        client.set(key, b"{not json", px=60_000)
        assert cache.get_latest("XAUUSD", "1m", lambda: bar("XAUUSD")) == bar("XAUUSD")
        assert (cache.stats().hits, cache.stats().misses) == (0, 1)
        assert cache.get_latest("XAUUSD", "1m", lambda: None) == bar("XAUUSD")
        assert cache.stats().hits == 1
    finally:
        client.close()


def test_new_bars_drop_their_pairs_entries_even_after_redis_forgot_the_scripts(
    local: Any, open_cache: Callable[..., RedisCache]
) -> None:
    cache = open_cache(local.document)
    window = (T0, T0 + timedelta(hours=1))
    for symbol in ("A", "B", "C"):
        cache.get_latest(symbol, "1m", lambda s=symbol: bar(s))
    cache.get_range("A", "1m", *window, lambda: [bar("A", 0), bar("A", 1)])
    client = raw_client(local, cache.primary_address())
    try:
        client.script_flush()  # what a restart or a failover to a fresh node does
    finally:
        client.close()
    assert cache.on_new_bars([bar("A", 2), bar("A", 3), bar("B", 2)]) == 3
    loads: list[str] = []

    def load(symbol: str) -> Bar:
        loads.append(symbol)
        return bar(symbol, 2)

    for symbol in ("A", "B", "C"):
        cache.get_latest(symbol, "1m", lambda s=symbol: load(s))
    assert loads == ["A", "B"]  # C kept its entry
    assert cache.get_range("A", "1m", *window, lambda: [bar("A", 9)]) == [bar("A", 9)]


def test_a_command_redis_refuses_falls_back_to_the_store_without_raising(
    local: Any, open_cache: Callable[..., RedisCache], namespace: str
) -> None:
    cache = open_cache(local.document)
    client = raw_client(local, cache.primary_address())
    try:
        client.set(cache.policy.lru_key(namespace), b"not a sorted set")  # WRONGTYPE for ZADD
        assert cache.get_latest("EURGBP", "1m", lambda: bar("EURGBP")) == bar("EURGBP")
        assert cache.available  # Redis is up; only that command was refused
        client.delete(cache.policy.lru_key(namespace))
        cache.get_latest("EURGBP", "1m", lambda: bar("EURGBP"))
        assert cache.get_latest("EURGBP", "1m", lambda: None) == bar("EURGBP")
    finally:
        client.close()
