"""The Locust throughput test on the session's minimal stack: bounded, recorded, reported."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from backbone_harness.load.report import run_load_test, write_report
from backbone_infra.targets.local.provisioner import LocalStack

pytestmark = pytest.mark.integration


def test_a_short_locust_run_records_acknowledged_sends_and_reports_the_figures(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    began = time.monotonic()
    report = run_load_test(
        local_stack, users=2, spawn_rate=2, seconds=8, compare=False, log=lambda _m: None
    )
    took = time.monotonic() - began
    locust = report["locust"]

    assert took < 8 + 25, f"the run did not stop itself ({took:.0f} s)"
    assert locust["requests"] > 0 and locust["failures"] == 0, locust["failure_examples"]
    assert locust["bars_acknowledged"] >= 500 and locust["bars_per_s"] > 0
    assert locust["latency_ms"]["p99"] is not None
    assert sum(t["requests"] for t in locust["per_task"].values()) == locust["requests"]

    md = write_report(report, tmp_path)
    saved = json.loads((tmp_path / "load.json").read_text())
    assert saved["locust"]["requests"] == locust["requests"]
    assert saved["machine"]["cores"] and saved["versions"]["locust"]
    text = md.read_text()
    assert f"| sends (requests) | {locust['requests']} |" in text
    assert "bars/s" in text and "kernel" in text
