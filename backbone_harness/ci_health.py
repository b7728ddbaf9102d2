"""The CI health snapshot: what a stack's Prometheus recorded during a test run.

``ci_health.md`` and its JSON twin ``ci_health.json`` are written at the end of
the integration tests (``tests/integration/conftest.py``) from the local
stacks' Prometheus: ingest freshness, cache hit rate, Kafka consumer lag, dead
letters, and every alert that fired (with when it fired and resolved). All
queries go through :mod:`backbone_harness.observe`.

The snapshot is an *output*: a test run writes it to ``build/status/`` (ignored
by git), and the committed ``docs/status/ci_health.md`` changes only when
someone runs ``make ci-health-publish`` (``python -m backbone_harness.ci_health publish``).
Each figure is checked against :data:`THRESHOLDS` (the alert rules' lines) and
marked pass or fail. Series of the test suite's own throw-away symbols (anything
outside :data:`backbone.bars.FX_SYMBOLS`) are counted, not listed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backbone.bars import FX_SYMBOLS
from backbone_harness import observe
from backbone_infra.paths import project_home

__all__ = [
    "PUBLISHED_DIR",
    "STATUS_DIR",
    "THRESHOLDS",
    "StackWindow",
    "checks",
    "collect",
    "publish",
    "render_markdown",
    "write_snapshot",
]

_REPO = project_home()
#: Where a test run writes the snapshot (ignored by git); ``HARNESS_STATUS_DIR`` overrides it.
STATUS_DIR = Path(os.environ.get("HARNESS_STATUS_DIR") or _REPO / "build" / "status")
#: The committed copy, refreshed only by :func:`publish`.
PUBLISHED_DIR = _REPO / "docs" / "status"
_FILES = ("ci_health.md", "ci_health.json")

#: Pass/fail lines per figure, the same as the alert rules'
#: (``backbone_infra/monitoring/rules.yml``).
THRESHOLDS: dict[str, float] = {
    #: Newest intraday bar at most three 1m widths plus 15 minutes old (IngestDataStaleIntraday).
    "freshness_intraday_s": 3 * 60 + 900,
    #: Newest daily bar at most four days old (IngestDataStaleDaily).
    "freshness_daily_s": 4 * 86400,
    #: Cache hit rate at least 50 % (CacheHitRatioLow).
    "cache_hit_ratio_min": 0.5,
    #: Lag at the end of the window at most 10,000 records (ConsumerLagHighAndGrowing).
    "consumer_lag_last_max": 10_000,
}


def _is_test_symbol(series: str) -> bool:
    """``"EURUSD.13ED 1m"`` is a test's throw-away symbol; ``"EURUSD 1m"`` is not."""
    return series.split(" ", 1)[0] not in FX_SYMBOLS


def checks(window: StackWindow) -> list[dict[str, Any]]:
    """Every figure of ``window`` against :data:`THRESHOLDS`: what, value, line, ok."""
    out: list[dict[str, Any]] = []
    for series, v in sorted(window.freshness.items()):
        if _is_test_symbol(series):
            continue
        daily = series.endswith(" 1d")
        line = THRESHOLDS["freshness_daily_s" if daily else "freshness_intraday_s"]
        out.append(_check(f"freshness {series}", v["last"], f"<= {_age(line)}", v["last"] <= line))
    for name, c in sorted(window.cache.items()):
        line = THRESHOLDS["cache_hit_ratio_min"]
        if c["hits"] + c["misses"]:
            out.append(
                _check(f"cache hit rate {name}", c["ratio"], f">= {line:.0%}", c["ratio"] >= line)
            )
    for name, lag in sorted(window.consumer_lag.items()):
        line = THRESHOLDS["consumer_lag_last_max"]
        out.append(
            _check(f"consumer lag {name}", lag["last"], f"<= {line:.0f}", lag["last"] <= line)
        )
    return out


def _check(what: str, value: float, line: str, ok: bool) -> dict[str, Any]:
    return {"figure": what, "value": value, "threshold": line, "ok": ok}


@dataclass
class StackWindow:
    """One stack's figures over ``[start, end]`` (unix seconds)."""

    stack: str
    prometheus_url: str
    start: float
    end: float
    #: "symbol timeframe" -> {"last": s, "max": s} freshness in seconds.
    freshness: dict[str, dict[str, float]] = field(default_factory=dict)
    #: "namespace (backing)" -> {"hits": n, "misses": n, "ratio": r}.
    cache: dict[str, dict[str, float]] = field(default_factory=dict)
    #: "topic / group" -> {"max": n, "last": n} records behind.
    consumer_lag: dict[str, dict[str, float]] = field(default_factory=dict)
    #: reason -> records dead-lettered.
    dead_letters: dict[str, float] = field(default_factory=dict)
    records_in: float = 0.0
    rows_written: float = 0.0
    alerts: list[dict[str, Any]] = field(default_factory=list)
    #: Free-form lines a test adds (e.g. a drill's fault times).
    notes: list[str] = field(default_factory=list)


def _at_end(url: str, expr: str, end: float) -> list[observe.Sample]:
    return observe.instant(url, expr, at=end)


def collect(stack: str, prometheus_url: str, start: float, end: float | None = None) -> StackWindow:
    """Query ``prometheus_url`` for the figures of ``stack`` between ``start`` and ``end``."""
    end = time.time() if end is None else end
    window = f"{max(1, int(end - start) + 1)}s"
    out = StackWindow(stack, prometheus_url, start, end)
    fresh_last = {
        f"{s.labels.get('symbol')} {s.labels.get('timeframe')}": s.value
        for s in _at_end(
            prometheus_url, f"last_over_time(backbone_ingest_freshness_seconds[{window}])", end
        )
    }  # fmt: skip
    for s in _at_end(
        prometheus_url, f"max_over_time(backbone_ingest_freshness_seconds[{window}])", end
    ):
        key = f"{s.labels.get('symbol')} {s.labels.get('timeframe')}"
        out.freshness[key] = {"last": fresh_last.get(key, s.value), "max": s.value}

    # Counters are cumulative within one process, so the window's highest value is its total.
    def totals(metric: str, *by: str) -> dict[tuple[str, ...], float]:
        expr = f"sum by ({', '.join(by)}) (max_over_time({metric}[{window}]))"
        return {
            tuple(s.labels.get(b, "") for b in by): s.value
            for s in _at_end(prometheus_url, expr, end)
        }

    hits = totals("backbone_cache_hits_total", "namespace", "backing")
    misses = totals("backbone_cache_misses_total", "namespace", "backing")
    for pair in sorted(set(hits) | set(misses)):
        h, m = hits.get(pair, 0.0), misses.get(pair, 0.0)
        out.cache[f"{pair[0]} ({pair[1]})"] = {
            "hits": h,
            "misses": m,
            "ratio": h / (h + m) if h + m else 0.0,
        }
    lag_sum = "sum by (topic, group) (backbone_consumer_lag)"
    lag_last = {
        (s.labels.get("topic", ""), s.labels.get("group", "")): s.value
        for s in _at_end(prometheus_url, f"last_over_time(({lag_sum})[{window}:1s])", end)
    }
    for s in _at_end(prometheus_url, f"max_over_time(({lag_sum})[{window}:1s])", end):
        topic_group = (s.labels.get("topic", ""), s.labels.get("group", ""))
        out.consumer_lag[f"{topic_group[0]} / {topic_group[1]}"] = {
            "max": s.value,
            "last": lag_last.get(topic_group, s.value),
        }
    out.dead_letters = {k[0]: v for k, v in totals("backbone_dead_letter_total", "reason").items()}
    out.records_in = sum(totals("backbone_records_in_total", "source").values())
    out.rows_written = sum(totals("backbone_rows_written_total", "store").values())
    for event in observe.alerts_fired_between(prometheus_url, start, end):
        if event.name == "Watchdog":  # always firing by design: not news
            continue
        out.alerts.append(
            {
                "alert": event.name,
                "severity": event.labels.get("severity", ""),
                "where": event.labels.get("node") or event.labels.get("instance") or "",
                "fired_after_s": round(event.first_seen - start, 1),  # from the window start
                "first_seen": _iso(event.first_seen),
                "resolved_at": _iso(event.resolved_at) if event.resolved_at else None,
            }
        )
    return out


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _table(header: Sequence[str], rows: list[str], empty: str) -> list[str]:
    """A Markdown table of ``rows`` under ``header``, or the ``empty`` sentence."""
    if not rows:
        return [empty]
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows]


def render_markdown(windows: Sequence[StackWindow], *, generated_at: float) -> str:
    """The snapshot as Markdown: one section per stack."""
    lines = [
        "# CI health snapshot",
        "",
        f"Generated {_iso(generated_at)} by the integration tests "
        "(`tests/integration/conftest.py`) from the local stacks' Prometheus. "
        "Every `make test` writes it to `build/status/`; this copy changes only with "
        "`make ci-health-publish`. Queries: `backbone_harness/observe.py`; thresholds: "
        "`THRESHOLDS` in `backbone_harness/ci_health.py` (the alert rules' lines).",
    ]
    for w in windows:
        lines += ["", f"## Stack `{w.stack}`", ""]
        lines.append(
            f"Window {_iso(w.start)} → {_iso(w.end)} ({w.end - w.start:.0f} s); "
            f"records in: {w.records_in:.0f}, rows written: {w.rows_written:.0f}."
        )
        verdicts = {c["figure"]: c for c in checks(w)}
        failed = [c for c in verdicts.values() if not c["ok"]]
        lines.append(
            f"Checks: {len(verdicts) - len(failed)} of {len(verdicts)} figures pass"
            + (f"; **failing: {', '.join(c['figure'] for c in failed)}**." if failed else ".")
        )
        lines += ["", "### Ingest freshness", ""]
        real = {k: v for k, v in w.freshness.items() if not _is_test_symbol(k)}
        lines += _table(
            ("symbol timeframe", "last", "worst", "threshold", "result"),
            [
                f"| {k} | {_age(v['last'])} | {_age(v['max'])} | "
                f"{_verdict(verdicts.get(f'freshness {k}'))} |"
                for k, v in sorted(real.items())
            ],
            "No ingest of the FX universe reported freshness in this window.",
        )
        hidden = len(w.freshness) - len(real)
        if hidden:
            lines += ["", f"({hidden} series of the tests' throw-away symbols not listed.)"]
        lines += ["", "### Cache hit rate", ""]
        lines += _table(
            ("namespace", "hits", "misses", "hit rate", "threshold", "result"),
            [
                f"| {k} | {v['hits']:.0f} | {v['misses']:.0f} | {v['ratio']:.1%} | "
                f"{_verdict(verdicts.get(f'cache hit rate {k}'))} |"
                for k, v in sorted(w.cache.items())
            ],
            "No cache lookups in this window.",
        )
        lines += ["", "### Kafka consumer lag", ""]
        lines += _table(
            ("topic / group", "worst", "last", "threshold", "result"),
            [
                f"| {k} | {v['max']:.0f} | {v['last']:.0f} | "
                f"{_verdict(verdicts.get(f'consumer lag {k}'))} |"
                for k, v in sorted(w.consumer_lag.items())
            ],
            "No consumer reported lag in this window.",
        )
        lines += ["", "### Dead letters", ""]
        if w.dead_letters:
            lines += [f"- {reason}: {n:.0f}" for reason, n in sorted(w.dead_letters.items())]
        else:
            lines.append("None.")
        lines += ["", "### Alerts that fired", ""]
        lines += _table(
            ("alert", "severity", "where", "fired (s after the window began)", "resolved"),
            [
                f"| {a['alert']} | {a['severity']} | {a['where']} | {a['fired_after_s']} | "
                f"{a['resolved_at'] or 'still firing'} |"
                for a in w.alerts
            ],
            "None.",
        )
        if w.notes:
            lines += ["", "### Notes", ""] + [f"- {n}" for n in w.notes]
    return "\n".join(lines) + "\n"


def _verdict(check: dict[str, Any] | None) -> str:
    if check is None:
        return "- | -"
    return f"{check['threshold']} | {'pass' if check['ok'] else '**FAIL**'}"


def write_snapshot(
    windows: Sequence[StackWindow], directory: Path | None = None
) -> tuple[Path, Path]:
    """Write ``ci_health.md`` and ``ci_health.json``; returns both paths."""
    target = directory or STATUS_DIR
    target.mkdir(parents=True, exist_ok=True)
    now = time.time()
    md = target / "ci_health.md"
    js = target / "ci_health.json"
    md.write_text(render_markdown(windows, generated_at=now))
    doc = {
        "generated_at": _iso(now),
        "thresholds": THRESHOLDS,
        "stacks": [{**asdict(w), "checks": checks(w)} for w in windows],
    }
    js.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return md, js


def publish(source: Path | None = None, target: Path = PUBLISHED_DIR) -> list[Path]:
    """Copy the last run's snapshot into ``docs/status`` (the committed copy)."""
    source = source or STATUS_DIR
    missing = [name for name in _FILES if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"no CI health snapshot in {source} ({', '.join(missing)} missing); run the "
            "integration tests first (`make test`), then `make ci-health-publish`"
        )
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in _FILES:
        (target / name).write_text((source / name).read_text())
        written.append(target / name)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m backbone_harness.ci_health publish``: refresh the committed snapshot."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["publish"]:
        print(
            "usage: python -m backbone_harness.ci_health publish  (copies build/status/ci_health.* "
            "to docs/status/)",
            file=sys.stderr,
        )
        return 2
    try:
        for path in publish():
            print(path)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
