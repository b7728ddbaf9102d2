"""The metrics contract: every metric name a dashboard query or an alert rule
selects must be produced by the exporter configuration a target ships.

Producers, per target:

- Kafka: the JMX exporter rules (``backbone_infra/kafka/jmx-exporter.yml``, one file for
  every target) plus the agent's own ``jvm_*`` / ``jmx_*`` series.
- Redis and PostgreSQL: ``redis_exporter`` and ``postgres_exporter``; their
  names are taken from a live local stack (the same exporter projects ship in
  the containers; the versions are in ``docs/environments.md``).
- The backbone itself: whatever :class:`backbone.telemetry.Telemetry` registers.
- Prometheus: its per-target series (``up``, ``scrape_*``), ``ALERTS`` and the
  recording rules of ``rules.yml``.

This module only computes names; the tests hold the targets to them
(``tests/infra/test_metrics_contract.py`` for the rendered Docker and
Kubernetes configuration, ``tests/integration/test_monitoring.py`` for the live
local stack).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import yaml

from backbone_infra.monitoring.assets import rules_file
from backbone_infra.monitoring.dashboards import (
    DASHBOARDS,
    build_dashboard,
    metric_names_in,
    panel_queries,
)

__all__ = [
    "EXPORTER_PREFIXES",
    "PROMETHEUS_SERIES",
    "backbone_metric_names",
    "jmx_name_patterns",
    "lag_exporter_metric_names",
    "produced",
    "used_metric_names",
]

#: Series Prometheus itself writes for every target and for alerts.
PROMETHEUS_SERIES = frozenset(
    {
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
        "ALERTS",
        "ALERTS_FOR_STATE",
    }
)
#: Name prefix -> (scrape job, exporter image field of ``backbone_infra.spec.Images``):
#: the exporter sidecar that produces the names (checked live locally).
EXPORTER_PREFIXES: dict[str, tuple[str, str]] = {
    "redis_": ("redis", "redis_exporter"),
    "pg_": ("postgres", "postgres_exporter"),
}
#: The JMX exporter agent's own series, whatever its rules say.
_JMX_AGENT_SERIES = (r"jvm_.*", r"jmx_.*", r"process_.*")
_GROUP = re.compile(r"\$(\d+)")


def _rules(text: str | None = None) -> list[dict[str, Any]]:
    doc = yaml.safe_load(text if text is not None else rules_file().read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def used_metric_names(rules_text: str | None = None) -> dict[str, set[str]]:
    """Metric name -> where it is used (``dashboard UID: panel``, ``rule NAME``).

    Names a recording rule defines are left out: Prometheus produces them.
    """
    rules = _rules(rules_text)
    recorded = {rule["record"] for rule in rules if "record" in rule}
    used: dict[str, set[str]] = {}
    for spec in DASHBOARDS:
        for title, expr in panel_queries(build_dashboard(spec)):
            for name in metric_names_in(expr):
                used.setdefault(name, set()).add(f"dashboard {spec.uid}: {title}")
    for rule in rules:
        label = f"rule {rule.get('alert') or rule.get('record')}"
        for name in metric_names_in(str(rule["expr"])):
            used.setdefault(name, set()).add(label)
    return {name: where for name, where in used.items() if name not in recorded}


def _alternatives(group: str) -> list[str] | None:
    """``(A|B|C)`` -> ``[A, B, C]``; ``None`` when the group is not a plain alternation."""
    if not (group.startswith("(") and group.endswith(")")):
        return None
    body = group[1:-1]
    if not re.fullmatch(r"[A-Za-z0-9_|]+", body):
        return None
    return body.split("|")


def _groups(pattern: str) -> list[str]:
    """The top-level capture groups of a rule pattern, in order (no nesting in our rules)."""
    return re.findall(r"\((?!\?)[^()]*\)", pattern)


def jmx_name_patterns(config_text: str) -> list[re.Pattern[str]]:
    """Regular expressions matching every metric name a JMX exporter config can emit.

    A ``$N`` in a rule's ``name`` whose group is a plain alternation expands to
    its alternatives; any other group matches one CamelCase MBean name part
    (letters and digits, as Kafka names its types and metrics).
    """
    config = yaml.safe_load(config_text)
    lower = bool(config.get("lowercaseOutputName"))
    patterns = [re.compile(p) for p in _JMX_AGENT_SERIES]
    for rule in config.get("rules", []):
        name = rule.get("name")
        if not name:
            continue
        groups = _groups(rule["pattern"])
        regex = ""
        for i, part in enumerate(_GROUP.split(name)):
            if i % 2 == 0:
                regex += re.escape(part.lower() if lower else part)
                continue
            options = _alternatives(groups[int(part) - 1])
            if options is None:
                regex += r"[A-Za-z0-9]+"
            else:
                regex += "(?:" + "|".join(re.escape(o.lower() if lower else o) for o in options)
                regex += ")"
        patterns.append(re.compile(regex))
    return patterns


def backbone_metric_names() -> set[str]:
    """The series names the backbone's own ``/metrics`` can serve, from the
    collectors :class:`~backbone.telemetry.Telemetry` registers."""
    from backbone.telemetry import METRIC_NAMES, Telemetry

    telemetry = Telemetry()
    names = set(METRIC_NAMES)
    for family in telemetry.registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def lag_exporter_metric_names() -> set[str]:
    """The series ``backbone lag-exporter`` (job ``kafka-lag``) serves: broker-side
    lag from the group's committed offsets."""
    from backbone.stream.broker_lag import BROKER_LAG_METRICS

    return set(BROKER_LAG_METRICS)


def produced(
    names: Iterable[str], *, exact: Iterable[str] = (), patterns: Iterable[re.Pattern[str]] = ()
) -> set[str]:
    """The subset of ``names`` some producer emits: an ``exact`` name, a name
    matched by one of ``patterns``, or a Prometheus series."""
    known = set(exact) | PROMETHEUS_SERIES
    compiled = list(patterns)
    return {n for n in names if n in known or any(p.fullmatch(n) for p in compiled)}
