"""Integration-test plumbing: the CI health snapshot.

When an integration test uses ``local_stack`` or ``ha_stack``, a session
fixture that depends on that stack is pulled in; it is therefore torn down
*before* the stack, while its Prometheus still answers, and writes
``build/status/ci_health.md`` / ``.json`` (ignored by git; ``make
ci-health-publish`` copies them to ``docs/status/``) with what that Prometheus recorded
over the whole session (see :mod:`backbone_harness.ci_health`). Each stack's teardown
rewrites the snapshot with every stack collected so far, so the last one
leaves the complete file. Tests may add notes (a drill's fault times) through
the ``ci_health_notes`` fixture.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator

import pytest

from backbone_harness import ci_health
from backbone_harness.errors import USER_ERRORS
from backbone_infra.targets.local.provisioner import LocalStack

_WINDOWS: list[ci_health.StackWindow] = []
_NOTES: dict[str, list[str]] = {}


def _snapshot_of(stack: LocalStack) -> Iterator[None]:
    started = time.time()
    yield
    monitoring = stack.document.monitoring
    if monitoring is None or monitoring.prometheus_url is None:
        return
    try:
        window = ci_health.collect(stack.name, monitoring.prometheus_url, started)
    except USER_ERRORS as exc:  # the snapshot must never fail the run it reports on
        warnings.warn(f"CI health snapshot of {stack.name} skipped: {exc}", stacklevel=1)
        return
    window.notes.extend(_NOTES.get(stack.name, []))
    _WINDOWS.append(window)
    ci_health.write_snapshot(_WINDOWS)


@pytest.fixture(scope="session")
def _ci_health_minimal(local_stack: LocalStack) -> Iterator[None]:
    yield from _snapshot_of(local_stack)


@pytest.fixture(scope="session")
def _ci_health_ha(ha_stack: LocalStack) -> Iterator[None]:
    yield from _snapshot_of(ha_stack)


@pytest.fixture(autouse=True)
def _ci_health_for_used_stacks(request: pytest.FixtureRequest) -> None:
    """Pull in the snapshot fixture of each stack this test uses (and only those)."""
    if "local_stack" in request.fixturenames:
        request.getfixturevalue("_ci_health_minimal")
    if "ha_stack" in request.fixturenames:
        request.getfixturevalue("_ci_health_ha")


@pytest.fixture
def ci_health_notes() -> dict[str, list[str]]:
    """Stack name -> lines added under "Notes" in that stack's snapshot section."""
    return _NOTES
