"""How the local target runs Patroni and kills a whole Patroni node (no stack needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

from backbone_infra.targets.local.patroni import (
    PatroniProcessNode,
    patroni_command,
    patroni_executable,
)
from backbone_infra.targets.local.process import ProcessRecord


def test_without_a_user_switch_the_environments_patroni_runs_as_is(tmp_path: Path) -> None:
    command, env = patroni_command([], tmp_path / "p.yml")
    assert command == [str(patroni_executable()), str(tmp_path / "p.yml")]
    assert env == {}


def test_as_another_user_patroni_runs_from_a_system_interpreter_it_can_execute(
    tmp_path: Path,
) -> None:
    prefix = ["setpriv", "--reuid=1"]
    command, env = patroni_command(prefix, tmp_path / "p.yml")
    assert command[: len(prefix)] == prefix
    assert command[-1] == str(tmp_path / "p.yml")
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if system.exists():
        # -S keeps the system's own site-packages out; ours come by PYTHONPATH.
        assert command[len(prefix) : len(prefix) + 4] == [str(system), "-S", "-m", "patroni"]
        assert Path(env["PYTHONPATH"], "patroni").is_dir()


_DETACHED_POSTMASTER = """
import os, subprocess, sys
os.setsid()  # as Patroni's helper does, which then exits
quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
sleeper = [sys.executable, "-c", "import time; time.sleep(300)", sys.argv[1]]
child = subprocess.Popen(sleeper, **quiet)
print(child.pid, flush=True)
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_killing_a_node_also_kills_the_postmaster_in_its_own_session(tmp_path: Path) -> None:
    """Patroni starts postgres from a helper that makes a session of its own and
    exits: the postmaster is in neither Patroni's process group nor a group of
    its own pid. A node kill must still reach it.

    Stand-ins: a ``sleep`` as "Patroni"; the postmaster a process naming the
    data directory, started the way Patroni starts it, its pid in ``postmaster.pid``."""
    data = tmp_path / "postgres-1"
    data.mkdir()
    helper = subprocess.run(
        [sys.executable, "-c", _DETACHED_POSTMASTER, str(data)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    pm_pid = int(helper.stdout.split()[0])
    assert os.getpgid(pm_pid) != pm_pid  # the layout that a killpg(pid) would miss
    (data / "postmaster.pid").write_text(f"{pm_pid}\n{data}\n")
    record = ProcessRecord(
        name="postgres-1",
        service="postgres",
        command=["sleep", "300"],
        log=str(tmp_path / "node.log"),
    )
    node = PatroniProcessNode(record, ready=lambda: True, data_dir=data)
    try:
        node.start(timeout=10)
        patroni_pid = record.pid
        assert patroni_pid is not None and node.postmaster() is not None
        node.kill()
        assert _gone(pm_pid) and _gone(patroni_pid)
        assert node.postmaster() is None
    finally:
        if not _gone(pm_pid):
            psutil.Process(pm_pid).kill()


def test_a_pid_file_of_some_other_process_is_not_taken_for_the_postmaster(
    tmp_path: Path,
) -> None:
    data = tmp_path / "postgres-1"
    data.mkdir()
    (data / "postmaster.pid").write_text(f"{psutil.Process().pid}\n")  # this test, not postgres
    record = ProcessRecord(name="postgres-1", service="postgres", command=[], log="x")
    assert PatroniProcessNode(record, ready=None, data_dir=data).postmaster() is None
