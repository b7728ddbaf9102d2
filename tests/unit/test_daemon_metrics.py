"""The metrics a long-running consumer proves it is alive with."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from backbone.connections import parse_document
from backbone.settings import load_settings
from backbone.telemetry import Telemetry


def test_heartbeat_is_the_time_of_the_last_loop_turn() -> None:
    tel = Telemetry()
    tel.heartbeat("consume", at=1_700_000_000.0)
    tel.heartbeat("consume", at=1_700_000_005.0)
    assert tel.value("backbone_heartbeat_timestamp_seconds", process="consume") == 1_700_000_005.0


@given(steps=st.lists(st.integers(min_value=0, max_value=500), min_size=1, max_size=20))
def test_committed_records_count_only_forward_movement_after_the_first_sighting(
    steps: list[int],
) -> None:
    tel = Telemetry()
    offset = 1_000
    tel.consumer_committed("g", {("bars", 0): offset})  # the mark: not counted
    for step in steps:
        offset += step
        tel.consumer_committed("g", {("bars", 0): offset})
    assert tel.value("backbone_consumer_records_committed_total", group="g") == sum(steps)
    assert (
        tel.value("backbone_consumer_committed_offset", group="g", topic="bars", partition="0")
        == offset
    )


def test_processed_assigned_and_health_counters() -> None:
    tel = Telemetry()
    tel.consumer_processed("g", 7)
    tel.consumer_processed("g", 0)
    tel.consumer_assigned("g", 6)
    tel.health_published(True)
    tel.health_published(False)
    tel.health_published(False)
    assert tel.value("backbone_consumer_records_processed_total", group="g") == 7
    assert tel.value("backbone_consumer_assigned_partitions", group="g") == 6
    assert tel.value("backbone_health_published_total") == 1
    assert tel.value("backbone_health_publish_failures_total") == 2


def test_cache_availability_is_read_at_scrape_time_and_fallbacks_are_counted() -> None:
    tel = Telemetry()
    up = {"now": True}
    tel.cache_available("ns", "redis", lambda: up["now"])
    meters = tel.cache_meters("ns", "redis")
    assert tel.value("backbone_cache_available", namespace="ns", backing="redis") == 1.0
    up["now"] = False
    meters.fallback(3)
    assert tel.value("backbone_cache_available", namespace="ns", backing="redis") == 0.0
    assert tel.value("backbone_cache_fallbacks_total", namespace="ns", backing="redis") == 3


def test_the_outputs_document_sets_the_metrics_port_the_stack_scrapes() -> None:
    doc = parse_document(
        {
            "schema": "backbone.connections/v1",
            "stack": "s",
            "environment": "local",
            "tier": "bootstrap",
            "duckdb": {"path": "/tmp/x.duckdb"},
            "monitoring": {"prometheus_url": "http://127.0.0.1:1", "backbone_metrics_port": 41234},
        }
    )
    assert load_settings(doc, config_file="/nonexistent.yaml").metrics_port == 41234
    assert (
        load_settings(doc, config_file="/nonexistent.yaml", metrics_port=9999).metrics_port == 9999
    )
