"""The drill report: what one drill proved, and the files it is written to.

``docs/status/drills.json`` holds every drill's latest report per environment
(key ``NAME`` for the local process stack, ``NAME@compose`` for the compose
stack; a run of one drill replaces only its own entry, so a compose run merges
into the page beside the local column without re-running the local drills);
``docs/status/drills.md`` is rendered from it, one column per environment, with
the machine and versions of each run. A drill run under load (``--load``) also
gets its curve across the fault, ``drill-NAME-load.png``, beside them, linked
from its section.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ENV_COLUMNS",
    "AlertFired",
    "DrillReport",
    "render_markdown",
    "report_key",
    "write_report",
]

#: The environments the page shows, one column each, in this order.
ENV_COLUMNS = ("local", "compose")


@dataclass(frozen=True)
class AlertFired:
    """An alert that fired during the drill, seconds after the fault."""

    name: str
    node: str | None
    time_to_fire_s: float
    resolved_after_s: float | None


@dataclass
class DrillReport:
    """One drill run. ``passed`` needs nothing lost, nothing stored twice and no
    problem: correctness only. How long writes stopped is judged apart
    (:attr:`within_budget`), so a test can assert ``passed`` without asserting a
    duration, while ``harness drill run`` fails on either."""

    drill: str
    stack: str
    fault: str
    target: str
    date: str
    acknowledged: int = 0
    stored: int = 0
    lost_acknowledged: int = 0
    duplicates: int = 0
    stored_unacknowledged: int = 0
    #: Longest time after the fault with no acknowledged write, seconds.
    unavailable_seconds: float = 0.0
    #: The drill's ceiling on ``unavailable_seconds`` (None: none, the fault stops writes).
    unavailable_budget_s: float | None = None
    #: Fault to the stack being back as found (node restarted, roles healthy).
    recovery_seconds: float = 0.0
    failed_writes: int = 0
    slowest_write_s: float = 0.0
    alerts: list[AlertFired] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    passed: bool = False
    reason: str = ""
    write_errors: list[str] = field(default_factory=list)
    lost_examples: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    #: Where it ran (``local`` processes or ``compose`` containers) and the stack size.
    environment: str = "local"
    size: str = ""
    #: False when the environment cannot make the drill's fault; ``reason`` says why.
    applicable: bool = True
    #: The Locust load across the fault (``--load``), from
    #: :func:`backbone_harness.drills.load.summarize`; None without it.
    load: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def within_budget(self) -> bool:
        """Writes stopped no longer than the drill's ceiling (true without one)."""
        budget = self.unavailable_budget_s
        return budget is None or self.unavailable_seconds <= budget

    @property
    def failed(self) -> bool:
        """Ran and lost, doubled, broke something or stopped writes over its
        ceiling (a drill not applicable here is no failure)."""
        return self.applicable and not (self.passed and self.within_budget)


def report_key(drill: str, environment: str) -> str:
    """The report's key in ``drills.json``: the name alone for local (as before)."""
    return drill if environment == "local" else f"{drill}@{environment}"


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_report(report: DrillReport, out_dir: Path) -> Path:
    """Merge ``report`` into ``drills.json`` and re-render ``drills.md``; the .md path.

    A report with a load curve gets its PNG written beside them (``report.load["plot"]``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if report.load and report.load.get("timeline"):
        from backbone_harness.load.plots import plot_fault_window

        marks = {k: report.load[k] for k in ("fault_start_s", "fault_end_s", "recovered_s")}
        title = (
            f"{report.drill} under load: {report.load['users']} users "
            f"({report.load['profile']}), {report.fault} on {report.target}"
        )
        plot_fault_window(report.load["timeline"], marks, out_dir / report.load["plot"], title)
    path = out_dir / "drills.json"
    every = _load(path)
    every[report_key(report.drill, report.environment)] = report.as_dict()
    path.write_text(json.dumps(every, indent=2, sort_keys=True, default=str) + "\n")
    md = out_dir / "drills.md"
    md.write_text(render_markdown(every))
    return md


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "not run"
    if not r.get("applicable", True):
        return "n/a"
    size = f" ({r['size']})" if r.get("size") else ""
    return (
        f"{_verdict_word(r)}{size}: {r['acknowledged']} acked, "
        f"{r['lost_acknowledged']} lost, {r['duplicates']} dup, "
        f"{r['unavailable_seconds']:.1f} s unavailable, {r['recovery_seconds']:.1f} s to recover"
    )


def _over_budget(r: dict[str, Any]) -> bool:
    budget = r.get("unavailable_budget_s")
    return budget is not None and r["unavailable_seconds"] > budget


def _verdict_word(r: dict[str, Any]) -> str:
    if not r["passed"]:
        return "**FAIL**"
    return "**OVER CEILING**" if _over_budget(r) else "PASS"


def _budget(r: dict[str, Any]) -> str:
    budget = r.get("unavailable_budget_s")
    return "no ceiling: the fault stops writes" if budget is None else f"ceiling {budget:g} s"


def _by_drill(reports: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """drill -> environment -> report (entries of older runs carry no environment: local)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for key, r in reports.items():
        name, _, env = key.partition("@")
        out.setdefault(name, {})[env or r.get("environment", "local")] = r
    return out


def _details(name: str, env: str, r: dict[str, Any]) -> list[str]:
    m = r.get("machine", {})
    if not r.get("applicable", True):
        return ["", f"## {name} — {env}", "", f"- {r['reason']}"]
    lines = [
        "",
        f"## {name} — {env}",
        "",
        f"- Result: {_verdict_word(r).strip('*')} — {r['reason']}",
        f"- Stack `{r['stack']}` ({env}{', ' + r['size'] if r.get('size') else ''}), "
        f"fault: {r['fault']} on `{r['target']}`, {r['date']}",
        f"- Acknowledged {r['acknowledged']}, found {r['stored']}, lost "
        f"{r['lost_acknowledged']}, duplicates {r['duplicates']}, found but never "
        f"acknowledged {r['stored_unacknowledged']}",
        f"- Unavailable {r['unavailable_seconds']:.2f} s (longest gap between "
        f"acknowledged writes after the fault; {_budget(r)}); slowest write "
        f"{r['slowest_write_s']:.2f} s; failed writes {r['failed_writes']}; back as "
        f"found after {r['recovery_seconds']:.2f} s",
    ]
    for key, value in sorted(r.get("figures", {}).items()):
        lines.append(f"- {key}: {value}")
    alerts = r.get("alerts", [])
    if alerts:
        lines.append("- Alerts fired: " + ", ".join(
            f"{a['name']}{'(' + a['node'] + ')' if a.get('node') else ''} after "
            f"{a['time_to_fire_s']:.0f} s" for a in alerts))  # fmt: skip
    else:
        lines.append("- Alerts fired: none during the drill window")
    lines += _load_lines(r.get("load"))
    if r.get("write_errors"):
        lines.append(f"- First write errors: `{r['write_errors'][0]}`")
    if r.get("lost_examples"):
        lines.append(f"- Lost keys (first): {', '.join(r['lost_examples'])}")
    lines.append(
        f"- Machine: {m.get('cores')} cores, {m.get('memory_gib')} GiB, kernel "
        f"{m.get('kernel')}; versions: "
        + ", ".join(f"{k} {v}" for k, v in sorted(r.get("versions", {}).items()))
    )
    return lines


def render_markdown(reports: dict[str, dict[str, Any]]) -> str:
    """The status page: one row per drill with a column per environment, then details."""
    by_drill = _by_drill(reports)
    lines = [
        "# Outage drills",
        "",
        "Written by `harness drill run` (see `docs/runbooks/drills.md`); `make drills`",
        "runs every drill under load on a fresh local ha stack (`harness drill run all",
        "--up --hold 10 --load`). A drill run with `--load` links its latency and error",
        "curve across the fault. Each cell is",
        "the latest run of that drill in that environment: `local` is the process",
        "stack on loopback (`--env local`), `compose` the project's images on podman",
        "(`--env compose`). `lost` is acknowledged bars a reader did not find",
        "afterwards and must be 0; `n/a`: the environment cannot make that fault",
        "(the details say why). A run in one environment replaces only its own cells.",
        "",
        "| drill | fault | " + " | ".join(ENV_COLUMNS) + " |",
        "|---|---|" + "---|" * len(ENV_COLUMNS),
    ]
    for name in sorted(by_drill):
        runs = by_drill[name]
        any_run = next(iter(runs.values()))
        fault = next(
            (r["fault"] for r in runs.values() if r.get("applicable", True)), any_run["fault"]
        )
        lines.append(
            f"| {name} | {fault} | "
            + " | ".join(_cell(runs.get(env)) for env in ENV_COLUMNS)
            + " |"
        )
    for name in sorted(by_drill):
        for env in ENV_COLUMNS:
            if env in by_drill[name]:
                lines += _details(name, env, by_drill[name][env])
    return "\n".join(lines) + "\n"


def _load_lines(load: dict[str, Any] | None) -> list[str]:
    """The drill's load across the fault: one row per profile and phase, and the plot."""
    if not load:
        return []
    lines = [
        f"- Under load: {load['users']} Locust users ({load['profile']}), "
        f"{load['requests']} requests, {load['failures']} failed; fault from "
        f"{load['fault_start_s']:.1f} s to {load['fault_end_s']:.1f} s of the load run, "
        f"stack back as found at {load['recovered_s']:.1f} s",
        "",
        "  | profile | phase | s | requests/s | failures/s | p50 ms | p95 ms | p99 ms | max ms |",
        "  |---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, phases in sorted(load.get("phases", {}).items()):
        for phase in ("before", "during", "after"):
            f = phases.get(phase)
            if f is None:
                continue
            lines.append(
                f"  | {kind} | {phase} | {f['seconds']} | {f['requests_per_s']} | "
                f"{f['failures_per_s']} | {f['p50_ms']} | {f['p95_ms']} | {f['p99_ms']} | "
                f"{f.get('max_ms')} |"
            )
    lines += ["", f"  ![{load['plot']}]({load['plot']})", ""]
    return lines
