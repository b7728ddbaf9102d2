"""Session fixtures: real local stacks, shared by every integration test.

``local_stack`` (minimal) comes up once per session when a test first asks for
it; ``ha_stack`` likewise. Both are torn down at the end of the session. Their
state directories live under one unique ``stacks_root`` inside the repository's
``.stacks/`` (pytest's own temporary directories are 0700, which the
PostgreSQL user could not enter). When the session ends, a check fails the run
if any process of any stack under that root is still running (and kills it).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from hypothesis import settings

from backbone_infra.spec import build_spec
from backbone_infra.targets.local import provisioner
from backbone_infra.targets.local.provisioner import LocalStack

REPO = Path(__file__).resolve().parents[1]

# No test asserts a duration, and hypothesis's per-example deadline is one: on a
# loaded 2-core machine a 200 ms deadline fails correct code. Examples still
# run to completion and every property is checked.
settings.register_profile("backbone", deadline=None)
settings.load_profile("backbone")

#: Stack roots created by this session, checked for survivors at the end.
_SESSION_ROOTS: list[Path] = []


def new_stacks_root(label: str = "pytest") -> Path:
    """A fresh, unique stacks root under ``<repo>/.stacks`` that the
    end-of-session check covers."""
    root = REPO / ".stacks" / f"{label}-{os.getpid()}-{secrets.token_hex(3)}"
    root.mkdir(parents=True)
    os.chmod(root, 0o711)  # the PostgreSQL user walks through it
    _SESSION_ROOTS.append(root)
    return root


@pytest.fixture(scope="session")
def stacks_root() -> Path:
    """This session's root for stack directories (unique per run)."""
    return new_stacks_root()


def _stack(root: Path, name: str, size: str) -> Iterator[LocalStack]:
    stack = provisioner.up(build_spec(name, size=size), root=root)  # type: ignore[arg-type]
    try:
        yield stack
    finally:
        provisioner.down(stack.name, root=root)


@pytest.fixture(scope="session")
def local_stack(stacks_root: Path) -> Iterator[LocalStack]:
    """A minimal institutional stack (1 Redis, 1 Kafka, 1 PostgreSQL,
    monitoring), up once per session."""
    yield from _stack(stacks_root, "minimal", "minimal")


@pytest.fixture(scope="session")
def ha_stack(stacks_root: Path) -> Iterator[LocalStack]:
    """An ha institutional stack (Redis + replica + 3 Sentinels, 3 KRaft
    brokers, PostgreSQL + synchronous standby), up once per session when a
    test first asks for it."""
    yield from _stack(stacks_root, "ha", "ha")


def surviving_processes() -> list[str]:
    """Processes of any stack under this session's roots that still run."""
    found = []
    for root in _SESSION_ROOTS:
        if not root.is_dir():
            continue
        for directory in root.iterdir():
            for proc in provisioner.stack_processes(directory):
                found.append(f"{directory.name}: pid {proc.pid} {' '.join(proc.cmdline()[:3])}")
    found += [f"pulumi run: pid {p.pid} {' '.join(p.cmdline()[:4])}" for p in _pulumi_processes()]
    return found


def _pulumi_processes() -> list[psutil.Process]:
    """Live processes of this session's Pulumi runs (CLI, plugins, dynamic
    providers): their PULUMI_HOME lies under a session root."""
    roots = tuple(str(root) + os.sep for root in _SESSION_ROOTS)
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            home = proc.environ().get("PULUMI_HOME", "")
            if home.startswith(roots) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    survivors = surviving_processes()
    if survivors:
        for root in _SESSION_ROOTS:
            for directory in root.iterdir() if root.is_dir() else ():
                provisioner.down(directory.name, root=root)
        for proc in _pulumi_processes():
            proc.kill()
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                "FAILED session check: stack processes outlived the session "
                f"(killed now): {survivors}",
                red=True,
            )
    elif exitstatus == 0:
        for root in _SESSION_ROOTS:
            shutil.rmtree(root, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Unit and Pulumi-mock tests first (seconds), integration tests last (real
    services, minutes), so a broken contract fails the run before any stack starts.
    The sort is stable: modules keep their order and share session stacks as before."""
    items.sort(key=lambda item: "integration" in item.path.parts)
