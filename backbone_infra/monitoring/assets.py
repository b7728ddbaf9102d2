"""Where the monitoring files live, for the local environment and Pulumi alike."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DASHBOARDS_DIR", "MONITORING_DIR", "RULES_TEST_FILE", "dashboards_dir", "rules_file"]

MONITORING_DIR = Path(__file__).resolve().parent
#: ``promtool test rules`` unit tests of :func:`rules_file`.
RULES_TEST_FILE = MONITORING_DIR / "rules_test.yml"
DASHBOARDS_DIR = MONITORING_DIR / "dashboards"


def rules_file() -> Path:
    """The one alert rules file every stack's Prometheus loads."""
    return MONITORING_DIR / "rules.yml"


def dashboards_dir() -> Path:
    """The generated Grafana dashboards (``*.json``), one file per dashboard."""
    return DASHBOARDS_DIR
