"""Scripted outage drills: a fault by role, a writer, recovery, a reconciling reader.

    from harness.drills import DRILLS, run_drill, write_report
    report = run_drill(DRILLS["kafka-leader-kill"], stack)
    assert report.lost_acknowledged == 0

See ``docs/runbooks/drills.md``.
"""

from __future__ import annotations

from harness.drills.base import Drill, Fault
from harness.drills.reconcile import Reconciliation, reconcile
from harness.drills.report import DrillReport, write_report
from harness.drills.runner import DRILLS, drill_class, run_drill

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
