"""Scripted outage drills: a fault by role, a writer, recovery, a reconciling reader.

    from backbone_harness.drills import DRILLS, run_drill, write_report
    report = run_drill(DRILLS["kafka-leader-kill"], stack)
    assert report.lost_acknowledged == 0

See ``docs/runbooks/drills.md``.

Names load on first use (PEP 562): every ``harness`` command imports the
``drill`` sub-app, and ``harness down`` must not pay for the drill runner.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "DRILLS",
    "Drill",
    "DrillReport",
    "Fault",
    "Reconciliation",
    "drill_class",
    "reconcile",
    "run_drill",
    "write_report",
]

_HOME = {
    "Drill": "base",
    "Fault": "base",
    "Reconciliation": "reconcile",
    "reconcile": "reconcile",
    "DrillReport": "report",
    "write_report": "report",
    "DRILLS": "runner",
    "drill_class": "runner",
    "run_drill": "runner",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
