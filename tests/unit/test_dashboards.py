"""Dashboards are generated code: the committed JSON is exactly what the
generator writes, and every query names only metrics somebody exports."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from backbone.stream.broker_lag import BROKER_LAG_METRICS
from backbone.telemetry import METRIC_NAMES
from backbone_infra.monitoring.assets import dashboards_dir, rules_file
from backbone_infra.monitoring.dashboards import (
    DASHBOARDS,
    DATASOURCE_UID,
    build_dashboard,
    metric_names_in,
    panel_queries,
    render_all,
    write_all,
)


def test_the_committed_json_is_what_the_generator_writes() -> None:
    committed = {p.name: p.read_text() for p in dashboards_dir().glob("*.json")}
    assert committed == render_all(), (
        "regenerate with `python -m backbone_infra.monitoring.dashboards` and commit the JSON"
    )


def test_the_generator_writes_one_file_per_dashboard(tmp_path) -> None:
    paths = write_all(tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"{d.uid}.json" for d in DASHBOARDS)
    assert {d.uid for d in DASHBOARDS} == {
        "backbone-ingest", "backbone-cache", "backbone-streaming", "backbone-storage"
    }  # fmt: skip


@pytest.mark.parametrize("spec", DASHBOARDS, ids=lambda d: d.uid)
def test_every_panel_queries_the_prometheus_data_source(spec) -> None:
    model = build_dashboard(spec)
    assert model["uid"] == spec.uid
    assert len(model["panels"]) == len(spec.panels)
    for panel in model["panels"]:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE_UID
    assert len({p["id"] for p in model["panels"]}) == len(model["panels"])


def _backbone_names(exprs) -> set[str]:
    return {n for e in exprs for n in metric_names_in(e) if n.startswith("backbone_")}


def test_backbone_metrics_in_dashboards_are_ones_the_backbone_exports() -> None:
    exprs = [e for d in DASHBOARDS for _, e in panel_queries(build_dashboard(d))]
    used = _backbone_names(exprs)
    assert used, "the dashboards should show the backbone's own metrics"
    assert used - set(METRIC_NAMES) == set()


def test_backbone_metrics_in_alert_rules_are_ones_the_backbone_exports() -> None:
    doc = yaml.safe_load(rules_file().read_text())
    exprs = [r["expr"] for g in doc["groups"] for r in g["rules"]]
    used = _backbone_names(exprs)
    assert used - set(METRIC_NAMES) - set(BROKER_LAG_METRICS) == set()


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('sum(up{job="kafka"})', {"up"}),
        ("sum by (namespace, backing) (rate(a_total[10m])) / (b_total + c)",
         {"a_total", "b_total", "c"}),
        ('count by (node) (redis_instance_info{role="master"}) > 1', {"redis_instance_info"}),
        ("x and on (job) y offset 5m unless ignoring (node) z", {"x", "y", "z"}),
        ("max(kafka_controller_kafkacontroller_offlinepartitionscount)",
         {"kafka_controller_kafkacontroller_offlinepartitionscount"}),
    ],
)  # fmt: skip
def test_metric_names_are_found_in_promql(expr: str, names: set[str]) -> None:
    assert metric_names_in(expr) == names


_name = st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True).filter(
    lambda n: n not in {"and", "or", "unless", "by", "on", "offset", "bool", "sum", "max",
                        "min", "avg", "count", "without", "ignoring", "group", "topk",
                        "bottomk", "quantile", "stddev", "stdvar", "group_left",
                        "group_right", "count_values"}
)  # fmt: skip


@given(metric=_name, label=_name, value=st.text(alphabet="abc XYZ(){}_", max_size=10))
def test_label_names_and_values_are_never_taken_for_metrics(metric, label, value) -> None:
    expr = f'sum by ({label}) (rate({metric}{{{label}="{value}"}}[5m]))'
    assert metric_names_in(expr) == {metric}


def test_dashboard_json_is_plain_json() -> None:
    for text in render_all().values():
        assert json.loads(text)["panels"]
