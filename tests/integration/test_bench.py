"""``harness bench perf --quick`` end to end on a real minimal stack: the report's structure.

No rate or duration is asserted (the machine is shared; the numbers are the
benchmark's business). What is checked: every path the page promises is there,
each figure with its ceiling, a ratio and the load average, numbers positive,
bottlenecks named from a profile, the plots written — into a temporary folder,
never over the committed ``docs/status`` pages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from backbone_harness.bench.performance import QUICK, run_bench
from backbone_harness.bench.report import render_markdown

# The quick run brings up its own minimal stack and runs every path (minutes on a
# loaded 2-core machine): give the module fixture room beyond the default 600 s.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]

PATHS = ("producer", "store write", "Tier 1 end to end", "replay / backfill", "cache read")


@pytest.fixture(scope="module")
def quick_report(
    tmp_path_factory: pytest.TempPathFactory, stacks_root: Path
) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    report = run_bench(out, plan=QUICK, stacks_root=stacks_root, log=lambda _m: None)
    return out, report


def test_every_path_has_a_figure_with_its_ceiling_ratio_and_load(
    quick_report: tuple[Path, dict[str, Any]],
) -> None:
    _, report = quick_report
    figures = report["figures"]
    failed = [f for f in figures if "error" in f]
    assert not failed, f"paths failed: {failed}"
    assert {f["path"] for f in figures} == set(PATHS)
    for f in figures:
        assert f["value"] > 0 and f["ceiling_value"] > 0, f
        assert f["ratio"] == pytest.approx(f["value"] / f["ceiling_value"], rel=0.01, abs=0.001)
        assert f["ceiling"] and f["unit"], f
        assert len(f["load_average"]) == 3 and all(x >= 0 for x in f["load_average"]), f
    # The producer comparison is warmed and measured on both sides, with the same record.
    producer = report["producer"]
    for side in ("ours", "kafka_tool"):
        assert producer[side]["warmup_s"] > 0 and producer[side]["measured_s"] > 0
        assert producer[side]["acks"] == "all" and producer[side]["idempotent"] is True
    assert producer["ours"]["record_bytes"] == pytest.approx(
        producer["kafka_tool"]["record_bytes"], rel=0.05
    )


def test_sweeps_plots_and_bottlenecks_are_reported(
    quick_report: tuple[Path, dict[str, Any]],
) -> None:
    out, report = quick_report
    for key, x_key in (("batch_sizes", "batch_size"), ("consumer_counts", "consumers")):
        points = report[key]["points"]
        assert len(points) >= 2, key
        for p in points:
            assert p[x_key] > 0 and p["bars_per_s"] > 0 and p["p99_ms"] > 0, p
    for name in ("performance-batch-size.png", "performance-consumers.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert name in report["plots"]
    assert set(report["bottlenecks"]) == {
        "producer (ours)", "store write", "Tier 1 end to end (consumer process)",
        "replay / backfill", "cache read (latest)",
    }  # fmt: skip
    for path, hot in report["bottlenecks"].items():
        assert hot and hot[0]["function"] and 0 < hot[0]["share_of_own_time"] <= 1, path


def test_the_page_shows_every_figure_and_is_the_json_rendered(
    quick_report: tuple[Path, dict[str, Any]],
) -> None:
    out, report = quick_report
    page = (out / "performance.md").read_text()
    assert json.loads((out / "performance.json").read_text()) == json.loads(json.dumps(report))
    assert page == render_markdown(report)
    table = [line for line in page.splitlines() if line.startswith("| ") and "**" in line]
    assert len(table) == len(report["figures"])
    for path in PATHS:
        assert any(line.startswith(f"| {path} |") for line in table), path
    assert "![" in page and "performance-batch-size.png" in page
    assert "Read the ratios, not the rates" in page
