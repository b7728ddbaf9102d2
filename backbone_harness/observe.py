"""Reading a stack's Prometheus: the one place the harness's questions live.

``harness status``, the CI health snapshot and the outage drills all ask
Prometheus through these functions (on top of :mod:`backbone_infra.monitoring.prometheus_api`),
so "which alerts fired during this fault, and how soon" is answered the same
way everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from rich.text import Text

from backbone.connections import ConnectionsDocument
from backbone_infra.monitoring.prometheus_api import (
    Alert,
    AlertEvent,
    PrometheusUnavailableError,
    Sample,
    Series,
    TargetHealth,
    alerts_fired_between,
    firing_alerts,
    instant,
    is_ready,
    metric_names,
    range_query,
    targets,
)

__all__ = [
    "Alert",
    "AlertEvent",
    "PrometheusUnavailableError",
    "Sample",
    "Series",
    "StackHealth",
    "TargetHealth",
    "alerts_fired_between",
    "firing_alerts",
    "format_stack_health",
    "instant",
    "is_ready",
    "metric_names",
    "range_query",
    "stack_health",
    "status_panel",
    "targets",
]


@dataclass(frozen=True)
class StackHealth:
    """The operator's panel: what ``harness status`` prints."""

    #: (symbol, timeframe) -> seconds since the newest stored bar.
    freshness: Mapping[tuple[str, str], float] = field(default_factory=dict)
    #: (namespace, backing) -> hits / (hits + misses), from the counters.
    cache_hit_ratio: Mapping[tuple[str, str], float] = field(default_factory=dict)
    #: (topic, group) -> records behind, summed over partitions (broker-side).
    consumer_lag: Mapping[tuple[str, str], float] = field(default_factory=dict)
    #: Records dead-lettered since the ingest processes started.
    dlq_count: float = 0.0
    firing_alerts: Sequence[Alert] = ()


# --- the operator's panel ------------------------------------------------------


def _by(samples: list[Sample], *keys: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for s in samples:
        if math.isnan(s.value):
            continue
        out[(s.labels.get(keys[0], ""), s.labels.get(keys[1], ""))] = s.value
    return out


def stack_health(prom_url: str) -> StackHealth:
    """Ingest freshness, cache hit ratio, consumer lag, DLQ count and firing alerts."""
    freshness = _by(
        instant(prom_url, "max by (symbol, timeframe) (backbone_ingest_freshness_seconds)"),
        "symbol",
        "timeframe",
    )
    hits = "sum by (namespace, backing) (backbone_cache_hits_total)"
    misses = "sum by (namespace, backing) (backbone_cache_misses_total)"
    ratio = _by(
        instant(prom_url, f"{hits} / ({hits} + {misses})"),
        "namespace",
        "backing",
    )
    # From the brokers (the lag exporter), so a dead consumer still shows its lag.
    lag = _by(
        instant(prom_url, "sum by (topic, group) (backbone_broker_consumer_lag)"), "topic", "group"
    )
    dlq = instant(prom_url, "sum(backbone_dead_letter_total)")
    return StackHealth(
        freshness=freshness,
        cache_hit_ratio=ratio,
        consumer_lag=lag,
        dlq_count=dlq[0].value if dlq else 0.0,
        firing_alerts=firing_alerts(prom_url),
    )


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def format_stack_health(health: StackHealth) -> str:
    """The panel as plain text lines (no colour), for ``harness status``."""
    lines = ["ingest freshness:"]
    if health.freshness:
        for (symbol, tf), secs in sorted(health.freshness.items()):
            lines.append(f"  {symbol:<12} {tf:<4} {_age(secs)}")
    else:
        lines.append("  (no ingest has reported yet)")
    lines.append("cache hit ratio:")
    if health.cache_hit_ratio:
        for (ns, backing), r in sorted(health.cache_hit_ratio.items()):
            lines.append(f"  {ns:<12} {backing:<8} {r:.1%}")
    else:
        lines.append("  (no cache lookups yet)")
    lines.append("consumer lag:")
    if health.consumer_lag:
        for (topic, group), lag in sorted(health.consumer_lag.items()):
            lines.append(f"  {topic:<28} {group:<12} {lag:.0f}")
    else:
        lines.append("  (no consumer has reported yet)")
    lines.append(f"dead-lettered: {health.dlq_count:.0f}")
    if health.firing_alerts:
        lines.append("firing alerts:")
        for a in health.firing_alerts:
            where = a.labels.get("node") or a.labels.get("instance") or ""
            lines.append(f"  {a.name:<32} {a.labels.get('severity', ''):<9} {where}")
    else:
        lines.append("firing alerts: none")
    return "\n".join(lines)


class _HasDocument(Protocol):
    @property
    def document(self) -> ConnectionsDocument: ...


def status_panel(stack: _HasDocument) -> Text | None:
    """The monitoring panel ``harness status`` prints for a stack (``None``
    when the stack runs no Prometheus). Raises
    :class:`PrometheusUnavailableError` when its Prometheus does not answer."""
    monitoring = stack.document.monitoring
    if monitoring is None or not monitoring.prometheus_url:
        return None
    health = stack_health(monitoring.prometheus_url)
    return Text(f"monitoring: {monitoring.prometheus_url}\n" + format_stack_health(health))
