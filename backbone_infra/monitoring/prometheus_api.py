"""The Prometheus HTTP API, read-only: readiness, queries, targets, alerts.

The local monitoring renderer waits on it, and the harness's status panel,
drills and CI snapshot ask their questions through it (:mod:`backbone_harness.observe`),
so "is Prometheus up" and "which alerts fire" mean the same everywhere. Only
the standard library is used (HTTP GET on loopback or a given URL).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backbone_infra.errors import InfraError

__all__ = [
    "Alert",
    "AlertEvent",
    "PrometheusUnavailableError",
    "Sample",
    "Series",
    "TargetHealth",
    "alerts_fired_between",
    "firing_alerts",
    "instant",
    "is_ready",
    "metric_names",
    "range_query",
    "targets",
]

_TIMEOUT_S = 5.0


class PrometheusUnavailableError(InfraError):
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
