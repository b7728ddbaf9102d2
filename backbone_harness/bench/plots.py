"""PNG plots of a benchmark run: bars/s and p99 against batch size and consumer count.

matplotlib is an optional dependency (``pip install '.[harness]'``); without it the
report says the plots were skipped and why, instead of failing the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["PLOTS", "write_plots"]

#: File name -> (points key in the report, x key, x label, what the p99 is of).
PLOTS: dict[str, tuple[str, str, str, str]] = {
    "performance-batch-size.png": (
        "batch_sizes",
        "batch_size",
        "batch size (bars per store write)",
        "p99 of one batch write (ms)",
    ),
    "performance-consumers.png": (
        "consumer_counts",
        "consumers",
        "consumers in the group",
        "p99 send → stored (ms)",
    ),
}


def _plot(
    points: Sequence[dict[str, Any]],
    x_key: str,
    labels: tuple[str, str],
    title: str,
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display here
    import matplotlib.pyplot as plt

    xs = [p[x_key] for p in points]
    fig, rate_ax = plt.subplots(figsize=(7, 4), dpi=100)
    rate_ax.plot(xs, [p["bars_per_s"] for p in points], "o-", color="tab:blue", label="bars/s")
    x_label, p99_label = labels
    rate_ax.set_xlabel(x_label)
    rate_ax.set_ylabel("bars/s", color="tab:blue")
    rate_ax.set_ylim(bottom=0)
    if x_key == "batch_size":
        rate_ax.set_xscale("log")
        rate_ax.minorticks_off()
    rate_ax.set_xticks(xs, [f"{x:,}" for x in xs])
    p99_ax = rate_ax.twinx()
    p99_ax.plot(xs, [p["p99_ms"] or 0 for p in points], "s--", color="tab:red", label="p99 ms")
    p99_ax.set_ylabel(p99_label, color="tab:red")
    p99_ax.set_ylim(bottom=0)
    rate_ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_plots(report: dict[str, Any], out: Path) -> dict[str, str]:
    """Write each plot the report has points for; file name -> what it shows (or why not)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return {
            name: "skipped: matplotlib is not installed (pip install '.[harness]')"
            for name in PLOTS
        }
    written = {}
    for name, (key, x_key, x_label, p99_label) in PLOTS.items():
        section = report.get(key) or {}
        points = section.get("points") or []
        if not points:
            continue
        title = f"{section.get('path', key)} — {section.get('stack', '')} stack"
        _plot(points, x_key, (x_label, p99_label), title, out / name)
        written[name] = title
    return written
