"""The lag exporter's series: named as documented, and honest before any reading."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from backbone.settings import KafkaConnectionSettings
from backbone.stream.broker_lag import BROKER_LAG_METRICS, BrokerLagCollector, GroupLag


def test_every_series_is_documented() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
    for name in BROKER_LAG_METRICS:
        assert f"`{name}`" in doc, name


def test_before_any_measurement_it_says_down_and_serves_no_lag() -> None:
    collector = BrokerLagCollector(KafkaConnectionSettings(bootstrap_servers=["127.0.0.1:9"]))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    assert "backbone_broker_lag_up 0.0" in text
    assert "backbone_broker_consumer_lag{" not in text
    assert "backbone_broker_lag_measured_timestamp_seconds" not in text


@given(committed=st.integers(0, 10**12), ahead=st.integers(-(10**6), 10**12))
def test_lag_is_log_end_minus_committed_never_negative(committed: int, ahead: int) -> None:
    reading = GroupLag("g", "t", 0, committed=committed, log_end=committed + ahead)
    assert reading.lag == max(0, ahead)
