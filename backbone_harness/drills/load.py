"""The runner's load hook: the project's Locust load across a drill's fault window.

``harness drill run NAME --load`` runs the load test (``python -m
backbone_harness.load``, read and produce profiles, in its own process, as
``harness load run`` does) from before the fault until the drill's tail is
over, then stops it with SIGTERM (the run prints its result, as at its time
bound). :func:`summarize` cuts its per-second timeline at the fault marks
(fault injected, fault lifted, stack back as found) into *before*, *during*
and *after* phases: requests/s, failures/s and p50/p95/p99 per profile, the
percentiles exact over each phase (the intervals' response-time histograms
added up). The drill's own writer and reader are untouched: its verdict
(acknowledged against stored) is the same with or without the load.

A drill that routes its own clients through a faulted path (the network
drills) says so with :meth:`~backbone_harness.drills.base.Drill.load_outputs`,
and the load's clients take the same path.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backbone_harness.load import SPAWNED_LINE
from backbone_harness.load.histogram import histogram_percentile

__all__ = ["PHASES", "DrillLoad", "LoadOptions", "plot_name", "summarize"]

#: The phases of a drill under load, cut at the fault marks.
PHASES = ("before", "during", "after")
#: Seconds of load (every user spawned) before the fault, as the baseline.
BASELINE_S = 5.0
#: Upper bound of one load run; the drill ends it much sooner with SIGTERM.
MAX_LOAD_S = 1800
#: Seconds the load process gets to start its users, and to print its result.
SPAWN_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 90.0


def plot_name(drill: str) -> str:
    """The PNG of ``drill``'s load curve, beside its report."""
    return f"drill-{drill}-load.png"


@dataclass(frozen=True)
class LoadOptions:
    """What load runs across the fault (``harness drill run --load``)."""

    users: int = 4
    spawn_rate: float = 4.0
    #: ``produce``, ``read`` or ``both`` (the load test's profiles).
    profile: str = "both"
    hit_ratio: float = 0.9


class DrillLoad:
    """One Locust run in a child process, started before the fault, stopped after it."""

    def __init__(self, options: LoadOptions, outputs: Path, logs: Path) -> None:
        self.options = options
        self.outputs = outputs
        self.stdout = logs / "load.json"
        self.stderr = logs / "load.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.spawned_at: float | None = None

    def start(self) -> None:
        """Start the load and wait until every user is spawned (monotonic time kept)."""
        o = self.options
        cmd = [
            sys.executable, "-m", "backbone_harness.load", "--outputs", str(self.outputs),
            "--users", str(o.users), "--spawn-rate", str(o.spawn_rate),
            "--seconds", str(MAX_LOAD_S), "--profile", o.profile,
            "--hit-ratio", str(o.hit_ratio), "--histograms",
        ]  # fmt: skip
        self.stdout.parent.mkdir(parents=True, exist_ok=True)
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self._process = subprocess.Popen(cmd, stdout=out, stderr=err)
        deadline = time.monotonic() + SPAWN_TIMEOUT_S
        while time.monotonic() < deadline:
            if SPAWNED_LINE in self.stderr.read_text(errors="replace"):
                self.spawned_at = time.monotonic()
                return
            if self._process.poll() is not None:
                break
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(
            f"the drill's load did not spawn its users within {SPAWN_TIMEOUT_S:.0f}s: "
            f"{self._tail()}; see {self.stderr}"
        )

    def wait_baseline(self) -> None:
        """Sleep until the load has run :data:`BASELINE_S` with every user."""
        if self.spawned_at is not None:
            time.sleep(max(0.0, self.spawned_at + BASELINE_S - time.monotonic()))

    def stop(self) -> dict[str, Any]:
        """End the run (SIGTERM) and return its result (the LoadResult as a dict)."""
        process = self._process
        if process is None:
            raise RuntimeError("DrillLoad.stop() before start()")
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(
                f"the drill's load did not stop within {STOP_TIMEOUT_S:.0f}s of SIGTERM; "
                f"see {self.stderr}"
            ) from None
        self._process = None
        if code != 0:
            raise RuntimeError(f"the drill's load failed (exit {code}): {self._tail()}")
        result: dict[str, Any] = json.loads(self.stdout.read_text())
        return result

    def kill(self) -> None:
        """Stop the child at once (after a failed drill); never raises."""
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(Exception):
                self._process.kill()
                self._process.wait(10)
        self._process = None

    def _tail(self) -> str:
        try:
            return self.stderr.read_text(errors="replace").strip()[-400:]
        except OSError:
            return "(no log)"


def _phase_of(t_mid: float, marks: Mapping[str, float]) -> str:
    if t_mid < marks["fault_start_s"]:
        return "before"
    if t_mid < marks["fault_end_s"]:
        return "during"
    return "after"


def summarize(
    result: Mapping[str, Any],
    *,
    fault_start: float,
    fault_end: float,
    recovered: float,
    options: LoadOptions,
    plot: str,
) -> dict[str, Any]:
    """The drill report's ``load`` section from a load run's ``result``.

    ``fault_start``/``fault_end``/``recovered`` are wall-clock times (epoch s)
    of the fault injected, lifted, and the stack back as found; they become
    seconds on the run's own timeline (``*_s`` marks). Each timeline interval
    belongs to the phase its midpoint falls in: *during* is the fault itself
    (injected to lifted), *after* the recovery and the tail.
    """
    began = float(result["started_at"])
    # Intervals are placed against the exact offsets; the report shows them rounded
    # (placing against rounded marks moved an interval whose midpoint lay within
    # 0.005 s of a mark into the wrong phase).
    exact = {
        "fault_start_s": fault_start - began,
        "fault_end_s": fault_end - began,
        "recovered_s": recovered - began,
    }
    marks = {name: round(offset, 2) for name, offset in exact.items()}
    rows: Sequence[dict[str, Any]] = result.get("timeline") or []
    kinds = sorted({k[: -len("_requests")] for r in rows for k in r if k.endswith("_requests")})
    phases: dict[str, dict[str, dict[str, float | int | None]]] = {}
    for kind in kinds:
        acc = {p: {"seconds": 0.0, "requests": 0, "failures": 0} for p in PHASES}
        hists: dict[str, Counter[int]] = {p: Counter() for p in PHASES}
        previous = 0.0
        for row in rows:
            t = float(row["t"])
            phase = _phase_of((previous + t) / 2, exact)
            acc[phase]["seconds"] += t - previous
            acc[phase]["requests"] += int(row.get(f"{kind}_requests", 0))
            acc[phase]["failures"] += int(row.get(f"{kind}_failures", 0))
            hists[phase].update({int(ms): n for ms, n in row.get(f"{kind}_hist", {}).items()})
            previous = t
        phases[kind] = {}
        for p in PHASES:
            seconds = acc[p]["seconds"]
            phases[kind][p] = {
                "seconds": round(seconds, 2),
                "requests": int(acc[p]["requests"]),
                "failures": int(acc[p]["failures"]),
                "requests_per_s": round(acc[p]["requests"] / seconds, 1) if seconds else None,
                "failures_per_s": round(acc[p]["failures"] / seconds, 2) if seconds else None,
                **{f"p{q}_ms": histogram_percentile(hists[p], q / 100) for q in (50, 95, 99)},
                "max_ms": float(max(hists[p])) if hists[p] else None,
            }
    timeline = [{k: v for k, v in r.items() if not k.endswith("_hist")} for r in rows]
    return {
        "users": result.get("users", options.users),
        "profile": options.profile,
        "hit_ratio_asked": options.hit_ratio if options.profile != "produce" else None,
        "plot": plot,
        "elapsed_seconds": result.get("elapsed_seconds"),
        "requests": result.get("requests"),
        "failures": result.get("failures"),
        "profiles": result.get("profiles", {}),
        "cache_hit_ratio": result.get("cache_hit_ratio"),
        "failure_examples": result.get("failure_examples", []),
        **marks,
        "phases": phases,
        "timeline": timeline,
    }
