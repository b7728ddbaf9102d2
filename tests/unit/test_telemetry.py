"""Telemetry: the exact metric names, freshness at scrape time, and /metrics over HTTP."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from backbone.bus import EventBus
from backbone.cache.telemetry import CACHE_STATS_TOPIC, CacheTelemetry
from backbone.telemetry import METRIC_NAMES, Telemetry, serve_metrics


def _exposed_sample_names(telemetry: Telemetry) -> set[str]:
    text = telemetry.render().decode()
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_every_documented_metric_is_exported_under_its_exact_name() -> None:
    t = Telemetry()
    t.bar_stored("EURUSD", "1m", datetime(2024, 1, 1, tzinfo=UTC))
    t.cache_hit("ns", "memory")
    t.cache_miss("ns", "memory")
    t.cache_evicted("ns", "memory")
    t.cache_hit_ratio("ns", "memory", 0.5)
    t.consumer_lag("market-data.intraday-bars", 0, "store-writer", 7)
    t.dead_lettered("negative volume")
    t.rows_written("duckdb", 10)
    t.records_in("synthetic", 11)
    t.cache_degraded("ns", lambda: 1.0)
    t.store_paused("store-writer", True)
    t.cache_available("ns", "redis", lambda: True)
    t.cache_meters("ns", "redis").fallback(1)
    t.heartbeat("consume")
    t.consumer_processed("store-writer", 3)
    t.consumer_committed("store-writer", {("market-data.intraday-bars", 0): 3})
    t.consumer_assigned("store-writer", 1)
    t.health_published(True)
    t.health_published(False)
    assert set(METRIC_NAMES) <= _exposed_sample_names(t)


def test_metric_names_are_listed_in_the_docs() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
    for name in METRIC_NAMES:
        assert f"`{name}" in doc, name


def test_freshness_is_now_minus_the_latest_stored_bar_at_scrape_time() -> None:
    now = [1_000.0]
    t = Telemetry(clock=lambda: now[0])
    t.bar_stored("EURUSD", "1m", 900.0)
    t.bar_stored("EURUSD", "1m", 940.0)
    t.bar_stored("EURUSD", "1m", 920.0)  # out of order: the latest stays 940
    labels = {"symbol": "EURUSD", "timeframe": "1m"}
    assert t.value("backbone_ingest_last_bar_timestamp_seconds", **labels) == 940.0
    assert t.value("backbone_ingest_freshness_seconds", **labels) == 60.0
    now[0] = 1_030.0  # ingest stalls: freshness grows without another update
    assert t.value("backbone_ingest_freshness_seconds", **labels) == 90.0


def test_counters_add_up_per_label() -> None:
    t = Telemetry()
    t.records_in("synthetic", 5)
    t.records_in("synthetic", 2)
    t.records_in("csv", 1)
    t.dead_lettered("high below low", 3)
    assert t.value("backbone_records_in_total", source="synthetic") == 7
    assert t.value("backbone_records_in_total", source="csv") == 1
    assert t.value("backbone_dead_letter_total", reason="high below low") == 3
    assert t.value("backbone_rows_written_total", store="timescale") is None


def test_each_runtime_owns_its_registry() -> None:
    a, b = Telemetry(), Telemetry(CollectorRegistry())
    a.records_in("csv", 4)
    assert b.value("backbone_records_in_total", source="csv") is None


def test_cache_telemetry_mirrors_counters_to_prometheus_and_the_bus() -> None:
    t = Telemetry()
    bus = EventBus()
    events: list[dict[str, object]] = []
    bus.subscribe(CACHE_STATS_TOPIC, events.append)
    counters = CacheTelemetry("prices", "redis", telemetry=t, bus=bus, publish_every=4)
    due = [counters.hit(), counters.hit(), counters.hit(), counters.miss()]
    assert due == [False, False, False, True]
    counters.evicted(2)
    counters.publish(counters.snapshot(size=9))
    labels = {"namespace": "prices", "backing": "redis"}
    assert t.value("backbone_cache_hits_total", **labels) == 3
    assert t.value("backbone_cache_misses_total", **labels) == 1
    assert t.value("backbone_cache_evictions_total", **labels) == 2
    assert t.value("backbone_cache_hit_ratio", **labels) == 0.75
    assert events[-1]["hits"] == 3 and events[-1]["evictions"] == 2
    assert events[-1]["hit_ratio"] == 0.75 and events[-1]["size"] == 9


def test_serve_metrics_exposes_the_registry_on_loopback() -> None:
    t = Telemetry()
    t.rows_written("duckdb", 42)
    with serve_metrics(t.registry, 0) as server:
        assert server.host == "127.0.0.1" and server.port > 0
        with urllib.request.urlopen(server.url, timeout=5) as resp:
            body = resp.read().decode()
    assert 'backbone_rows_written_total{store="duckdb"} 42.0' in body
