"""The Prometheus configuration and alert rules of a stack. Pure functions, no I/O
beyond reading the rules file that ships with the package.

One renderer for every target: the local environment
(``backbone_infra.targets.local.monitoring``) passes loopback addresses and absolute rule
paths, the Pulumi ``Monitoring`` component passes service DNS names and the
paths the rules are mounted at. Job names are fixed here because the alert
rules (``rules.yml``) and the dashboards select on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from backbone_infra.monitoring.assets import rules_file
from backbone_infra.paths import project_home

__all__ = [
    "EXPORTER_JOBS",
    "JOB_ALERTMANAGER",
    "JOB_BACKBONE",
    "JOB_KAFKA",
    "JOB_KAFKA_LAG",
    "JOB_POSTGRES",
    "JOB_PROMETHEUS",
    "JOB_REDIS",
    "JOB_REDIS_SENTINEL",
    "SLOW_JOB_TIMEOUT_S",
    "ScrapeTarget",
    "alert_rules",
    "prometheus_yaml",
    "render_prometheus_config",
    "runbook_base_url",
]

JOB_REDIS = "redis"
JOB_REDIS_SENTINEL = "redis-sentinel"
JOB_POSTGRES = "postgres"
#: Each broker's JMX exporter (a javaagent inside the broker JVM).
JOB_KAFKA = "kafka"
#: The backbone's own ``/metrics`` (served only while something ingests).
JOB_BACKBONE = "backbone"
JOB_PROMETHEUS = "prometheus"
#: Broker-side consumer lag (``backbone lag-exporter``).
JOB_KAFKA_LAG = "kafka-lag"
JOB_ALERTMANAGER = "alertmanager"
#: The external label alert rules build ``runbook_url`` from.
RUNBOOK_LABEL = "runbook_base"
#: Jobs whose targets must all be ``up == 1`` for a stack's monitoring to be ready.
EXPORTER_JOBS: tuple[str, ...] = (JOB_REDIS, JOB_REDIS_SENTINEL, JOB_POSTGRES, JOB_KAFKA)

#: Cap on a scrape's duration; Prometheus refuses a timeout above the interval.
_MAX_SCRAPE_TIMEOUT_S = 10
#: Jobs whose exporter answers slowly exactly when it matters: postgres_exporter
#: reports ``pg_up 0`` for a stopped server only after 1.5-4 s of connection
#: attempts, so under a 1 s timeout the scrape itself failed (``ExporterDown``)
#: and ``PostgresDown`` never fired. Such a job is scraped at least this slowly,
#: with a timeout of this many seconds.
SLOW_JOB_TIMEOUT_S: Mapping[str, float] = {JOB_POSTGRES: 5.0}


@dataclass(frozen=True)
class ScrapeTarget:
    """One endpoint Prometheus scrapes: ``address`` is ``host:port``."""

    job: str
    address: str
    #: Extra target labels, e.g. ``{"node": "redis-1"}`` (the node name).
    labels: Mapping[str, str] = field(default_factory=dict)


def render_prometheus_config(
    targets: Sequence[ScrapeTarget],
    *,
    scrape_interval_s: float,
    evaluation_interval_s: float,
    rule_files: Sequence[str | Path],
    external_labels: Mapping[str, str] | None = None,
    alertmanagers: Sequence[str] = (),
    runbook_base: str | None = None,
) -> dict[str, Any]:
    """The ``prometheus.yml`` document (a YAML-ready dict) for ``targets``.

    Targets are grouped into one scrape job per ``job`` in first-seen order;
    each target keeps its own labels. ``alertmanagers`` (``host:port``) get the
    ``alerting:`` block; ``runbook_base`` becomes the external label the rules'
    ``runbook_url`` annotations are built from.
    """
    if scrape_interval_s <= 0 or evaluation_interval_s <= 0:
        raise ValueError("scrape and evaluation intervals must be positive seconds")
    jobs: dict[str, list[dict[str, Any]]] = {}
    for target in targets:
        static: dict[str, Any] = {"targets": [target.address]}
        if target.labels:
            static["labels"] = dict(sorted(target.labels.items()))
        jobs.setdefault(target.job, []).append(static)
    timeout = min(scrape_interval_s, _MAX_SCRAPE_TIMEOUT_S)
    global_section: dict[str, Any] = {
        "scrape_interval": _duration(scrape_interval_s),
        "scrape_timeout": _duration(timeout),
        "evaluation_interval": _duration(evaluation_interval_s),
    }
    labels = dict(external_labels or {})
    if runbook_base:
        labels[RUNBOOK_LABEL] = runbook_base.rstrip("/")
    if labels:
        global_section["external_labels"] = labels
    config: dict[str, Any] = {"global": global_section}
    if alertmanagers:
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]
        }
    config["rule_files"] = [str(p) for p in rule_files]
    config["scrape_configs"] = [
        {"job_name": job, **_slow_job(job, scrape_interval_s), "static_configs": statics}
        for job, statics in jobs.items()
    ]
    return config


def _slow_job(job: str, interval_s: float) -> dict[str, str]:
    """A slow job's own interval and timeout, where the global ones are shorter."""
    needed = SLOW_JOB_TIMEOUT_S.get(job)
    if needed is None or needed <= min(interval_s, _MAX_SCRAPE_TIMEOUT_S):
        return {}
    interval = max(interval_s, needed)
    return {"scrape_interval": _duration(interval), "scrape_timeout": _duration(needed)}


def runbook_base_url(configured: str | None) -> str:
    """``configured``, or the project's ``docs/runbooks`` (:mod:`backbone_infra.paths`) as a
    ``file://`` URL."""
    if configured:
        return configured.rstrip("/")
    return (project_home() / "docs" / "runbooks").as_uri()


def prometheus_yaml(config: Mapping[str, Any]) -> str:
    """The text of ``prometheus.yml`` for ``config`` (it holds no secrets)."""
    return yaml.safe_dump(dict(config), sort_keys=False)


def alert_rules() -> str:
    """The text of the one alert rules file every stack's Prometheus loads."""
    return rules_file().read_text()


def _duration(seconds: float) -> str:
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{int(seconds * 1000)}ms"
