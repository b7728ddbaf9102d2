"""`harness` on bad input: one helpful line on stderr, exit code 2, nothing left running.

No services here: the only stacks are bootstrap ones (no processes) and a
stand-in node (a `sleep` recorded in a stack's state) for "name in use".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from backbone.version import package_version
from backbone_harness.cli import app
from backbone_infra.spec import build_spec
from backbone_infra.targets.local import provisioner
from backbone_infra.targets.local.process import ProcessRecord
from backbone_infra.targets.local.state import StackState, save_state

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HARNESS_STACKS_DIR", str(tmp_path))
    return tmp_path


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("harness: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["up", "--name", "Not_A_Name"], "invalid --name 'Not_A_Name'"),
        (["up", "--env", "docker"], "needs a Docker engine"),
        (["up", "--env", "kubernetes"], "needs a Kubernetes cluster"),
        (["status", "--name", "ghost"], "no stack named 'ghost'"),
        (["node", "kill", "redis-1", "--name", "ghost"], "bring one up with `harness up"),
        (["outputs", "--name", "ghost", "--job", "reader"], "no stack named 'ghost'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(root: Path, args: list[str], expected: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert expected in _one_error_line(result.stderr)
    assert not any(root.iterdir())  # nothing was created, so nothing can run


@pytest.mark.parametrize(
    ("args", "option", "choices"),
    [
        (["up", "--env", "moon"], "--env", "'local', 'compose', 'docker', 'kubernetes'"),
        (["up", "--size", "huge"], "--size", "'minimal', 'ha'"),
        (["up", "--tier", "gold"], "--tier", "'institutional', 'bootstrap'"),
        (["down", "--via", "ssh"], "--via", "'provisioner', 'pulumi'"),
        (["outputs", "--job", "admin"], "--job", "'writer', 'consumer', 'reader', 'monitor'"),
    ],
)
def test_an_unknown_choice_is_a_usage_error_naming_the_option_and_its_choices(
    root: Path, args: list[str], option: str, choices: str
) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    text = " ".join(result.stderr.replace("│", " ").split())
    assert f"Invalid value for '{option}'" in text
    assert f"is not one of {choices}" in text
    assert not any(root.iterdir())


def test_json_output_is_one_document_without_secrets(root: Path) -> None:
    up = runner.invoke(app, ["up", "--tier", "bootstrap", "--name", "js", "--json"])
    assert up.exit_code == 0, up.output
    doc = json.loads(up.stdout)
    assert doc["stack"] == "js" and doc["tier"] == "bootstrap"
    assert doc["outputs"] == str(root / "js" / "outputs.json")
    status = runner.invoke(app, ["status", "--name", "js", "--json"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["stack"] == "js"
    assert "password" not in status.stdout
    runner.invoke(app, ["down", "--name", "js"])


def test_version_names_the_tool_and_the_distribution_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"harness {package_version()}"


def test_a_bootstrap_stack_writes_a_duckdb_document_and_down_is_idempotent(root: Path) -> None:
    result = runner.invoke(app, ["up", "--tier", "bootstrap", "--name", "boot"])
    assert result.exit_code == 0, result.output
    last = result.stdout.strip().splitlines()[-1]
    assert last == str(root / "boot" / "outputs.json")
    doc = provisioner.load("boot").document
    assert doc.tier == "bootstrap" and doc.duckdb is not None
    assert Path(doc.duckdb.path).parent == root / "boot"
    # A bootstrap stack has no services, so no job principals: a usage error.
    job = runner.invoke(app, ["outputs", "--name", "boot", "--job", "reader"])
    assert job.exit_code == 2
    assert "names no 'reader' principal" in _one_error_line(job.stderr)
    assert runner.invoke(app, ["outputs", "--name", "boot"]).stdout.strip() == last
    for _ in range(2):
        down = runner.invoke(app, ["down", "--name", "boot"])
        assert down.exit_code == 0 and "stopped" in down.stdout


def test_down_of_an_unknown_stack_says_so_and_succeeds(root: Path) -> None:
    result = runner.invoke(app, ["down", "--name", "never-was"])
    assert result.exit_code == 0
    assert "nothing to stop" in result.stdout


@pytest.fixture
def running_stack(root: Path) -> Iterator[psutil.Process]:
    """A stack whose only node is a `sleep`, recorded like a real node."""
    directory = root / "busy"
    directory.mkdir()
    proc = subprocess.Popen(["sleep", "60"], cwd=directory, start_new_session=True)
    record = ProcessRecord(
        name="redis-1",
        service="redis",
        command=["sleep", "60"],
        log=str(directory / "x.log"),
        cwd=str(directory),
        pid=proc.pid,
        create_time=psutil.Process(proc.pid).create_time(),
    )
    save_state(
        directory,
        StackState(spec=build_spec("busy"), status="running", records={"redis": [record]}),
    )
    try:
        yield psutil.Process(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def test_a_name_in_use_is_refused_and_down_stops_it(
    root: Path, running_stack: psutil.Process
) -> None:
    result = runner.invoke(app, ["up", "--name", "busy"])
    assert result.exit_code == 2
    assert "harness down --name busy" in _one_error_line(result.stderr)
    assert running_stack.is_running() and running_stack.status() != psutil.STATUS_ZOMBIE
    down = runner.invoke(app, ["down", "--name", "busy"])
    assert down.exit_code == 0
    running_stack.wait(5)
    assert provisioner.stack_processes(root / "busy") == []


def test_a_missing_binary_names_it_and_the_fix_before_anything_starts(tmp_path: Path) -> None:
    env = {**os.environ, "HARNESS_STACKS_DIR": str(tmp_path), "HARNESS_PG_BIN": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "backbone_harness", "up", "--name", "nobin"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert "PostgreSQL 15" in line and "is not installed" in line and "make setup" in line
    assert not (tmp_path / "nobin").exists()
