"""The local services' shared waiting: one poll loop, one kind of timeout error."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

from backbone_infra.errors import ServiceStartError
from backbone_infra.targets.local.process import ProcessNode, ProcessRecord
from backbone_infra.targets.local.service import start_together, wait_until


def test_wait_until_returns_once_the_check_holds(tmp_path: Path) -> None:
    answers = itertools.chain([False, False], itertools.repeat(True))
    waited = wait_until(lambda: next(answers), "the thing", 5, node="n-1", log=tmp_path / "l")
    assert waited >= 0


def test_a_raising_check_means_not_yet_and_its_message_is_reported(tmp_path: Path) -> None:
    log = tmp_path / "n-1.log"
    log.write_text("first line\nthe line that explains it\n")

    def check() -> bool:
        raise ConnectionRefusedError("port 1234 refused")

    with pytest.raises(ServiceStartError) as caught:
        wait_until(check, "replication links", 0.2, node="n-1", log=log, hint="see the log")
    message = str(caught.value)
    assert "n-1 replication links not within 0s" in message
    assert "ConnectionRefusedError: port 1234 refused" in message
    assert "see the log" in message
    assert "the line that explains it" in caught.value.tail


def test_abort_ends_the_wait_at_once(tmp_path: Path) -> None:
    with pytest.raises(ServiceStartError, match="stopped while waiting for targets"):
        wait_until(lambda: False, "targets", 60, node="p", log=tmp_path / "l",
                   abort=lambda: "stopped")  # fmt: skip


def test_start_together_reports_each_failure_and_times_each_success(tmp_path: Path) -> None:
    def record(name: str, code: str) -> ProcessRecord:
        return ProcessRecord(
            name=name,
            service="t",
            command=[sys.executable, "-c", code],
            log=str(tmp_path / f"{name}.log"),
        )

    good = ProcessNode(record("good", "import time; time.sleep(30)"), ready=lambda: True)
    bad = ProcessNode(record("bad", "raise SystemExit(3)"), ready=lambda: False)
    try:
        timings, errors = start_together([good, bad], timeout=10)
        assert set(timings) == {"good"}
        assert [e.node for e in errors] == ["bad"]
    finally:
        good.kill()
