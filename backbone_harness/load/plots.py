"""Plots of a load run: throughput and latency per profile over time (PNG, beside the report).

Matplotlib's Agg backend renders to files with no display. The figures come
from :attr:`backbone_harness.load.run.LoadResult.timeline` (one row per second).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["LATENCY_PNG", "THROUGHPUT_PNG", "plot_timeline"]

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
        for q, style in (("p50", "-"), ("p95", "--")):
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
