"""``docs/status/sprint-close.md``: before/after for what the sprint's brief named.

"Before" is Tier 0 alone: embedded DuckDB, an in-process cache and event bus, no
Redis, no Kafka, no Prometheus, no drills. "After" quotes the measured status
pages beside this file (``performance.json``, ``ci_health.json``,
``drills.json``, ``load.json``), so regenerating the page after a new run of any
of them updates it. Every row links to the test or drill that proves it; a link
to a file or test that does not exist is an error here, not a dead link there.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backbone_harness.errors import HarnessError, UsageError

__all__ = ["MissingProofError", "Proof", "Row", "build_rows", "render", "write_sprint_close"]

_REPO = Path(__file__).resolve().parents[2]
_PAGES = ("performance", "ci_health", "drills", "load")


class MissingProofError(HarnessError):
    """A row names a test or file that is not in the repository."""


@dataclass(frozen=True)
class Proof:
    """A file in the repository, optionally one test function in it."""

    path: str
    test: str | None = None

    def check(self, repo: Path) -> None:
        target = repo / self.path
        if not target.exists():
            raise MissingProofError(f"{self.path} does not exist; fix the sprint-close proof list")
        if self.test and not re.search(rf"^def {re.escape(self.test)}\(", target.read_text(), re.M):
            raise MissingProofError(
                f"{self.path} has no test {self.test}; fix the sprint-close proof list"
            )

    def link(self, repo: Path, page_dir: Path) -> str:
        rel = os.path.relpath(repo / self.path, page_dir)
        label = f"{self.path}::{self.test}" if self.test else self.path
        return f"[`{label}`]({rel})"


@dataclass(frozen=True)
class Row:
    item: str
    before: str
    after: str
    proofs: tuple[Proof, ...]


def _load(status: Path) -> dict[str, Any]:
    pages: dict[str, Any] = {}
    for name in _PAGES:
        path = status / f"{name}.json"
        pages[name] = json.loads(path.read_text()) if path.is_file() else {}
    return pages


def _date(page: dict[str, Any]) -> str:
    """When a page was measured (``drills.json`` dates each drill: the latest)."""
    found = page.get("date") or page.get("generated_at")
    if found:
        return str(found)
    dates = [str(v["date"]) for v in page.values() if isinstance(v, dict) and v.get("date")]
    return max(dates) if dates else "undated"


def _n(value: Any) -> str:
    return f"{value:,.0f}" if isinstance(value, (int, float)) else "not measured"


def _stack_values(health: dict[str, Any], field: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stack in health.get("stacks", []):
        for key, value in (stack.get(field) or {}).items():
            out[f"{stack.get('stack', '?')}: {key}"] = value
    return out


def _health_rows(health: dict[str, Any]) -> list[Row]:
    fresh = _stack_values(health, "freshness")
    cache = _stack_values(health, "cache")
    lag = _stack_values(health, "consumer_lag")
    # Test data of past or far-future dates is "stale" by design; the live series
    # are the ones written during the run (under an hour behind at its end).
    live = sorted(
        v["last"] for v in fresh.values() if v.get("last") is not None and v["last"] < 3600
    )
    ratios = [f"{k} {v['ratio']:.0%} ({_n(v['hits'])} hits / {_n(v['misses'])} misses)"
              for k, v in cache.items() if v.get("ratio") is not None]  # fmt: skip
    worst_lag = max((v.get("max", 0) for v in lag.values()), default=None)
    snapshot = Proof("docs/status/ci_health.md")
    collector = Proof("tests/integration/conftest.py")
    metrics = Proof(
        "tests/integration/test_monitoring.py",
        "test_ingest_metrics_reach_prometheus_and_the_status_panel",
    )
    none = "not observable: no Prometheus, nothing exported"
    return [
        Row("Freshness in the CI health snapshot", none,
            f"{len(fresh)} series tracked; {len(live)} written live, "
            f"{_n(live[0]) if live else '—'} to {_n(live[-1]) if live else '—'} s behind "
            "at the end (the rest are historic test data)"
            if fresh else "not measured (run the integration tests)",
            (snapshot, collector, Proof("tests/unit/test_telemetry.py",
             "test_freshness_is_now_minus_the_latest_stored_bar_at_scrape_time"))),
        Row("Cache hit ratio in the CI health snapshot", none,
            "; ".join(ratios) or "not measured (run the integration tests)",
            (snapshot, collector, metrics)),
        Row("Consumer lag in the CI health snapshot", none + " (no Kafka)",
            f"{len(lag)} topic/group pairs tracked; max lag {_n(worst_lag)} records, "
            f"last {_n(max((v.get('last', 0) for v in lag.values()), default=None))}"
            if lag else "not measured (run the integration tests)",
            (snapshot, collector, metrics)),
    ]  # fmt: skip


def _drill_rows(drills: dict[str, Any], repo: Path) -> list[Row]:
    runbooks = sorted(
        p.name for p in (repo / "docs/runbooks").glob("*.md") if p.name != "drills.md"
    )
    passed = [d for d in drills.values() if d.get("passed")]
    lost = sum(d.get("lost_acknowledged", 0) for d in drills.values())
    acked = sum(d.get("acknowledged", 0) for d in drills.values())
    detail = "; ".join(
        f"`{name}`: {_n(d.get('acknowledged'))} acknowledged, {d.get('lost_acknowledged')} lost, "
        f"recovered in {d.get('recovery_seconds')} s" for name, d in sorted(drills.items())
    )  # fmt: skip
    return [
        Row("Runbooks", "none (nothing to alert on)",
            f"{len(runbooks)} runbooks, one per alert rule, each linked from its rule",
            (Proof("docs/runbooks/RedisDown.md"), Proof("tests/unit/test_alert_rules.py",
             "test_every_alert_has_a_window_severity_text_and_runbook"))),
        Row("Outage drills", "none (no services to fail)",
            f"{len(passed)} of {len(drills)} drills passed; {_n(acked)} acknowledged bars, "
            f"{lost} lost. {detail}" if drills else "not measured (run `harness drill run all`)",
            (Proof("docs/status/drills.md"), Proof("docs/runbooks/drills.md"),
             Proof("tests/integration/test_drills.py",
                   "test_killing_the_partition_leader_during_acks_all_produce_loses_no_acknowledged_bar"))),
    ]  # fmt: skip


def build_rows(pages: dict[str, Any], repo: Path = _REPO) -> list[Row]:
    """The table's rows from the loaded status pages (missing pages say so in the row)."""
    perf, drills, load = pages["performance"], pages["drills"], pages["load"]
    t0 = perf.get("tier0", {})
    e2e = perf.get("end_to_end", {})
    cache = perf.get("cache", {})
    redis_drill = drills.get("redis-primary-kill", {}).get("figures", {})
    kafka_drill = drills.get("kafka-leader-kill", {})
    tier0_rate = f"Tier 0 ingest {_n(t0.get('bars_per_s'))} bars/s"
    rows = [
        Row("Redis stubs replaced by a real Redis cache",
            "in-process dictionary cache: one process, lost on restart",
            f"read-through Redis (Sentinel on `ha`): `latest()` {_n(cache.get('latest_per_s'))} "
            f"reads/s on a hit; primary killed: cache followed in "
            f"{redis_drill.get('cache_followed_after_s', 'not measured')} s, "
            f"{redis_drill.get('read_failures', 'not measured')} failed reads",
            (Proof("tests/integration/test_redis_cache.py",
                   "test_reads_fall_back_to_the_store_while_redis_is_down_and_warm_up_after"),
             Proof("tests/integration/test_drills.py",
                   "test_killing_the_redis_primary_reads_never_fail_and_the_cache_follows_sentinel"))),
        Row("Kafka streaming to the runtime bus",
            f"in-process bus only, no Kafka ({tier0_rate})",
            f"Kafka (acks=all) → consumer group → PostgreSQL → Redis → bus: "
            f"{_n(e2e.get('bars_per_s'))} bars/s end to end, reconciles: "
            f"{e2e.get('reconciles', 'not measured')}; leader killed: "
            f"{kafka_drill.get('lost_acknowledged', 'not measured')} acknowledged bars lost",
            (Proof("tests/integration/test_streaming.py",
                   "test_ingest_flows_through_kafka_to_store_cache_and_bus"),
             Proof("docs/status/performance.md"))),
        Row("The tier toggle", "Tier 0 only; nothing to switch to",
            "`--tier`, `BACKBONE_TIER`/`DATA_BACKBONE_MODE` or `data_backbone_mode` choose; "
            "switching runs validation hooks and refuses on every failing required check "
            "(Redis is degradable unless `--require-cache`)",
            (Proof("tests/unit/test_tiers.py",
                   "test_switch_refuses_only_on_required_failures_naming_each_and_no_secret"),
             Proof("tests/integration/test_redis_cache.py",
                   "test_tier_toggle_with_redis_paused_degrades_and_refuses_only_with_require_cache"))),
        *_health_rows(pages["ci_health"]),
        *_drill_rows(drills, repo),
    ]  # fmt: skip
    locust = load.get("locust", {})
    if locust:
        rows.append(Row(
            "Load (Locust, for reference)", "not measured: no services",
            f"{_n(locust.get('requests'))} requests, {_n(locust.get('failures'))} failures "
            f"with {locust.get('users')} users over {locust.get('run_seconds')} s",
            (Proof("tests/integration/test_load.py"), Proof("docs/status/load.md")),
        ))  # fmt: skip
    for row in rows:
        for proof in row.proofs:
            proof.check(repo)
    return rows


def render(rows: list[Row], pages: dict[str, Any], page_dir: Path, repo: Path = _REPO) -> str:
    """The Markdown page; links are relative to ``page_dir``."""
    sources = ", ".join(
        f"`{name}.json` ({_date(pages[name])})" if pages[name] else f"`{name}.json` (missing)"
        for name in _PAGES
    )
    lines = [
        "# Sprint close: the gap, before and after",
        "",
        "Generated by `harness bench sprint-close` from the measured status pages beside "
        f"this file: {sources}. Regenerate it after any of them changes.",
        "",
        "**Before** is Tier 0 alone: embedded DuckDB, an in-process cache and event bus; "
        "no Redis, no Kafka, no Prometheus, no drills. **After** is what the pages measured "
        "on the Tier 1 stacks.",
        "",
        "| what the brief named | before (Tier 0 alone) | after (measured) | proved by |",
        "| --- | --- | --- | --- |",
    ]
    for row in rows:
        links = "<br>".join(p.link(repo, page_dir) for p in row.proofs)
        lines.append(f"| {row.item} | {row.before} | {row.after} | {links} |")
    lines.append("")
    return "\n".join(lines)


def write_sprint_close(status: Path, output: Path, repo: Path = _REPO) -> Path:
    """Read ``status/*.json``, write the page to ``output``; returns its path."""
    if not status.is_dir():
        raise UsageError(f"--status {status} is not a folder of status pages; pass --status DIR")
    pages = _load(status)
    page_dir = output.resolve().parent
    text = render(build_rows(pages, repo), pages, page_dir, repo)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    return output
