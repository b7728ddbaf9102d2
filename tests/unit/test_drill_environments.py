"""Drills across environments: which can run where, and one page with a column each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from backbone_harness.drills.report import DrillReport, render_markdown, report_key, write_report
from backbone_harness.drills.runner import DRILLS


class _Env:
    """Only what applicability asks of a stack: its environment."""

    def __init__(self, environment: str) -> None:
        self.environment = environment


def _report(environment: str, **changes: Any) -> DrillReport:
    values: dict[str, Any] = {
        "drill": "kafka-outage",
        "stack": f"s-{environment}",
        "fault": "stop every Kafka broker",
        "target": "kafka-1",
        "date": "2026-12-02T10:00:00+00:00",
        "acknowledged": 1200,
        "stored": 1200,
        "passed": True,
        "reason": "all 1200 acknowledged bars found, none lost",
        "environment": environment,
        "size": "minimal",
    }
    return DrillReport(**(values | changes))


@pytest.mark.parametrize("environment", ["local", "compose"])
def test_only_the_environment_that_can_make_a_fault_runs_its_drill(environment: str) -> None:
    stack: Any = _Env(environment)
    partition = DRILLS["container-partition"].not_applicable(stack)
    toxiproxy = DRILLS["network-partition"].not_applicable(stack)
    outage = DRILLS["kafka-outage"].not_applicable(stack)

    assert outage is None  # node faults run everywhere
    if environment == "local":
        assert partition is not None and partition.startswith("not applicable on local: ")
        assert toxiproxy is None
    else:
        assert partition is None
        assert toxiproxy is not None and toxiproxy.startswith("not applicable on compose: ")


def test_a_compose_run_merges_beside_the_local_one(tmp_path: Path) -> None:
    write_report(_report("local", acknowledged=900, stored=900), tmp_path)
    write_report(_report("compose", unavailable_seconds=31.5), tmp_path)
    write_report(_report("compose", drill="network-partition", applicable=False, passed=False,
                         reason="not applicable on compose: Toxiproxy"), tmp_path)  # fmt: skip

    data = json.loads((tmp_path / "drills.json").read_text())
    assert set(data) == {"kafka-outage", "kafka-outage@compose", "network-partition@compose"}
    page = (tmp_path / "drills.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| kafka-outage |"))
    local, compose = row.split(" | ")[2:4]
    assert local.startswith("PASS (minimal): 900 acked, 0 lost")
    assert compose.startswith("PASS (minimal): 1200 acked") and "31.5 s unavailable" in compose
    na = next(line for line in page.splitlines() if line.startswith("| network-partition |"))
    assert na.endswith("| not run | n/a |")
    assert "- not applicable on compose: Toxiproxy" in page


def test_entries_written_before_environments_existed_are_local() -> None:
    old = _report("local").as_dict()
    del old["environment"], old["size"], old["applicable"]
    page = render_markdown({"kafka-outage": old})
    row = next(line for line in page.splitlines() if line.startswith("| kafka-outage |"))
    assert row.endswith("| PASS: 1200 acked, 0 lost, 0 dup, 0.0 s unavailable, 0.0 s to recover "
                        "| not run |")  # fmt: skip


def test_a_failed_run_is_marked_and_counts_as_failed() -> None:
    failed = _report("compose", passed=False, lost_acknowledged=3, reason="3 lost")
    not_applicable = _report("compose", applicable=False, passed=False)
    assert failed.failed and not not_applicable.failed
    page = render_markdown({report_key("kafka-outage", "compose"): failed.as_dict()})
    assert "**FAIL** (minimal): 1200 acked, 3 lost" in page
