"""etcd on loopback: the store Patroni keeps its leader key and cluster state in.

Runs only when the spec's PostgreSQL is under Patroni (the ``ha`` size); for
other stacks it prepares no node and the provisioner drops it. It starts in a
stage before PostgreSQL, since every Patroni node needs it to elect a leader.
The command line is rendered by :func:`backbone_infra.render.patroni.etcd_args`.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Mapping

from backbone_infra.render.patroni import etcd_args
from backbone_infra.spec import StackSpec
from backbone_infra.targets.local.base import LocalService
from backbone_infra.targets.local.files import find_binary
from backbone_infra.targets.local.ports import LOOPBACK, PortAllocator
from backbone_infra.targets.local.process import ProcessNode, ProcessRecord
from backbone_infra.targets.local.service import LocalNodes

__all__ = ["LocalEtcd"]

_START_TIMEOUT_S = 30.0
_PROBE_TIMEOUT_S = 2.0


class LocalEtcd(LocalNodes):
    """Renders the etcd Patroni needs as one ``etcd`` process (``etcd-1``)."""

    service = "etcd"

    @staticmethod
    def check_installed(spec: StackSpec) -> None:
        """Raise :class:`~backbone_infra.errors.MissingBinaryError` unless etcd is
        there when the spec needs it (Debian's ``etcd-server``; ``make setup``)."""
        if spec.postgres.patroni is not None:
            find_binary("etcd")

    def client_url(self, name: str = "etcd-1") -> str:
        return f"http://{LOOPBACK}:{self._port(name)}"

    def hosts(self) -> list[str]:
        """``host:port`` of every member, as Patroni's ``etcd3.hosts`` lists them."""
        return [f"{LOOPBACK}:{rec.ports['client']}" for rec in self.records]

    def prepare(self, ports: PortAllocator, peers: Mapping[str, LocalService]) -> None:
        if self.spec.postgres.patroni is None or not self.spec.has_services:
            self.records = []
            return
        binary = find_binary("etcd")
        root = self.dir / "etcd"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True, mode=0o700)
        name = "etcd-1"
        client, peer = ports.allocate(), ports.allocate()
        args = etcd_args(
            name,
            data_dir=str(root / name),
            client_url=f"http://{LOOPBACK}:{client}",
            peer_url=f"http://{LOOPBACK}:{peer}",
        )
        self.records = [
            self._new_record(
                name, [binary, *args], cwd=root, ports={"client": client, "peer": peer}
            )
        ]

    def _healthy(self, name: str) -> bool:
        with urllib.request.urlopen(
            f"{self.client_url(name)}/health", timeout=_PROBE_TIMEOUT_S
        ) as resp:
            return bool(json.load(resp).get("health") == "true")

    def node(self, name: str) -> ProcessNode:
        return ProcessNode(self._record(name), ready=lambda: self._healthy(name))

    def start(self) -> dict[str, float]:
        return {
            rec.name: self.node(rec.name).start(timeout=_START_TIMEOUT_S) for rec in self.records
        }

    def connection(self) -> None:
        """etcd is Patroni's, not the clients': it has no section in the outputs document."""
        return None

    def roles(self) -> dict[str, str]:
        """``dcs (Patroni's store)`` per healthy member."""

        def ask(rec: ProcessRecord) -> str:
            return "dcs (Patroni's store)" if self._healthy(rec.name) else "unhealthy"

        return self._roles(ask, unreachable=(OSError, ValueError))
