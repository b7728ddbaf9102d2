"""A local stack that is (or was) up, as any process sees it.

:class:`LocalStack` is what :func:`backbone_infra.targets.local.provisioner.up` returns and
:func:`~backbone_infra.targets.local.provisioner.load` rebuilds from ``state.json`` in any
later process: the spec, the outputs document, the services and their nodes,
node control (kill, stop, pause, resume, restart) and role look-ups.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from backbone.connections import ConnectionsDocument, load_document
from backbone_infra.errors import InfraError, NotApplicableError
from backbone_infra.rotation import rewrite_passwords
from backbone_infra.spec import StackSpec
from backbone_infra.targets.local.base import LocalService
from backbone_infra.targets.local.patroni import PatroniProcessNode
from backbone_infra.targets.local.process import ProcessNode
from backbone_infra.targets.local.secrets import StackSecrets
from backbone_infra.targets.local.state import (
    OUTPUTS_FILE,
    StackState,
    load_state,
    save_state,
    update_record,
)

__all__ = ["LocalStack", "NodeNotRunningError"]


class NodeNotRunningError(InfraError):
    """A node control that needs a live process found none."""

    def __init__(self, stack: str, node: str) -> None:
        super().__init__(
            f"{node} of stack {stack!r} is not running; start it with "
            f"`harness node restart {node} --name {stack}`"
        )


class LocalStack:
    """A local stack that is (or was) up: its spec, outputs, services and nodes.

    It is a :class:`backbone_harness.stacks.Stack` (the harness's view of any
    environment's stack)."""

    #: The harness's name for this environment.
    environment = "local"

    def __init__(
        self,
        directory: Path,
        state: StackState,
        services: dict[str, LocalService],
    ) -> None:
        self.dir = directory
        self.spec: StackSpec = state.spec
        self.name = self.spec.name
        self._state = state
        self._lock = threading.Lock()
        #: service name -> renderer, rebuilt from the saved records.
        self.services = services

    @property
    def outputs_path(self) -> Path:
        return self.dir / OUTPUTS_FILE

    @property
    def document(self) -> ConnectionsDocument:
        """The validated outputs document (read from ``outputs.json``)."""
        return load_document(self.outputs_path)

    @property
    def timings(self) -> dict[str, float]:
        """Seconds to ready per service and per node, from ``up``."""
        return dict(self._state.timings)

    @property
    def status(self) -> str:
        return self._state.status

    # -- nodes -----------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the node records from ``state.json`` and the credentials from
        ``secrets.json``: another process (a ``harness node restart`` or
        ``harness rotate-credentials`` in another shell) may have changed them."""
        try:
            saved = load_state(self.dir)
            secrets = StackSecrets.load(self.dir) if self.services else None
        except (OSError, ValueError):
            return
        with self._lock:
            for running in self.services.values():
                if secrets is not None and hasattr(running, "secrets"):
                    running.secrets = secrets
            for service, records in saved.records.items():
                svc = self.services.get(service)
                if svc is not None and records:
                    svc.records[:] = records
            self._state.records = {s: list(v.records) for s, v in self.services.items()}

    def node_names(self) -> list[str]:
        return [rec.name for svc in self.services.values() for rec in svc.records]

    def _service_of(self, name: str) -> LocalService:
        for svc in self.services.values():
            if any(rec.name == name for rec in svc.records):
                return svc
        raise KeyError(
            f"stack {self.name!r} has no node {name!r}; nodes: {', '.join(self.node_names())}"
        )

    def node(self, name: str) -> ProcessNode:
        """The node as last saved (by any process), with its readiness check.

        It holds its own copy of the record: an operation on it changes only
        that copy until :meth:`_persist` writes that one node back."""
        self.refresh()
        node = self._service_of(name).node(name)
        node.record = dataclasses.replace(node.record)
        return node

    def node_running(self, name: str) -> bool:
        """Whether the node's process runs (a paused one runs)."""
        return self.node(name).running()

    def node_ports(self, name: str) -> dict[str, int]:
        """The node's loopback ports by purpose (``client``, ...)."""
        return dict(self.node(name).record.ports)

    def _state_with_records(self) -> StackState:
        with self._lock:
            self._state.records = {s: list(v.records) for s, v in self.services.items()}
            return self._state

    def _save(self) -> None:
        """Write the whole stack's state: only for ``up`` and ``down``, which own
        every node; single-node controls go through :meth:`_persist`."""
        state = self._state_with_records()
        with self._lock:
            save_state(self.dir, state)

    def _persist(self, node: ProcessNode) -> None:
        update_record(self.dir, self._service_of(node.name).service, node.record)
        self.refresh()

    def kill_node(self, name: str) -> None:
        """SIGKILL the node (a crash). A node that is not running is an error:
        a drill that 'killed' nothing would prove nothing."""
        node = self.node(name)
        if not node.running():
            raise NodeNotRunningError(self.name, name)
        node.kill()
        self._persist(node)

    def crash_postgres(self, name: str) -> None:
        """SIGKILL the PostgreSQL server of Patroni node ``name`` and leave Patroni
        running (a crashed database on a live machine; :meth:`kill_node` is the
        machine). Patroni stacks only."""
        node = self.node(name)
        if not isinstance(node, PatroniProcessNode):
            raise InfraError(
                f"{name} of stack {self.name!r} is not a Patroni node; crashing the server "
                "under a live Patroni needs an ha stack"
            )
        if not node.running():
            raise NodeNotRunningError(self.name, name)
        node.crash_server()

    def stop_node(self, name: str) -> None:
        """Stop the node cleanly (its stop signal, then SIGKILL after 10 s)."""
        node = self.node(name)
        node.stop()
        self._persist(node)

    def pause_node(self, name: str) -> None:
        """SIGSTOP: the node keeps its sockets but answers nothing."""
        self.node(name).pause()

    def resume_node(self, name: str) -> None:
        self.node(name).resume()

    def restart_node(self, name: str) -> float:
        """Stop (if running) and start the node again with the same ports and
        data; returns seconds until it answered again."""
        node = self.node(name)
        try:
            return node.restart()
        finally:
            self._persist(node)  # a failed start recorded no pid: that too is the truth

    def disconnect_node(self, name: str) -> None:
        """Not here: processes on loopback share one network namespace."""
        raise NotApplicableError(
            "local",
            f"disconnecting {name}",
            "processes on loopback share one network; partition a path with the "
            "Toxiproxy drills (network-partition) or use a compose stack (--env compose)",
        )

    def reconnect_node(self, name: str) -> None:
        """Not here (see :meth:`disconnect_node`)."""
        self.disconnect_node(name)

    # -- roles -------------------------------------------------------------------

    def roles(self) -> dict[str, str]:
        """Every node's current role, asked of the services themselves."""
        self.refresh()
        out: dict[str, str] = {}
        for svc in self.services.values():
            try:
                out.update(svc.roles())
            except Exception as exc:  # a service with no quorum cannot say
                reason = f"unknown ({type(exc).__name__})"
                for rec in svc.records:
                    out.setdefault(rec.name, reason if ProcessNode(rec).running() else "down")
        return out

    def redis_primary(self) -> str:
        return str(self._svc("redis").primary())

    def postgres_primary(self) -> str:
        return str(self._svc("postgres").primary())

    def postgres_switchover(self, candidate: str) -> float:
        """Make ``candidate`` the PostgreSQL primary (Patroni stacks only);
        returns the seconds it took."""
        svc = self._svc("postgres")
        if not hasattr(svc, "switchover"):
            raise InfraError(
                f"stack {self.name!r} runs PostgreSQL without Patroni; a switchover "
                "needs an ha stack"
            )
        return float(svc.switchover(candidate))

    def kafka_partition_leader(self, topic: str, partition: int) -> str:
        return str(self._svc("kafka").partition_leader(topic, partition))

    def kafka_active_controller(self) -> str:
        return str(self._svc("kafka").active_controller())

    @contextlib.contextmanager
    def kafka_admin(self) -> Iterator[Any]:
        """An admin client of the stack's Kafka (every answering node bootstraps it)."""
        with self._svc("kafka").admin() as admin:
            yield admin

    # -- credentials (backbone_infra.rotation) -------------------------------------

    def keep_redis_acl(self, node: str, admin: redis.Redis) -> None:
        """``CONFIG REWRITE``: the users live in the node's redis.conf, which the
        server rewrites with what it runs (Sentinel's own rewrites keep them too)."""
        admin.config_rewrite()
        conf = self.node(node).record.command[-1]
        if os.path.exists(conf):
            os.chmod(conf, 0o600)  # CONFIG REWRITE creates the file anew

    def keep_credentials(self, old: StackSecrets, new: StackSecrets) -> None:
        """The clients' logins live in the services' own state (Kafka's metadata
        log, PostgreSQL's catalog, Redis's rewritten config): nothing to do. The
        exporters' (``monitor``) are in 0600 files of the monitoring directory,
        read at start: rewrite them and restart each exporter that reads one."""
        monitoring = self.services.get("monitoring")
        root = self.dir / "monitoring"
        if monitoring is None or not monitoring.records or not root.is_dir():
            return
        files = sorted(p for p in root.iterdir() if p.is_file())
        rewritten = [str(p) for p in rewrite_passwords(files, old, new)]
        for rec in list(monitoring.records):
            reads = [*rec.command, *rec.env.values()]
            if any(path in arg for arg in reads for path in rewritten):
                self.restart_node(rec.name)

    def _svc(self, service: str) -> Any:
        self.refresh()
        try:
            return self.services[service]
        except KeyError:
            raise KeyError(f"stack {self.name!r} runs no {service}") from None

    def __repr__(self) -> str:
        return f"LocalStack({self.name!r}, {self.spec.size}, {self.status}, dir={self.dir})"
