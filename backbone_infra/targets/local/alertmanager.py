"""Alertmanager on loopback: the local stack's alert router.

One ``prometheus-alertmanager`` process (Debian package) per stack, node name
``alertmanager``, configured by
:func:`backbone_infra.monitoring.alertmanager.render_alertmanager_config`
with the local (seconds-long) grouping delays and the spec's webhook. Clustering
is off (``--cluster.listen-address=``): one instance, and no gossip port bound
on every interface.
"""

from __future__ import annotations

from pathlib import Path

from backbone_infra.monitoring.alertmanager import (
    LOCAL_TIMING,
    render_alertmanager_config,
    write_alertmanager_config,
)
from backbone_infra.spec import StackSpec
from backbone_infra.targets.local.files import find_binary
from backbone_infra.targets.local.ports import LOOPBACK
from backbone_infra.targets.local.process import ProcessRecord

__all__ = ["ALERTMANAGER", "alertmanager_record", "alertmanager_url"]

#: The node name (``harness node ... alertmanager``).
ALERTMANAGER = "alertmanager"


def alertmanager_record(
    spec: StackSpec, *, root: Path, logs: Path, port: int, service: str
) -> ProcessRecord:
    """Write ``root/alertmanager.yml`` and return the process to start."""
    config = write_alertmanager_config(
        render_alertmanager_config(
            webhook_url=spec.monitoring.alert_webhook_url, timing=LOCAL_TIMING
        ),
        root / "alertmanager.yml",
    )
    return ProcessRecord(
        name=ALERTMANAGER,
        service=service,
        command=[
            find_binary("prometheus-alertmanager"),
            f"--config.file={config}",
            f"--storage.path={root / 'alertmanager-data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        log=str(logs / f"{ALERTMANAGER}.log"),
        cwd=str(root),
        ports={"http": port},
    )


def alertmanager_url(record: ProcessRecord) -> str:
    """The base URL of a local Alertmanager (its API is under ``/api/v2``)."""
    return f"http://{LOOPBACK}:{record.ports['http']}"
