"""The metrics contract for the container targets: every metric a dashboard or
an alert rule selects is produced by what the rendering ships.

Kafka's names must come out of the JMX exporter rules the rendering mounts;
the backbone's from its own ``/metrics``; Redis's and PostgreSQL's from an
exporter sidecar the rendering runs and scrapes under the job the rules
select (that those exporters emit the names is checked on the live local
stack, ``tests/integration/test_monitoring.py``).
"""

from __future__ import annotations

import pytest
import yaml
from pulumi_rendering import (
    INSTITUTIONAL_IDS,
    STATEFUL_SET,
    Rendering,
    file_named,
    pod_spec,
)

from backbone_infra.monitoring.metrics_contract import (
    EXPORTER_PREFIXES,
    PROMETHEUS_SERIES,
    backbone_metric_names,
    jmx_name_patterns,
    lag_exporter_metric_names,
    produced,
    used_metric_names,
)
from backbone_infra.render.kafka import jmx_exporter_rules
from backbone_infra.render.prometheus import JOB_BACKBONE, JOB_KAFKA, JOB_KAFKA_LAG

USED = used_metric_names()


def _images(rendering: Rendering) -> set[str]:
    if rendering.config.target == "docker":
        # The image input is the pulled image's id; the name is in the Pulumi name.
        return {r.name for r in rendering.resources if r.typ.endswith("remoteImage:RemoteImage")}
    return {c["image"] for r in rendering.of_type(STATEFUL_SET) for c in pod_spec(r)["containers"]}


def _jobs(rendering: Rendering) -> set[str]:
    config = yaml.safe_load(file_named(rendering, "backbone/prometheus.yml"))
    return {job["job_name"] for job in config["scrape_configs"]}


def test_the_contract_covers_what_the_dashboards_and_rules_use() -> None:
    # A sanity floor: the parser found the names of every service's panels.
    prefixes = {name.split("_", 1)[0] for name in USED}
    assert {"kafka", "redis", "pg", "backbone", "up"} <= prefixes


@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_every_used_metric_has_a_producer_the_target_ships(rendering: Rendering) -> None:
    spec = rendering.result.spec
    shipped_rules = file_named(rendering, "jmx-exporter.yml")
    assert shipped_rules == jmx_exporter_rules(), "the containers ship other JMX rules"
    from_jmx = produced(USED, patterns=jmx_name_patterns(shipped_rules))
    from_backbone = produced(USED, exact=backbone_metric_names())
    jobs, images = _jobs(rendering), _images(rendering)
    from_exporters: set[str] = set()
    for prefix, (job, image_field) in EXPORTER_PREFIXES.items():
        image = getattr(spec.images, image_field)
        names = {n for n in USED if n.startswith(prefix)}
        if names:
            assert job in jobs, f"{sorted(names)} need the scrape job {job!r}"
            assert any(
                image in i or image.replace("/", "-").replace(":", "-") in i for i in images
            ), f"{sorted(names)} need the {image} sidecar"
        from_exporters |= names
    assert JOB_KAFKA in jobs and JOB_BACKBONE in jobs and JOB_KAFKA_LAG in jobs
    from_lag_exporter = produced(USED, exact=lag_exporter_metric_names())
    missing = {
        name: sorted(where)
        for name, where in USED.items()
        if name
        not in from_jmx | from_backbone | from_lag_exporter | from_exporters | PROMETHEUS_SERIES
    }
    assert missing == {}


def test_the_generic_rule_set_would_break_the_contract() -> None:
    """The check can fail: JMX rules that name metrics generically (what the
    containers shipped before) leave the dashboards' Kafka names unproduced."""
    generic = """
lowercaseOutputName: true
rules:
  - pattern: 'kafka\\\\.(\\\\w+)<type=(.+), name=(.+)><>(Value|Count)'
    name: kafka_$1_$2_$3
"""
    kafka = {n for n in USED if n.startswith("kafka_")}
    # Generic names match anything kafka_*_*_*, so test one the rules name with a suffix.
    assert kafka
    strict = produced(kafka, patterns=jmx_name_patterns(jmx_exporter_rules()))
    assert strict == kafka
    counters = {n for n in kafka if n.endswith("_total")}
    assert counters and not produced(counters, patterns=jmx_name_patterns(generic)) >= counters
