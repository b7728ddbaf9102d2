"""What every local service renderer provides to the provisioner.

A renderer turns one part of the stack spec (Redis, Kafka, PostgreSQL,
monitoring) into processes on loopback. The provisioner calls, in order:
``prepare`` (write configs, choose ports) → ``start`` (spawn, wait for a real
client answer) → ``connection``; later commands rebuild the renderer from the
saved records (``records=``) to look up roles or control one node.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from backbone_infra.spec import StackSpec
from backbone_infra.targets.local.ports import PortAllocator
from backbone_infra.targets.local.process import ProcessNode, ProcessRecord
from backbone_infra.targets.local.secrets import StackSecrets

__all__ = ["LocalService"]


class LocalService(Protocol):
    #: ``redis``, ``kafka``, ``postgres`` or ``monitoring``.
    service: str
    #: One record per node, in start order; empty before ``prepare``.
    records: list[ProcessRecord]

    def __init__(
        self,
        spec: StackSpec,
        stack_dir: Path,
        secrets: StackSecrets,
        records: list[ProcessRecord] | None = None,
    ) -> None: ...

    def prepare(self, ports: PortAllocator, peers: Mapping[str, LocalService]) -> None:
        """Choose ports, write config files (secrets only in 0600 files) and
        initialise data directories; sets ``records``. Re-callable: a second call
        (after a port race) starts from scratch with new ports. ``peers`` holds
        the services prepared before this one, by ``service`` name."""

    def start(self) -> dict[str, float]:
        """Start every node and wait until each answered a real client request;
        returns seconds-to-ready per node name. Raises ``ServiceStartError``."""

    def node(self, name: str) -> ProcessNode:
        """One node, with its readiness check, for kill/stop/pause/restart."""

    def connection(self) -> Any:
        """This service's section of the outputs document."""

    def roles(self) -> dict[str, str]:
        """Node name → current role (``primary``, ``replica``, ``sentinel``,
        ``broker+controller (active)``, ``standby`` ...), asked of the service itself."""
