"""The drill report: what one drill proved, and the files it is written to.

``docs/status/drills.json`` holds every drill's latest report by name (a run of
one drill replaces only its own entry); ``docs/status/drills.md`` is rendered
from it, with the machine and versions of each run. A drill run under load
(``--load``) also gets its curve across the fault, ``drill-NAME-load.png``,
beside them, linked from its section.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["AlertFired", "DrillReport", "render_markdown", "write_report"]


@dataclass(frozen=True)
class AlertFired:
    """An alert that fired during the drill, seconds after the fault."""

    name: str
    node: str | None
    time_to_fire_s: float
    resolved_after_s: float | None


@dataclass
class DrillReport:
    """One drill run. ``passed`` needs ``lost_acknowledged == 0`` and no problem."""

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
    #: The Locust load across the fault (``--load``), from
    #: :func:`backbone_harness.drills.load.summarize`; None without it.
    load: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    every[report.drill] = report.as_dict()
    path.write_text(json.dumps(every, indent=2, sort_keys=True, default=str) + "\n")
    md = out_dir / "drills.md"
    md.write_text(render_markdown(every))
    return md


def render_markdown(reports: dict[str, dict[str, Any]]) -> str:
    """The status page: one table row per drill, then each drill's details."""
    lines = [
        "# Outage drills",
        "",
        "Written by `harness drill run` (see `docs/runbooks/drills.md`); `make drills`",
        "runs every drill under load on a fresh ha stack (`harness drill run all --up",
        "--hold 10 --load`). Each row is the latest run of that drill; `lost` is",
        "acknowledged bars a reader did not find afterwards and must be 0. A drill run",
        "with `--load` links its latency and error curve across the fault.",
        "",
        "| drill | result | fault | acknowledged | lost | duplicates | unavailable s "
        "| recovery s | date |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for name in sorted(reports):
        r = reports[name]
        lines.append(
            f"| {name} | {'PASS' if r['passed'] else '**FAIL**'} | {r['fault']} on "
            f"{r['target']} | {r['acknowledged']} | {r['lost_acknowledged']} | "
            f"{r['duplicates']} | {r['unavailable_seconds']:.1f} | "
            f"{r['recovery_seconds']:.1f} | {r['date']} |"
        )
    for name in sorted(reports):
        r = reports[name]
        m = r.get("machine", {})
        lines += [
            "",
            f"## {name}",
            "",
            f"- Result: {'PASS' if r['passed'] else 'FAIL'} — {r['reason']}",
            f"- Stack `{r['stack']}`, fault: {r['fault']} on `{r['target']}`",
            f"- Acknowledged {r['acknowledged']}, found {r['stored']}, lost "
            f"{r['lost_acknowledged']}, duplicates {r['duplicates']}, found but never "
            f"acknowledged {r['stored_unacknowledged']}",
            f"- Unavailable {r['unavailable_seconds']:.2f} s (longest gap between "
            f"acknowledged writes after the fault); slowest write "
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
