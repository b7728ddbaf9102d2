"""The Prometheus config renderer: one job per service, labels kept, and
promtool as the judge of what is valid."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backbone_infra.monitoring.assets import rules_file
from backbone_infra.monitoring.promtool import (
    PrometheusConfigError,
    check_config,
    write_prometheus_config,
)
from backbone_infra.render.prometheus import ScrapeTarget, render_prometheus_config

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian package `prometheus`); run `make setup`",
)

TARGETS = [
    ScrapeTarget("redis", "127.0.0.1:9121", {"node": "redis-1"}),
    ScrapeTarget("kafka", "127.0.0.1:9404", {"node": "kafka-1"}),
    ScrapeTarget("redis", "127.0.0.1:9122", {"node": "redis-2"}),
]


def test_targets_are_grouped_by_job_in_first_seen_order_with_their_labels() -> None:
    config = render_prometheus_config(
        TARGETS, scrape_interval_s=1, evaluation_interval_s=1, rule_files=["/r.yml"]
    )
    jobs = config["scrape_configs"]
    assert [j["job_name"] for j in jobs] == ["redis", "kafka"]
    assert jobs[0]["static_configs"] == [
        {"targets": ["127.0.0.1:9121"], "labels": {"node": "redis-1"}},
        {"targets": ["127.0.0.1:9122"], "labels": {"node": "redis-2"}},
    ]
    assert config["rule_files"] == ["/r.yml"]
    assert config["global"]["scrape_interval"] == "1s"


@given(interval=st.floats(min_value=0.1, max_value=120))
def test_scrape_timeout_never_exceeds_the_interval(interval: float) -> None:
    config = render_prometheus_config(
        TARGETS, scrape_interval_s=interval, evaluation_interval_s=5, rule_files=[]
    )
    g = config["global"]

    def seconds(d: str) -> float:
        return int(d[:-2]) / 1000 if d.endswith("ms") else int(d[:-1])

    assert seconds(g["scrape_timeout"]) <= seconds(g["scrape_interval"])


@needs_promtool
def test_a_rendered_config_with_the_real_rules_passes_promtool(tmp_path: Path) -> None:
    config = render_prometheus_config(
        TARGETS, scrape_interval_s=1, evaluation_interval_s=1, rule_files=[rules_file()]
    )
    check_config(write_prometheus_config(config, tmp_path / "prometheus.yml"))


@needs_promtool
def test_a_bad_config_is_an_error_naming_the_file_and_promtools_reason(tmp_path: Path) -> None:
    config = render_prometheus_config(
        TARGETS, scrape_interval_s=1, evaluation_interval_s=1, rule_files=[]
    )
    config["global"]["scrape_interval"] = "every now and then"
    path = write_prometheus_config(config, tmp_path / "prometheus.yml")
    with pytest.raises(PrometheusConfigError) as err:
        check_config(path)
    assert str(path) in str(err.value)
    assert "promtool" in str(err.value)


@needs_promtool
def test_a_config_naming_a_broken_rules_file_is_rejected(tmp_path: Path) -> None:
    bad_rules = tmp_path / "rules.yml"
    bad_rules.write_text("groups:\n- name: g\n  rules:\n  - alert: X\n    expr: rate(\n")
    config = render_prometheus_config(
        TARGETS, scrape_interval_s=1, evaluation_interval_s=1, rule_files=[bad_rules]
    )
    with pytest.raises(PrometheusConfigError, match=r"rules\.yml"):
        check_config(write_prometheus_config(config, tmp_path / "prometheus.yml"))


@given(interval=st.floats(min_value=0.1, max_value=120))
def test_the_postgres_job_gets_the_time_its_exporter_needs_to_say_pg_up_0(interval: float) -> None:
    # postgres_exporter answers `pg_up 0` for a stopped server only after seconds
    # of connection attempts: a shorter timeout made the scrape fail instead.
    from backbone_infra.render.prometheus import JOB_POSTGRES, SLOW_JOB_TIMEOUT_S

    targets = [*TARGETS, ScrapeTarget(JOB_POSTGRES, "127.0.0.1:9187", {"node": "postgres-1"})]
    config = render_prometheus_config(
        targets, scrape_interval_s=interval, evaluation_interval_s=5, rule_files=[]
    )

    def seconds(d: str) -> float:
        return int(d[:-2]) / 1000 if d.endswith("ms") else int(d[:-1])

    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    g = config["global"]
    pg = jobs[JOB_POSTGRES]
    timeout = seconds(pg.get("scrape_timeout", g["scrape_timeout"]))
    assert timeout >= min(SLOW_JOB_TIMEOUT_S[JOB_POSTGRES], 10)
    assert timeout <= seconds(pg.get("scrape_interval", g["scrape_interval"]))
    # The other jobs keep the global interval.
    assert "scrape_interval" not in jobs["redis"] and "scrape_timeout" not in jobs["kafka"]
