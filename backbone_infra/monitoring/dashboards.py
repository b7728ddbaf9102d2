"""Grafana dashboards as code: ingest overview, cache, streaming, storage.

Each dashboard is declared as plain data (:class:`DashboardSpec`), built with
grafana-foundation-sdk and written as JSON into ``backbone_infra/monitoring/dashboards``
by ``python -m backbone_infra.monitoring.dashboards``. The Pulumi ``Monitoring``
component provisions those files; a unit test checks the committed JSON is
what this module generates, and an integration test checks every panel's
query only names metrics a running local stack really has.

Panels read from the Prometheus data source with uid :data:`DATASOURCE_UID`.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from grafana_foundation_sdk.builders import dashboard as gdash
from grafana_foundation_sdk.builders import prometheus as gprom
from grafana_foundation_sdk.builders import stat as gstat
from grafana_foundation_sdk.builders import timeseries as gts
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

from backbone_infra.monitoring.assets import dashboards_dir

__all__ = [
    "DASHBOARDS",
    "DATASOURCE_UID",
    "DashboardSpec",
    "PanelSpec",
    "build_dashboard",
    "main",
    "metric_names_in",
    "panel_queries",
    "render_all",
    "write_all",
]

#: The uid the Prometheus data source is provisioned with.
DATASOURCE_UID = "prometheus"
_DATASOURCE = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)


@dataclass(frozen=True)
class PanelSpec:
    title: str
    #: ``(PromQL, legend format)`` per query.
    queries: Sequence[tuple[str, str]]
    unit: str = "short"
    kind: Literal["timeseries", "stat"] = "timeseries"
    description: str = ""


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    panels: Sequence[PanelSpec]

    @property
    def filename(self) -> str:
        return f"{self.uid}.json"


INGEST = DashboardSpec(
    uid="backbone-ingest",
    title="Backbone / Ingest overview",
    description="Is data arriving, fresh, stored and clean? One row per question.",
    panels=(
        PanelSpec(
            "Freshness (age of the newest stored bar)",
            [
                (
                    "max by (symbol, timeframe) (backbone_ingest_freshness_seconds)",
                    "{{symbol}} {{timeframe}}",
                )
            ],
            unit="s",
            description="Alerts: IngestDataStaleDaily (> 4 d), IngestDataStaleIntraday.",
        ),
        PanelSpec(
            "Records in per second, by source",
            [("sum by (source) (rate(backbone_records_in_total[5m]))", "{{source}}")],
            unit="ops",
        ),
        PanelSpec(
            "Rows written per second, by store",
            [("sum by (store) (rate(backbone_rows_written_total[5m]))", "{{store}}")],
            unit="ops",
        ),
        PanelSpec(
            "Dead-lettered per second, by reason",
            [("sum by (reason) (rate(backbone_dead_letter_total[5m]))", "{{reason}}")],
            unit="ops",
            description="Alert: DeadLetterRateAboveZero.",
        ),
        PanelSpec(
            "Dead-lettered (total)",
            [("sum(backbone_dead_letter_total)", "dead-lettered")],
            kind="stat",
        ),
        PanelSpec(
            "Consumer lag, by topic and group",
            [("sum by (topic, group) (backbone_consumer_lag)", "{{topic}} / {{group}}")],
        ),
    ),
)

CACHE = DashboardSpec(
    uid="backbone-cache",
    title="Backbone / Cache",
    description="The Redis-backed bar cache: hit ratio, traffic, evictions, and Redis itself.",
    panels=(
        PanelSpec(
            "Hit ratio (10 min), by namespace",
            [
                (
                    "sum by (namespace, backing) (rate(backbone_cache_hits_total[10m])) / "
                    "(sum by (namespace, backing) (rate(backbone_cache_hits_total[10m])) + "
                    "sum by (namespace, backing) (rate(backbone_cache_misses_total[10m])))",
                    "{{namespace}} ({{backing}})",
                )
            ],
            unit="percentunit",
            description="Alert: CacheHitRatioLow (< 50% at > 1 lookup/s).",
        ),
        PanelSpec(
            "Hit ratio since start (as the cache reports it)",
            [("backbone_cache_hit_ratio", "{{namespace}} ({{backing}})")],
            unit="percentunit",
            kind="stat",
        ),
        PanelSpec(
            "Lookups per second",
            [
                ("sum by (namespace) (rate(backbone_cache_hits_total[5m]))", "hits {{namespace}}"),
                (
                    "sum by (namespace) (rate(backbone_cache_misses_total[5m]))",
                    "misses {{namespace}}",
                ),
            ],
            unit="ops",
        ),
        PanelSpec(
            "Evictions per second",
            [
                (
                    "sum by (namespace) (rate(backbone_cache_evictions_total[5m]))",
                    "backbone {{namespace}}",
                ),
                ("sum by (node) (rate(redis_evicted_keys_total[5m]))", "redis {{node}}"),
            ],
            unit="ops",
        ),
        PanelSpec(
            "Redis memory used",
            [("redis_memory_used_bytes", "{{node}}")],
            unit="bytes",
        ),
        PanelSpec(
            "Redis up and role",
            [
                ("redis_up", "up {{node}}"),
                ('count by (node) (redis_instance_info{role="master"})', "primary {{node}}"),
            ],
            kind="stat",
            description="Alerts: RedisDown, RedisPrimaryChanged.",
        ),
    ),
)

STREAMING = DashboardSpec(
    uid="backbone-streaming",
    title="Backbone / Streaming",
    description="Kafka: consumer lag, replication health and the KRaft controller.",
    panels=(
        PanelSpec(
            "Consumer lag, by partition",
            [("backbone_consumer_lag", "{{topic}}[{{partition}}] {{group}}")],
            description="Alert: ConsumerLagHighAndGrowing (> 10k and growing).",
        ),
        PanelSpec(
            "Brokers up",
            [('sum(up{job="kafka"})', "brokers up")],
            kind="stat",
            description="Alert: KafkaBrokerDown.",
        ),
        PanelSpec(
            "Under-replicated partitions, by broker",
            [("kafka_server_replicamanager_underreplicatedpartitions", "{{node}}")],
            description="Alert: KafkaUnderReplicatedPartitions.",
        ),
        PanelSpec(
            "Offline partitions",
            [("max(kafka_controller_kafkacontroller_offlinepartitionscount)", "offline")],
            kind="stat",
            description="Alert: KafkaOfflinePartitions.",
        ),
        PanelSpec(
            "Messages in per second, by topic",
            [
                (
                    "sum by (topic) "
                    '(rate(kafka_server_brokertopicmetrics_messagesin_total{topic!=""}[5m]))',
                    "{{topic}}",
                )
            ],
            unit="ops",
        ),
        PanelSpec(
            "Fenced brokers (as the controller sees them)",
            [("max(kafka_controller_kafkacontroller_fencedbrokercount)", "fenced")],
            kind="stat",
        ),
        PanelSpec(
            "Active controller",
            [("kafka_controller_kafkacontroller_activecontrollercount", "{{node}}")],
            description="Alert: KafkaNoActiveController (sum != 1).",
        ),
    ),
)

STORAGE = DashboardSpec(
    uid="backbone-storage",
    title="Backbone / Storage",
    description="PostgreSQL/TimescaleDB: writes, replication and capacity.",
    panels=(
        PanelSpec(
            "Rows written per second, by store",
            [("sum by (store) (rate(backbone_rows_written_total[5m]))", "{{store}}")],
            unit="ops",
        ),
        PanelSpec(
            "PostgreSQL up",
            [("pg_up", "{{node}}")],
            kind="stat",
            description="Alert: PostgresDown.",
        ),
        PanelSpec(
            "Standby replay lag (bytes of WAL)",
            [("pg_stat_replication_pg_wal_lsn_diff", "{{application_name}} from {{node}}")],
            unit="bytes",
            description="Alerts: PostgresReplicaLagHigh (> 64 MiB), PostgresReplicaMissing.",
        ),
        PanelSpec(
            "Commits per second",
            [("sum by (node) (rate(pg_stat_database_xact_commit[5m]))", "{{node}}")],
            unit="ops",
        ),
        PanelSpec(
            "Database size",
            [('pg_database_size_bytes{datname="marketdata"}', "{{node}}")],
            unit="bytes",
        ),
        PanelSpec(
            "Connections",
            [("sum by (node) (pg_stat_activity_count)", "{{node}}")],
        ),
    ),
)

#: Every dashboard, in the order they are listed in Grafana.
DASHBOARDS: tuple[DashboardSpec, ...] = (INGEST, CACHE, STREAMING, STORAGE)

_PANEL_WIDTH = 12
_PANEL_HEIGHT = 8


def _panel(spec: PanelSpec) -> Any:
    builder = gstat.Panel() if spec.kind == "stat" else gts.Panel()
    builder = builder.title(spec.title).unit(spec.unit).datasource(_DATASOURCE)
    builder = builder.span(_PANEL_WIDTH).height(_PANEL_HEIGHT)
    if spec.description:
        builder = builder.description(spec.description)
    for i, (expr, legend) in enumerate(spec.queries):
        query = gprom.Dataquery().expr(expr).legend_format(legend).ref_id(chr(ord("A") + i))
        builder = builder.with_target(query.datasource(_DATASOURCE))
    return builder


def build_dashboard(spec: DashboardSpec) -> dict[str, Any]:
    """The Grafana dashboard JSON model of ``spec``."""
    builder = (
        gdash.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(["backbone", "generated"])
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("utc")
    )
    for number, panel in enumerate(spec.panels, start=1):
        builder = builder.with_panel(_panel(panel).id(number))
    model: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    return model


def render_all() -> dict[str, str]:
    """File name -> JSON text of every dashboard, as committed."""
    return {
        spec.filename: json.dumps(build_dashboard(spec), indent=2, sort_keys=True) + "\n"
        for spec in DASHBOARDS
    }


def write_all(directory: Path | None = None) -> list[Path]:
    """Write every dashboard into ``directory`` (default: the committed folder)."""
    target = directory or dashboards_dir()
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all().items():
        path = target / name
        path.write_text(text)
        written.append(path)
    return written


def panel_queries(model: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` for every query of a dashboard JSON model."""
    return [
        (panel.get("title", ""), target["expr"])
        for panel in model.get("panels", [])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


_KEYWORDS = frozenset(
    {
        # binary operators and modifiers
        "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
        "group_right", "offset", "bool",
        # aggregations (their parameter lists come before the parenthesis)
        "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk",
        "quantile", "count_values", "group",
    }
)  # fmt: skip
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords,
    label names and label values left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # grouping label lists
    text = re.sub(r"(?<![A-Za-z0-9_:])\d[0-9.eE+]*[a-z]*", " ", text)  # numbers, durations
    names = set()
    for match in _IDENT.finditer(text):
        word = match.group(0)
        following = text[match.end() :].lstrip()
        if word in _KEYWORDS or following.startswith("("):
            continue
        names.add(word)
    return names


def _all_metric_names(models: Iterable[dict[str, Any]]) -> set[str]:
    return {name for m in models for _, expr in panel_queries(m) for name in metric_names_in(expr)}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m backbone_infra.monitoring.dashboards [DIR]``: write the dashboards' JSON."""
    args = list(sys.argv[1:] if argv is None else argv)
    paths = write_all(Path(args[0]) if args else None)
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
