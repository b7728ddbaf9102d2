"""Monitoring on real local stacks: every exporter scraped, faults show up as
the alerts ``backbone_infra/monitoring/rules.yml`` promises, within their ``for:``
windows, and resolve after recovery. Dashboards only query metrics the stack
really has."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from backbone.bars import synthetic_bars
from backbone.connections import TOPIC_NAMES
from backbone.runtime import Backbone
from backbone.telemetry import DAEMON_METRIC_NAMES, METRIC_NAMES, Telemetry, serve_metrics
from backbone_harness import observe
from backbone_infra.monitoring.assets import rules_file
from backbone_infra.monitoring.dashboards import (
    DASHBOARDS,
    build_dashboard,
    metric_names_in,
    panel_queries,
)
from backbone_infra.monitoring.metrics_contract import (
    PROMETHEUS_SERIES,
    lag_exporter_metric_names,
    used_metric_names,
)
from backbone_infra.render.prometheus import EXPORTER_JOBS, SLOW_JOB_TIMEOUT_S
from backbone_infra.targets.local.provisioner import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _for_seconds() -> dict[str, float]:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    out = {}
    for group in yaml.safe_load(rules_file().read_text())["groups"]:
        for rule in group["rules"]:
            value, unit = re.fullmatch(r"(\d+)(ms|s|m|h)", rule["for"]).groups()  # type: ignore[union-attr]
            out[rule["alert"]] = int(value) * units[unit]
    return out


FOR_S = _for_seconds()
#: What an ingest process exports; the rest is `backbone consume`'s (test_alerting.py).
INGEST_METRICS = set(METRIC_NAMES) - set(DAEMON_METRIC_NAMES)


def _prom(stack: LocalStack) -> str:
    monitoring = stack.document.monitoring
    assert monitoring is not None and monitoring.prometheus_url
    return monitoring.prometheus_url


def _wait(what: str, check: Callable[[], bool], timeout: float, poll: float = 0.5) -> float:
    """Poll ``check`` until true; returns seconds waited or fails naming ``what``."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if check():
            return time.monotonic() - began
        time.sleep(poll)
    pytest.fail(f"{what}: not within {timeout:.0f}s")


def _firing(url: str, name: str, node: str | None = None) -> bool:
    return any(
        a.name == name and (node is None or a.labels.get("node") == node)
        for a in observe.firing_alerts(url)
    )


# --- minimal stack -----------------------------------------------------------------


def test_every_exporter_target_is_up_and_reaches_its_service(local_stack: LocalStack) -> None:
    url = _prom(local_stack)
    # The stack is shared: an earlier test may have restarted a node, and the
    # postgres job rescrapes every 5 s, so the last sample can still say 0.
    # What is checked is that every service comes back to 1, within two scrapes.
    _wait(
        "redis_up and pg_up back to 1 on every node",
        lambda: {s.value for s in observe.instant(url, "redis_up or pg_up")} == {1.0},
        2 * max(SLOW_JOB_TIMEOUT_S.values()) + 5,
    )
    watched = [t for t in observe.targets(url) if t.job in EXPORTER_JOBS]
    assert all(t.up for t in watched), [(t.instance, t.last_error) for t in watched]
    scraped_nodes = {t.labels["node"] for t in watched}
    service_nodes = {
        rec.name
        for svc in ("redis", "postgres", "kafka")
        for rec in local_stack.services[svc].records
    }
    assert scraped_nodes == service_nodes
    assert {s.value for s in observe.instant(url, "redis_up or pg_up")} == {1.0}
    down_alerts = {"RedisDown", "PostgresDown", "KafkaBrokerDown", "ExporterDown"}
    # An alert an earlier test fired resolves at the next rule evaluation.
    _wait(
        "no Down alert firing",
        lambda: not [a for a in observe.firing_alerts(url) if a.name in down_alerts],
        15,
    )


def test_a_stopped_redis_and_a_dead_exporter_fire_their_alerts_then_resolve(
    local_stack: LocalStack,
) -> None:
    url = _prom(local_stack)
    local_stack.stop_node("redis-1")
    local_stack.kill_node("exporter-postgres-1")
    try:
        # The exporter itself stays up and says it cannot reach Redis.
        _wait(
            "redis_up == 0 for redis-1",
            lambda: [s.value for s in observe.instant(url, 'redis_up{node="redis-1"}')] == [0.0],
            10,
        )
        _wait(
            "up == 0 for exporter of postgres-1",
            lambda: [s.value for s in observe.instant(url, 'up{node="postgres-1"}')] == [0.0],
            10,
        )
        fired_redis = _wait(
            "RedisDown firing",
            lambda: _firing(url, "RedisDown", "redis-1"),
            FOR_S["RedisDown"] + 10,
        )
        fired_exporter = _wait(
            "ExporterDown firing",
            lambda: _firing(url, "ExporterDown", "postgres-1"),
            FOR_S["ExporterDown"] + 10,
        )
        assert not _firing(url, "PostgresDown"), "a dead exporter is not a dead database"
    finally:
        local_stack.restart_node("redis-1")
        local_stack.restart_node("exporter-postgres-1")
    _wait("RedisDown resolved", lambda: not _firing(url, "RedisDown"), 15)
    _wait("ExporterDown resolved", lambda: not _firing(url, "ExporterDown"), 15)
    assert fired_redis <= FOR_S["RedisDown"] + 10
    assert fired_exporter <= FOR_S["ExporterDown"] + 10


def test_a_stopped_postgres_fires_postgres_down_not_exporter_down_then_resolves(
    local_stack: LocalStack,
) -> None:
    # postgres_exporter takes seconds to say `pg_up 0` for a stopped server: its
    # job is scraped with a timeout long enough to hear it (SLOW_JOB_TIMEOUT_S),
    # so the database's alert fires, not the exporter's.
    url = _prom(local_stack)
    node = local_stack.postgres_primary()
    local_stack.stop_node(node)
    try:
        _wait(
            f"pg_up == 0 for {node}",
            lambda: [s.value for s in observe.instant(url, f'pg_up{{node="{node}"}}')] == [0.0],
            30,
        )
        _wait(
            "PostgresDown firing",
            lambda: _firing(url, "PostgresDown", node),
            FOR_S["PostgresDown"] + 30,
        )
        assert not _firing(url, "ExporterDown", node), "the exporter answered; it is not down"
    finally:
        local_stack.restart_node(node)
    _wait("PostgresDown resolved", lambda: not _firing(url, "PostgresDown"), 30)


def _ingest_and_scrape(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Ingest real bars (one invalid) through the backbone with its ``/metrics``
    served where the stack's Prometheus scrapes it, read them through the cache
    (hits, misses, evictions), and return the metric names Prometheus then has."""
    url = _prom(stack)
    monitoring = stack.document.monitoring
    assert monitoring is not None and monitoring.backbone_metrics_port
    # Two cache entries at most, so reading four series also evicts.
    monkeypatch.setenv("BACKBONE_CACHE__MAX_KEYS", "2")
    telemetry = Telemetry()
    symbols = ["EURUSD", "GBPUSD", "USDJPY", "AUDUSD"]
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    have: set[str] = set()
    with (
        serve_metrics(telemetry.registry, monitoring.backbone_metrics_port),
        Backbone.open("institutional", outputs=stack.outputs_path, telemetry=telemetry) as bb,
    ):
        bars = list(synthetic_bars(symbols, "1m", 30, start=now - timedelta(minutes=30)))
        bad = dataclasses.replace(bars[0], high=bars[0].low - 1)
        result = bb.ingest([*bars, bad])
        assert result.reconciles and result.dead_lettered == 1
        for symbol in symbols:
            for _ in range(2):  # a miss, then a hit
                assert bb.latest(symbol, "1m") is not None

        def scraped_everything() -> bool:
            have.clear()
            have.update(observe.metric_names(url))
            return have >= INGEST_METRICS

        try:
            _wait("Prometheus scraped every backbone metric", scraped_everything, 20)
        except pytest.fail.Exception:
            pytest.fail(f"Prometheus never scraped {sorted(INGEST_METRICS - have)}")
        # Keep serving a little longer, so the session snapshot has a few samples.
        time.sleep(2)
    return have


def test_ingest_metrics_reach_prometheus_and_the_status_panel(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    have = _ingest_and_scrape(local_stack, monkeypatch)
    assert have >= INGEST_METRICS
    health = observe.stack_health(_prom(local_stack))
    assert health.dlq_count == 1
    # The session's stack may also hold series from earlier tests' ingests.
    ours = {(s, "1m") for s in ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD")}
    assert ours <= set(health.freshness)
    assert all(health.freshness[series] < 600 for series in ours)
    assert 0 < next(iter(health.cache_hit_ratio.values())) < 1
    assert health.consumer_lag, "the consumer reports its lag"
    panel = observe.format_stack_health(health)
    assert "EURUSD" in panel and "dead-lettered: 1" in panel


def test_dashboards_query_only_metrics_the_stack_has_after_an_ingest(
    ha_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ha stack runs every exporter the dashboards show (standby, sentinels).
    have = _ingest_and_scrape(ha_stack, monkeypatch)
    missing = {
        f"{spec.uid}: {title}: {name}"
        for spec in DASHBOARDS
        for title, expr in panel_queries(build_dashboard(spec))
        for name in metric_names_in(expr)
        if name not in have
    }
    assert missing == set()
    # The metrics contract, local target: every name a dashboard or an alert
    # rule uses is scraped from this stack (or written by Prometheus itself).
    # The long-running processes' names (``backbone consume``'s heartbeat, the lag
    # exporter's broker-side lag) are scraped from those processes in
    # tests/integration/test_alerting.py, which runs them; an in-process ingest has none.
    from_daemons = set(DAEMON_METRIC_NAMES) | lag_exporter_metric_names()
    unproduced = {
        name: sorted(where)
        for name, where in used_metric_names().items()
        if name not in have | PROMETHEUS_SERIES | from_daemons
    }
    assert unproduced == {}


# --- ha stack: the drill the issue asks for -------------------------------------------


def test_killing_the_redis_primary_and_a_bars_leader_fires_and_resolves_alerts(
    ha_stack: LocalStack, ci_health_notes: dict[str, list[str]]
) -> None:
    url = _prom(ha_stack)
    _wait("every exporter up", lambda: all(t.up for t in observe.targets(url)
                                           if t.job in EXPORTER_JOBS), 30)  # fmt: skip
    redis_primary = ha_stack.redis_primary()
    leader = ha_stack.kafka_partition_leader(TOPIC_NAMES["intraday_bars"], 0)
    expected = {
        "RedisDown": redis_primary,
        "RedisPrimaryChanged": None,
        "KafkaBrokerDown": leader,
        "KafkaUnderReplicatedPartitions": None,
    }
    began_wall = time.time()
    began = time.monotonic()
    ha_stack.kill_node(redis_primary)
    ha_stack.kill_node(leader)
    fired: dict[str, float] = {}
    try:

        def all_fired() -> bool:
            firing = observe.firing_alerts(url)
            for name, node in expected.items():
                if name not in fired and any(
                    a.name == name and (node is None or a.labels.get("node") == node)
                    for a in firing
                ):
                    fired[name] = time.monotonic() - began
            return len(fired) == len(expected)

        _wait(f"alerts {sorted(expected)} firing (got {sorted(fired)})", all_fired, 60)
    finally:
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(ha_stack.restart_node, [redis_primary, leader]))
    restarted = time.monotonic() - began
    _wait(
        "alerts resolved after recovery",
        lambda: not {a.name for a in observe.firing_alerts(url)} & set(expected),
        90,
        poll=1,
    )
    resolved = time.monotonic() - began
    # Redis fails over in down-after (3 s) plus an election; Kafka fences the
    # broker after its session timeout (9 s): each then waits out its for: window.
    detection_s = {"RedisPrimaryChanged": 15, "KafkaUnderReplicatedPartitions": 20}
    for name, took in fired.items():
        assert took <= FOR_S[name] + detection_s.get(name, 5) + 5, (name, took)
    assert ha_stack.redis_primary() != redis_primary

    events = observe.alerts_fired_between(url, began_wall - 1, time.time())
    seen = {e.name for e in events if e.resolved_at is not None}
    assert set(expected) <= seen, events
    ci_health_notes.setdefault(ha_stack.name, []).append(
        f"drill: killed Redis primary {redis_primary} and {leader} (leader of "
        f"{TOPIC_NAMES['intraday_bars']}[0]); alerts fired after "
        + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(fired.items(), key=lambda kv: kv[1]))
        + f"; nodes restarted by {restarted:.0f} s; all resolved by {resolved:.0f} s"
    )
