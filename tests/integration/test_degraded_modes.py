"""Degraded modes on real services: ingest goes on through the loss of what is not essential.

On the session's minimal stack (``local_stack``): the institutional tier starts
with its Redis stopped (cache-degraded), re-attaches when Redis is back without
serving a bar that went stale meanwhile, and the consumer holds its poll through
a PostgreSQL outage with nothing lost, nothing stored twice and no offset
committed past what is stored. Every test leaves the stack as it found it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from kafka import KafkaConsumer, TopicPartition

from backbone.bars import Bar
from backbone.cache import CachePolicy, DegradableCache
from backbone.runtime import Backbone
from backbone.settings import KafkaConnectionSettings, TimescaleConnectionSettings, load_settings
from backbone.store.timescale import TimescaleStore
from backbone.stream.consumer import BarConsumer, ConsumeStats
from backbone.stream.producer import (
    BarProducer,
    ProduceError,
    ProducerTuning,
    kafka_client_config,
)
from backbone.tiers import TierValidationError
from backbone_infra.targets.local.provisioner import LocalStack

pytestmark = pytest.mark.integration

T0 = datetime(2006, 5, 8, tzinfo=UTC)  # the past: the contract refuses future bars
TOPICS = ("daily_bars", "intraday_bars")


def bar(symbol: str, minute: int, close: float) -> Bar:
    return Bar(symbol, "1m", T0 + timedelta(minutes=minute), 1.0, close + 1, 0.5, close, 100.0)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _ensure_running(stack: LocalStack, node: str) -> None:
    if not stack.node(node).running():
        stack.restart_node(node)


def _redis_node(stack: LocalStack) -> str:
    return stack.redis_primary()


def _raw_redis(stack: LocalStack) -> redis.Redis:
    settings = load_settings(stack.document)
    assert settings.redis is not None
    return redis.Redis(host=settings.redis.host or "", port=settings.redis.port or 6379,
                       **{k: v for k, v in settings.redis.client_kwargs().items()
                          if k in ("password", "username", "db")},
                       **settings.redis.tls_kwargs())  # fmt: skip


def _open(stack: LocalStack, namespace: str, hot: set[str], probe_s: float) -> Backbone:
    settings = load_settings(
        stack.document,
        namespace=namespace,
        cache=CachePolicy(hot_symbols=frozenset(hot), warm_timeframes=("1m",)),
        cache_probe_interval_seconds=probe_s,
    )
    return Backbone.open(
        tier="institutional",
        outputs=stack.outputs_path,
        settings=settings,
        group_id=f"backbone-degraded-{secrets.token_hex(3)}",
        consumer_start="latest",
    )


@pytest.fixture
def redis_stopped(local_stack: LocalStack) -> Iterator[str]:
    """Redis stopped for the test; restarted (as found) whatever happens."""
    node = _redis_node(local_stack)
    local_stack.stop_node(node)
    try:
        yield node
    finally:
        _ensure_running(local_stack, node)


def test_with_redis_stopped_ingest_starts_cache_degraded_and_says_so(
    local_stack: LocalStack, redis_stopped: str
) -> None:
    symbol = f"DG{secrets.token_hex(2).upper()}"
    with _open(local_stack, f"deg-{secrets.token_hex(3)}", {symbol}, probe_s=3600) as bb:
        assert isinstance(bb.cache, DegradableCache) and not bb.cache.attached
        result = bb.ingest([bar(symbol, i, 1.0 + i) for i in range(50)])
        assert result.reconciles and result.stored == 50
        assert result.degraded["cache"]["state"] == "degraded"
        assert "Connection refused" in result.degraded["cache"]["degraded_reason"]
        # Reads answer from the store.
        latest = bb.latest(symbol, "1m")
        assert latest is not None and latest.close == 50.0
        assert bb.cache.stats().fallbacks >= 1
        health = bb.health()
        assert health["cache"]["state"] == "degraded"
        assert health["cache"]["degraded_since"] is not None
        assert health["degraded"]["cache"]["state"] == "degraded"
        assert bb.telemetry.value("backbone_cache_degraded", namespace=bb.cache.namespace) == 1.0


def test_require_cache_refuses_while_redis_is_stopped(
    local_stack: LocalStack, redis_stopped: str
) -> None:
    with pytest.raises(TierValidationError) as caught:
        Backbone.open(tier="institutional", outputs=local_stack.outputs_path, require_cache=True)
    assert [f.service for f in caught.value.failures] == ["redis"]
    assert "--require-cache" in str(caught.value)


def _backbone(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backbone", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("BACKBONE_")},
    )


def test_the_cli_ingests_cache_degraded_and_refuses_with_require_cache(
    local_stack: LocalStack, redis_stopped: str
) -> None:
    symbol = f"DC{secrets.token_hex(2).upper()}"
    common = ["--tier", "institutional", "--outputs", str(local_stack.outputs_path)]
    ran = _backbone("ingest", *common, "--symbols", symbol, "--bars", "1000", "--json")
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    assert result["reconciles"] and result["stored"] == 1000
    assert result["degraded"]["cache"]["state"] == "degraded"
    assert "cache-degraded: Redis at" in ran.stderr  # the warning names the cause
    status = _backbone("status", *common, "--symbols", symbol)
    assert status.returncode == 0, status.stderr
    assert "degraded (since" in " ".join(status.stdout.split())

    refused = _backbone("ingest", *common, "--symbols", symbol, "--bars", "10", "--require-cache")
    assert refused.returncode == 2
    assert "redis at" in refused.stderr and "--require-cache" in refused.stderr
    assert refused.stdout == ""


def test_reattach_flushes_what_went_stale_while_detached_and_warms_hot_symbols(
    local_stack: LocalStack,
) -> None:
    symbol = f"DS{secrets.token_hex(2).upper()}"
    namespace = f"backbone-deg-{secrets.token_hex(3)}"
    node = _redis_node(local_stack)
    # 1. Attached: the latest bar (close 1.0) is cached in Redis.
    with _open(local_stack, namespace, {symbol}, probe_s=3600) as bb:
        assert isinstance(bb.cache, DegradableCache) and bb.cache.attached
        bb.ingest([bar(symbol, 0, 1.0)])
        assert bb.latest(symbol, "1m").close == 1.0  # type: ignore[union-attr]
    # 2. Redis hangs (SIGSTOP: it keeps the entry in memory; a stopped local Redis
    #    would not replay it from its AOF). A new process starts cache-degraded and
    #    ingests a newer bar that nobody can invalidate in Redis.
    local_stack.pause_node(node)
    try:
        bb = _open(local_stack, namespace, {symbol}, probe_s=3600)
        try:
            assert isinstance(bb.cache, DegradableCache) and not bb.cache.attached
            bb.ingest([bar(symbol, 1, 2.0)])
        finally:
            local_stack.resume_node(node)
        raw = _raw_redis(local_stack)
        try:
            # The stale entry is still there: serving it now would be the bug.
            stale_key = bb.cache.policy.latest_key(namespace, symbol, "1m")
            assert raw.exists(stale_key), "Redis lost the entry; the test would prove nothing"
            gauge = bb.telemetry.value("backbone_cache_degraded", namespace=namespace)
            assert gauge == 1.0
            # 3. Re-attach (what the probe does): flush, warm the hot symbol.
            assert bb.cache.attach_now()
            state = bb.cache.state()
            assert not state.degraded and state.reattachments == 1
            assert state.flushed_keys >= 1 and state.warmed_entries == 1
            assert bb.telemetry.value("backbone_cache_degraded", namespace=namespace) == 0.0
            hits = bb.cache.stats().hits
            got = bb.latest(symbol, "1m")
            assert got is not None and got.close == 2.0, "a stale bar was served"
            assert bb.cache.stats().hits == hits + 1  # the warm-up put it there
            # Attached again: new bars invalidate as usual.
            bb.ingest([bar(symbol, 2, 3.0)])
            assert bb.latest(symbol, "1m").close == 3.0  # type: ignore[union-attr]
            assert bb.health()["cache"]["state"] == "attached"
        finally:
            raw.close()
            bb.close()
    finally:
        local_stack.resume_node(node)


def test_the_background_probe_reattaches_on_its_own(local_stack: LocalStack) -> None:
    node = _redis_node(local_stack)
    local_stack.stop_node(node)
    try:
        bb = _open(local_stack, f"deg-{secrets.token_hex(3)}", set(), probe_s=0.3)
    finally:
        local_stack.restart_node(node)
    with bb:
        assert isinstance(bb.cache, DegradableCache)
        wait_for(lambda: bb.cache.attached, 30, "the probe to re-attach Redis")  # type: ignore[union-attr]
        assert bb.health()["degraded"] == {}


# --- the store unreachable mid-run --------------------------------------------------


def _committed(stack: LocalStack, group: str, tps: list[TopicPartition]) -> dict[Any, Any]:
    kafka = stack.document.kafka
    assert kafka is not None
    client = KafkaConsumer(
        **kafka_client_config(
            KafkaConnectionSettings.from_section(kafka), client_id="degraded-test-offsets"
        ),
        group_id=group,
        enable_auto_commit=False,
    )
    try:
        return {tp: client.committed(tp) for tp in tps}
    finally:
        client.close()


def test_a_store_outage_pauses_the_consumer_and_resumes_with_nothing_lost_or_doubled(
    local_stack: LocalStack,
) -> None:
    doc = local_stack.document
    assert doc.kafka is not None and doc.timescale is not None
    symbols = [f"SP{secrets.token_hex(2).upper()}{i}" for i in range(3)]
    bars = [bar(s, i, 1.0 + i) for s in symbols for i in range(200)]
    group = f"backbone-degraded-store-{secrets.token_hex(3)}"
    store = TimescaleStore(
        TimescaleConnectionSettings.from_section(doc.timescale, pool_max_size=2), timeout=3.0
    )
    consumer = BarConsumer(
        KafkaConnectionSettings.from_section(doc.kafka), store, group_id=group, topics=TOPICS,
        start_at="latest", store_outage_max_s=120, store_retry_max_wait_s=1.0,
    )  # fmt: skip
    producer = BarProducer(
        KafkaConnectionSettings.from_section(doc.kafka), tuning=ProducerTuning(bars_per_record=20)
    )
    pg = local_stack.postgres_primary()
    try:
        assigned = consumer.wait_for_assignment(30)
        assert assigned
        # What the member committed before any record: the group's pinned start.
        pinned = dict(consumer.committed)
        producer.send_bars(bars)
        acked = producer.flush()
        local_stack.stop_node(pg)
        stats = ConsumeStats()
        errors: list[BaseException] = []

        def consume() -> None:
            try:
                stats.add(consumer.run(max_records=len(bars), timeout_s=120))
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        try:
            wait_for(lambda: consumer.paused_for_store, 60, "the consumer to pause")
            time.sleep(2)  # held through several retries
            # Never a commit past what is stored: the group has committed nothing new.
            tps = [TopicPartition(t, p) for (t, p) in acked]
            before = _committed(local_stack, group, tps)
            assert before == {tp: pinned.get(tp) for tp in tps}, (before, pinned)
            assert thread.is_alive() and not errors, errors
        finally:
            local_stack.restart_node(pg)
        thread.join(120)
        assert not thread.is_alive() and not errors, errors
        assert stats.store_pauses >= 1 and stats.store_paused_s > 0
        assert stats.stored == len(bars) and stats.duplicates == 0, stats.as_dict()
        assert not consumer.paused_for_store
        after = _committed(local_stack, group, [TopicPartition(t, p) for (t, p) in acked])
        assert {(tp.topic, tp.partition): off for tp, off in after.items()} == {
            tp: off + 1 for tp, off in acked.items()
        }
        for symbol in symbols:
            assert store.count(symbol, "1m") == 200
    finally:
        _ensure_running(local_stack, pg)
        producer.close()
        consumer.close()
        store.close()


# --- Kafka unreachable: bounded in flight, loud ----------------------------------


def test_with_the_brokers_gone_the_producer_stops_at_its_bound_and_says_so(
    local_stack: LocalStack,
) -> None:
    doc = local_stack.document
    assert doc.kafka is not None
    symbol = f"KB{secrets.token_hex(2).upper()}"
    producer = BarProducer(
        KafkaConnectionSettings.from_section(doc.kafka),
        tuning=ProducerTuning(bars_per_record=10, max_bars_in_flight=100, flush_timeout_s=3.0),
    )
    brokers = sorted(n for n in local_stack.node_names() if n.startswith("kafka-"))
    try:
        producer.send_bars([bar(symbol, i, 1.0) for i in range(50)])
        acked = producer.flush()  # acknowledged before the outage
        assert acked
        for name in brokers:
            local_stack.stop_node(name)
        with pytest.raises(ProduceError) as caught:
            producer.send_bars([bar(symbol, 100 + i, 1.0) for i in range(500)])
        message = str(caught.value)
        assert "at most 100" in message and "nothing was dropped silently" in message
        assert producer.backpressure_waits == 1
        # The acknowledged offsets were handed out once and are not pending again.
        assert producer.bars_in_flight == 0
    finally:
        for name in brokers:
            _ensure_running(local_stack, name)
        producer.close(timeout_s=5)
