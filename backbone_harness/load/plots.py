"""Plots of a load run: throughput and latency per profile over time (PNG, beside the report).

Matplotlib's Agg backend renders to files with no display. The figures come
from :attr:`backbone_harness.load.run.LoadResult.timeline` (one row per second).
:func:`plot_fault_window` draws a drill's load (``harness drill run --load``):
requests/s, p50/p95/p99 and failures/s per profile, with the fault shaded.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

__all__ = ["LATENCY_PNG", "THROUGHPUT_PNG", "plot_fault_window", "plot_timeline"]

THROUGHPUT_PNG = "load-throughput.png"
LATENCY_PNG = "load-latency.png"
_LABELS = {"kafka": "produce (bar batches, acks=all)", "read": "read (Backbone: cache, then store)"}


def plot_timeline(timeline: list[dict[str, Any]], out_dir: Path, title: str) -> list[Path]:
    """Write the throughput and latency PNGs under ``out_dir``; their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({k[: -len("_rps")] for row in timeline for k in row if k.endswith("_rps")})
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    fig, ax = plt.subplots(figsize=(8, 3.5))
    for kind in kinds:
        rows = [r for r in timeline if f"{kind}_rps" in r]
        ax.plot(
            [r["t"] for r in rows], [r[f"{kind}_rps"] for r in rows], label=_LABELS.get(kind, kind)
        )
    ax.set_xlabel("seconds into the run")
    ax.set_ylabel("requests/s")
    ax.set_title(f"Throughput — {title}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    path = out_dir / THROUGHPUT_PNG
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)

    fig, ax = plt.subplots(figsize=(8, 3.5))
    for kind in kinds:
        for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            rows = [r for r in timeline if r.get(f"{kind}_{q}_ms") is not None]
            ax.plot(
                [r["t"] for r in rows],
                [r[f"{kind}_{q}_ms"] for r in rows],
                style,
                label=f"{_LABELS.get(kind, kind)} {q}",
            )
    ax.set_xlabel("seconds into the run")
    ax.set_ylabel("latency of that second, ms")
    ax.set_yscale("log")
    ax.set_title(f"Latency — {title}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    path = out_dir / LATENCY_PNG
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    return written


def plot_fault_window(
    timeline: list[dict[str, Any]], marks: dict[str, float], path: Path, title: str
) -> Path:
    """One PNG at ``path``: three panels sharing the time axis (requests/s; p50,
    p95 and p99 ms; failures/s), one line per profile and percentile, the fault
    (``fault_start_s`` to ``fault_end_s``) shaded and the stack's recovery
    (``recovered_s``) a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({k[: -len("_rps")] for row in timeline for k in row if k.endswith("_rps")})
    fig, (rps, lat, fails) = plt.subplots(3, 1, figsize=(8, 7.5), sharex=True)
    for kind in kinds:
        label = _LABELS.get(kind, kind)
        rows = [r for r in timeline if f"{kind}_rps" in r]
        t = [r["t"] for r in rows]
        (line,) = rps.plot(t, [r[f"{kind}_rps"] for r in rows], drawstyle="steps-pre", label=label)
        fails.plot(t, [r.get(f"{kind}_fail_ps", 0) for r in rows], color=line.get_color())
        for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            # A second in which nothing completed is a gap, not a line across it.
            values = [r.get(f"{kind}_{q}_ms") for r in rows]
            lat.plot(
                t,
                [math.nan if v is None else v for v in values],
                style,
                color=line.get_color(),
                label=f"{kind} {q}",
            )
    for ax in (rps, lat, fails):
        ax.axvspan(marks["fault_start_s"], marks["fault_end_s"], color="tab:red", alpha=0.12)
        ax.axvline(marks["recovered_s"], color="tab:green", linestyle="--", linewidth=1)
        ax.grid(alpha=0.3, which="both")
    rps.set_ylabel("requests/s")
    rps.set_title("\n".join(textwrap.wrap(title, 90)), fontsize="medium")
    rps.legend(loc="best", fontsize="small")
    lat.set_ylabel("ms (p50 — p95 -- p99 ··)")
    if any(line.get_ydata().size for line in lat.get_lines()):
        lat.set_yscale("log")
    lat.legend(loc="best", fontsize="x-small", ncol=2)
    fails.set_ylabel("failures/s")
    fails.set_xlabel(
        "seconds into the load run (shaded: the fault; dashed: the stack back as found)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
