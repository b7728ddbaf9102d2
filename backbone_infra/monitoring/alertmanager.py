"""The Alertmanager configuration of a stack: who hears which alert.

One renderer for every environment (the local process and the Pulumi
containers). Routing, by the ``severity`` label every rule carries:

==============  =================  =============================================
alert           receiver           why
==============  =================  =============================================
``Watchdog``    ``null``           always firing; proves the pipeline, pages no one
``critical``    ``critical``       the stack's webhook, sent at once
``warning``     ``warning``        the stack's webhook, grouped longer
anything else   ``null``           (``info``): visible in Alertmanager only
==============  =================  =============================================

With no webhook configured the ``critical`` and ``warning`` receivers have no
integrations: alerts are still routed and held by Alertmanager (its API and
UI), nobody is called.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "LOCAL_TIMING",
    "PRODUCTION_TIMING",
    "RECEIVERS",
    "AlertmanagerConfigError",
    "AlertmanagerTiming",
    "check_alertmanager_config",
    "render_alertmanager_config",
    "write_alertmanager_config",
]

#: Receiver names, in routing order.
RECEIVERS: tuple[str, ...] = ("null", "critical", "warning")


class AlertmanagerConfigError(ValueError):
    """amtool rejected an Alertmanager config; names the file and why."""


@dataclass(frozen=True)
class AlertmanagerTiming:
    """Grouping delays, seconds (Alertmanager's ``group_wait`` and friends)."""

    #: Wait this long for more alerts of a new group before the first notification.
    group_wait_s: int
    #: Wait this long before notifying about alerts added to a notified group.
    group_interval_s: int
    #: Re-send a still-firing group this often.
    repeat_interval_s: int


#: Container targets: Alertmanager's usual delays.
PRODUCTION_TIMING = AlertmanagerTiming(
    group_wait_s=30, group_interval_s=300, repeat_interval_s=4 * 3600
)
#: Local stacks evaluate every second; a drill or test should hear an alert in seconds.
LOCAL_TIMING = AlertmanagerTiming(group_wait_s=1, group_interval_s=5, repeat_interval_s=3600)


def _duration(seconds: int) -> str:
    return f"{seconds}s"


def render_alertmanager_config(
    *, webhook_url: str | None, timing: AlertmanagerTiming = PRODUCTION_TIMING
) -> dict[str, Any]:
    """The ``alertmanager.yml`` document (a YAML-ready dict)."""
    integrations: dict[str, Any] = {}
    if webhook_url:
        integrations = {"webhook_configs": [{"url": webhook_url, "send_resolved": True}]}
    route_timing = {
        "group_wait": _duration(timing.group_wait_s),
        "group_interval": _duration(timing.group_interval_s),
        "repeat_interval": _duration(timing.repeat_interval_s),
    }
    return {
        "route": {
            "receiver": "null",
            "group_by": ["alertname", "stack"],
            **route_timing,
            "routes": [
                {"receiver": "null", "matchers": ['alertname="Watchdog"']},
                {
                    "receiver": "critical",
                    "matchers": ['severity="critical"'],
                    # A page should not wait for company.
                    "group_wait": _duration(min(timing.group_wait_s, 10)),
                },
                {"receiver": "warning", "matchers": ['severity="warning"']},
            ],
        },
        # A critical alert mutes the warnings of the same alert group on the same stack.
        "inhibit_rules": [
            {
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity="warning"'],
                "equal": ["stack", "alertname"],
            }
        ],
        "receivers": [
            {"name": "null"},
            {"name": "critical", **integrations},
            {"name": "warning", **integrations},
        ],
    }


def write_alertmanager_config(config: dict[str, Any], path: Path) -> Path:
    """Write ``config`` as YAML (a webhook URL may carry a token: mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def check_alertmanager_config(path: Path, *, amtool: str | None = None) -> None:
    """Validate with ``amtool check-config`` (Debian ``prometheus-alertmanager``).

    Raises :class:`AlertmanagerConfigError` quoting amtool.
    """
    tool = amtool or shutil.which("amtool")
    if tool is None:
        raise AlertmanagerConfigError(
            "amtool is not installed (Debian package `prometheus-alertmanager`); run `make setup`"
        )
    result = subprocess.run(
        [tool, "check-config", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        said = (result.stderr + result.stdout).strip()
        raise AlertmanagerConfigError(
            f"amtool rejected the Alertmanager config {path}: {said}; fix "
            "backbone_infra/monitoring/alertmanager.py and run `amtool check-config` again"
        )
