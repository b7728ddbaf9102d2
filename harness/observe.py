"""Reading a stack's Prometheus: the one place its queries live.

``harness status``, the CI health snapshot, the monitoring readiness check and
the outage drills all ask Prometheus through these functions, so "which alerts
fired during this fault, and how soon" is answered the same way everywhere.
Only the standard library is used (HTTP GET on loopback or a given URL).
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rich.text import Text

from backbone.connections import ConnectionsDocument
from harness.errors import HarnessError

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

_TIMEOUT_S = 5.0


class PrometheusUnavailableError(HarnessError):
    """Prometheus did not answer, or answered with an error."""


@dataclass(frozen=True)
class Sample:
    """One series' value at one instant."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Series:
    """One series over a range: ``points`` are ``(unix seconds, value)``."""

    labels: Mapping[str, str]
    points: Sequence[tuple[float, float]]


@dataclass(frozen=True)
class Alert:
    """An alert as Prometheus holds it now (``pending`` or ``firing``)."""

    name: str
    state: str
    labels: Mapping[str, str]
    active_at: str | None = None


@dataclass(frozen=True)
class AlertEvent:
    """One firing episode of an alert: from the first evaluation that found it
    firing to the first that did not (``None``: still firing at the end)."""

    name: str
    labels: Mapping[str, str]
    first_seen: float
    resolved_at: float | None


@dataclass(frozen=True)
class TargetHealth:
    """One scrape target: ``up`` is its last scrape's outcome."""

    job: str
    instance: str
    labels: Mapping[str, str]
    up: bool
    last_error: str


@dataclass(frozen=True)
class StackHealth:
    """The operator's panel: what ``harness status`` prints."""

    #: (symbol, timeframe) -> seconds since the newest stored bar.
    freshness: Mapping[tuple[str, str], float] = field(default_factory=dict)
    #: (namespace, backing) -> hits / (hits + misses), from the counters.
    cache_hit_ratio: Mapping[tuple[str, str], float] = field(default_factory=dict)
    #: (topic, group) -> records behind, summed over partitions.
    consumer_lag: Mapping[tuple[str, str], float] = field(default_factory=dict)
    #: Records dead-lettered since the ingest processes started.
    dlq_count: float = 0.0
    firing_alerts: Sequence[Alert] = ()


# --- HTTP --------------------------------------------------------------------


def _get(prom_url: str, path: str, params: Mapping[str, str] | None = None) -> Any:
    url = prom_url.rstrip("/") + path
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise PrometheusUnavailableError(
            f"Prometheus at {prom_url} refused {path}: HTTP {exc.code} {detail}"
        ) from None
    except (OSError, ValueError) as exc:
        raise PrometheusUnavailableError(
            f"Prometheus at {prom_url} did not answer {path} ({exc}); is the stack up? "
            "`harness status --name NAME` shows its nodes"
        ) from None
    if body.get("status") != "success":
        raise PrometheusUnavailableError(
            f"Prometheus at {prom_url} answered {path} with {body.get('error', body)}"
        )
    return body["data"]


def is_ready(prom_url: str) -> bool:
    """Whether Prometheus reports itself ready to serve queries."""
    try:
        with urllib.request.urlopen(prom_url.rstrip("/") + "/-/ready", timeout=_TIMEOUT_S) as r:
            return bool(r.status == 200)
    except (OSError, ValueError):
        return False


# --- queries -----------------------------------------------------------------


def instant(prom_url: str, expr: str, *, at: float | None = None) -> list[Sample]:
    """Evaluate ``expr`` now (or at unix time ``at``); a scalar is one unlabelled sample."""
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    data = _get(prom_url, "/api/v1/query", params)
    if data["resultType"] in ("scalar", "string"):
        return [Sample({}, float(data["result"][1]))]
    return [Sample(dict(r["metric"]), float(r["value"][1])) for r in data["result"]]


def range_query(
    prom_url: str, expr: str, start: float, end: float, step: float = 1.0
) -> list[Series]:
    """Evaluate ``expr`` every ``step`` seconds from ``start`` to ``end`` (unix seconds)."""
    data = _get(
        prom_url,
        "/api/v1/query_range",
        {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"},
    )
    return [
        Series(dict(r["metric"]), [(float(t), float(v)) for t, v in r["values"]])
        for r in data["result"]
    ]


def metric_names(prom_url: str) -> set[str]:
    """Every metric name Prometheus holds samples for."""
    return set(_get(prom_url, "/api/v1/label/__name__/values"))


def targets(prom_url: str) -> list[TargetHealth]:
    """The active scrape targets and whether their last scrape succeeded."""
    data = _get(prom_url, "/api/v1/targets", {"state": "active"})
    return [
        TargetHealth(
            job=t["labels"].get("job", ""),
            instance=t["labels"].get("instance", ""),
            labels=dict(t["labels"]),
            up=t["health"] == "up",
            last_error=t.get("lastError", ""),
        )
        for t in data["activeTargets"]
    ]


def firing_alerts(prom_url: str) -> list[Alert]:
    """Alerts firing now (pending ones, still inside their ``for:``, are left out)."""
    data = _get(prom_url, "/api/v1/alerts")
    alerts = [
        Alert(
            name=a["labels"].get("alertname", ""),
            state=a["state"],
            labels={k: v for k, v in a["labels"].items() if k != "alertname"},
            active_at=a.get("activeAt"),
        )
        for a in data["alerts"]
        if a["state"] == "firing"
    ]
    return sorted(alerts, key=lambda a: (a.name, sorted(a.labels.items())))


_ALERT_META = ("__name__", "alertname", "alertstate")


def _key(labels: Mapping[str, str]) -> frozenset[tuple[str, str]]:
    return frozenset((k, v) for k, v in labels.items() if k != "__name__")


def alerts_fired_between(
    prom_url: str, start: float, end: float, *, step: float = 1.0
) -> list[AlertEvent]:
    """Every firing episode between ``start`` and ``end``, read from ``ALERTS``.

    Prometheus writes a staleness marker when an alert resolves, so a step
    without the series means "not firing": an episode ends there and the next
    point starts a new one. Sorted by ``first_seen``.
    """
    selector = 'ALERTS{alertstate="firing"}'
    series = range_query(prom_url, selector, start, end, step)
    # Range points fall on start + k*step and can predate ``end`` by up to a
    # step: whether an episode is still open is asked at ``end`` itself.
    at_end = {_key(s.labels): s.labels for s in instant(prom_url, selector, at=end)}
    events: list[AlertEvent] = []
    for s in series:
        labels = {k: v for k, v in s.labels.items() if k not in _ALERT_META}
        name = s.labels.get("alertname", "")
        times = sorted(t for t, _ in s.points)
        run_start = prev = times[0]
        for t in times[1:]:
            if t - prev > 1.5 * step:
                events.append(AlertEvent(name, labels, run_start, prev + step))
                run_start = t
            prev = t
        still = _key(s.labels) in at_end and end - prev < 1.5 * step
        events.append(AlertEvent(name, labels, run_start, None if still else prev + step))
        if still:
            del at_end[_key(s.labels)]
    for raw in at_end.values():  # began firing after the last step of the range
        labels = {k: v for k, v in raw.items() if k not in _ALERT_META}
        events.append(AlertEvent(raw.get("alertname", ""), labels, end, None))
    return sorted(events, key=lambda e: (e.first_seen, e.name))


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
    lag = _by(instant(prom_url, "sum by (topic, group) (backbone_consumer_lag)"), "topic", "group")
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
