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


@pytest.mark.parametrize(
    ("unavailable", "budget", "over"),
    [(4.4, 15.0, False), (15.0, 15.0, False), (15.01, 15.0, True), (90.0, None, False)],
)
def test_writes_stopped_past_the_drills_ceiling_fail_the_run_but_not_correctness(
    unavailable: float, budget: float | None, over: bool
) -> None:
    report = _report("local", unavailable_seconds=unavailable, unavailable_budget_s=budget)
    # `passed` is correctness only (what tests assert); the ceiling is judged apart.
    assert report.passed
    assert report.within_budget is (not over)
    assert report.failed is over
    page = render_markdown({"kafka-outage": report.as_dict()})
    row = next(line for line in page.splitlines() if line.startswith("| kafka-outage |"))
    assert row.split(" | ")[2].startswith("**OVER CEILING**" if over else "PASS")
    ceiling = "no ceiling: the fault stops writes" if budget is None else f"ceiling {budget:g} s"
    assert ceiling in page


def test_the_issues_targets_are_the_drills_ceilings() -> None:
    # Issue 12: at most 15 s (primary kill), 2 s (standby), 5 s (Redis), 10 s (leader).
    targets = {
        "postgres-primary-kill": 15.0,
        "postgres-standby-kill": 2.0,
        "redis-primary-kill": 5.0,
        "kafka-leader-kill": 10.0,
    }
    assert {name: DRILLS[name].max_unavailable_s for name in targets} == targets
    # A whole service held down stops writes by design: no ceiling to fail.
    assert DRILLS["kafka-outage"].max_unavailable_s is None


def test_a_bar_stored_twice_fails_the_drill_like_a_lost_one() -> None:
    from types import SimpleNamespace

    from backbone_harness.drills.runner import _verdict

    drill: Any = SimpleNamespace(min_acknowledged=200, problems=[])
    passed, reason = _verdict(drill, _report("local", duplicates=2, stored=1202))
    assert not passed and reason == "2 bars were stored more than once"
    assert _verdict(drill, _report("local")) == (
        True,
        "all 1200 acknowledged bars found, none lost",
    )


@pytest.mark.parametrize("name", sorted(DRILLS))
def test_every_drill_states_its_own_ceiling_rather_than_inheriting_one(name: str) -> None:
    # A drill built on another (below-min-isr on leader-kill) must not inherit a
    # ceiling meant for a different fault: each says its own, or None.
    owners = [c for c in DRILLS[name].__mro__ if "max_unavailable_s" in vars(c)]
    assert owners and owners[0] is DRILLS[name], f"{name} inherits its ceiling from {owners[0]}"


def test_a_drill_that_raises_is_reported_as_that_drills_failure() -> None:
    from types import SimpleNamespace

    from backbone_harness.drills.runner import errored_report

    stack: Any = SimpleNamespace(
        name="s",
        environment="local",
        spec=SimpleNamespace(size="ha", kafka=SimpleNamespace(version="4.1.1")),
    )
    error = TimeoutError("the consumer did not catch up within 87s")
    report = errored_report(DRILLS["kafka-controller-kill"], stack, error)
    assert report.failed and not report.passed and report.applicable
    assert report.reason == (
        "the drill did not finish: TimeoutError: the consumer did not catch up within 87s"
    )
    assert (report.drill, report.size, report.unavailable_budget_s) == (
        "kafka-controller-kill",
        "ha",
        15.0,
    )
    assert report.machine["cores"] >= 1
