"""Writing a rendered Prometheus config to disk and checking it with promtool.

The rendering itself is :mod:`backbone_infra.render.prometheus`; this is the I/O the
local environment and the tests do with its result.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backbone_infra.render.prometheus import prometheus_yaml

__all__ = ["PrometheusConfigError", "check_config", "write_prometheus_config"]


class PrometheusConfigError(ValueError):
    """promtool rejected a Prometheus config or rules file; names the file and why."""


def write_prometheus_config(config: Mapping[str, Any], path: Path) -> Path:
    """Write ``config`` as YAML to ``path`` (it holds no secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(prometheus_yaml(config))
    return path


def check_config(path: Path, *, promtool: str | None = None) -> None:
    """Validate a config file and the rule files it names with ``promtool check config``.

    Raises :class:`PrometheusConfigError` naming the file and quoting promtool.
    """
    tool = promtool or shutil.which("promtool")
    if tool is None:
        raise PrometheusConfigError(
            "promtool is not installed (Debian package `prometheus`); run `make setup`"
        )
    result = subprocess.run(
        [tool, "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        said = (result.stderr + result.stdout).strip()
        raise PrometheusConfigError(
            f"promtool rejected the Prometheus config {path}: {said}; "
            "fix the file (or backbone_infra/monitoring/rules.yml) "
            "and run `promtool check config` again"
        )
