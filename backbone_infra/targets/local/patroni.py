"""PostgreSQL under Patroni on loopback: automatic failover for the ``ha`` size.

One Patroni process per node (``postgres-1..N``), each managing its own
postgres and holding its cluster state in the stack's etcd
(:mod:`backbone_infra.targets.local.etcd`). ``postgres-1`` starts first and
bootstraps the cluster (``initdb``, the superuser and replication roles); the
application role, database and bars schema are then created as for plain
PostgreSQL; the standbys clone themselves from the leader. Commits wait for
any one standby (Patroni's quorum mode); when the primary dies, Patroni
promotes a standby the quorum guarantees to hold every acknowledged commit,
and the old primary rejoins as a standby (pg_rewind) when it comes back.

``patroni.yml`` is rendered by :mod:`backbone_infra.render.patroni`; this
module only says where things live on this machine. Roles come from each
node's Patroni REST API.

A node is the Patroni process *and* its postgres: Patroni starts postgres in
a session of its own (so that a Patroni restart does not take the database
down), so killing the node's process group would leave postgres running.
:class:`PatroniProcessNode` kills and stops both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import sysconfig
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil
import psycopg

from backbone_infra.errors import InfraError, MissingBinaryError
from backbone_infra.render.patroni import PatroniMember, patroni_config, patroni_yaml
from backbone_infra.spec import StackSpec
from backbone_infra.targets.local.base import LocalService
from backbone_infra.targets.local.ports import LOOPBACK, PortAllocator
from backbone_infra.targets.local.postgres import LocalPostgres
from backbone_infra.targets.local.postgres_programs import PG_BIN, write_owned
from backbone_infra.targets.local.process import ProcessNode, ProcessRecord, ReadyCheck
from backbone_infra.targets.local.service import start_together, wait_until
from backbone_infra.targets.patroni_api import (
    PROBE_TIMEOUT_S,
    cluster_roles,
    describe_role,
    rest_call,
)

__all__ = ["LocalPatroni", "PatroniProcessNode", "patroni_command", "patroni_executable"]

#: ``initdb`` and the first start of the leader, or a clone of a standby.
_START_TIMEOUT_S = 120.0
_PROBE_TIMEOUT_S = PROBE_TIMEOUT_S
#: Pause between switchover attempts Patroni refused or rolled back.
_SWITCHOVER_RETRY_S = 2.0


def patroni_executable() -> Path:
    """The ``patroni`` script of the environment this code runs in."""
    return Path(sys.executable).parent / "patroni"


def patroni_command(prefix: list[str], config: Path) -> tuple[list[str], dict[str, str]]:
    """Command and extra environment that run Patroni as the PostgreSQL user.

    Patroni starts postgres from a freshly spawned interpreter
    (``multiprocessing`` "spawn", so the postmaster outlives it). As root the
    environment's interpreter may live where that user cannot execute it (a
    virtualenv made from ``/root/.pyenv``), and the spawned child then dies
    before postgres starts. So, as the PostgreSQL user, the system's
    interpreter of the same minor version runs Patroni with this environment's
    packages on ``PYTHONPATH``.
    """
    if not prefix:
        return [str(patroni_executable()), str(config)], {}
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not system.exists():
        return [*prefix, str(patroni_executable()), str(config)], {}
    packages = sysconfig.get_paths()["purelib"]
    # -S: no site module, so Debian's dist-packages (other builds of the same
    # libraries) stay out; the spawned child inherits the flag.
    return [*prefix, str(system), "-S", "-m", "patroni", str(config)], {"PYTHONPATH": packages}


class PatroniProcessNode(ProcessNode):
    """A Patroni node: the Patroni process and the postmaster it started."""

    def __init__(self, record: ProcessRecord, ready: ReadyCheck | None, data_dir: Path) -> None:
        super().__init__(record, ready)
        self.data_dir = data_dir

    def postmaster(self) -> psutil.Process | None:
        """The postmaster serving this node's data directory, if one runs."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            proc = psutil.Process(pid)
            if str(self.data_dir) in " ".join(proc.cmdline()):
                return proc
        except (OSError, ValueError, IndexError, psutil.Error):
            pass
        return None

    def kill(self) -> None:
        """SIGKILL Patroni, then its postmaster's group (the whole node crashes)."""
        postmaster = self.postmaster()
        super().kill()
        if postmaster is not None:
            # Patroni's helper made a session (and group) of its own and exited;
            # the postmaster and its backends are that group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(postmaster.pid), signal.SIGKILL)
            with contextlib.suppress(psutil.Error):
                postmaster.wait(5)

    def crash_server(self) -> None:
        """SIGKILL the postmaster's group (PostgreSQL and its backends), not Patroni:
        the database server crashes while its agent lives on to act on it."""
        postmaster = self.postmaster()
        if postmaster is None:
            raise RuntimeError(
                f"{self.name} runs no postmaster to crash; check `harness node roles`"
            )
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(postmaster.pid), signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            postmaster.wait(5)

    def stop(self, timeout: float = 10.0) -> None:
        """Patroni's clean stop (it shuts postgres down); the postmaster is
        stopped too if it outlived Patroni."""
        postmaster = self.postmaster()
        super().stop(timeout)
        if postmaster is not None and postmaster.is_running():
            with contextlib.suppress(psutil.Error):
                postmaster.send_signal(signal.SIGINT)  # fast shutdown
                postmaster.wait(timeout)
            with contextlib.suppress(psutil.Error):
                postmaster.kill()


class LocalPatroni(LocalPostgres):
    """Renders ``spec.postgres`` as one Patroni process per node (see the module doc)."""

    @staticmethod
    def check_installed(spec: StackSpec) -> None:
        LocalPostgres.check_installed(spec)
        if not patroni_executable().exists():
            raise MissingBinaryError(
                "Patroni (pip package patroni[etcd3,psycopg3], installed by make setup)",
                str(patroni_executable()),
            )

    def _yml(self, name: str) -> Path:
        return self.root / f"{name}.yml"

    def prepare(self, ports: PortAllocator, peers: Mapping[str, LocalService]) -> None:
        """Choose ports and write each node's ``patroni.yml`` (0600, the
        PostgreSQL user's: it holds the superuser and replication passwords)."""
        self.check_installed(self.spec)
        etcd = peers.get("etcd")
        if etcd is None or not etcd.records:
            raise InfraError("Patroni needs the stack's etcd, which was not prepared")
        etcd_hosts = [f"{LOOPBACK}:{rec.ports['client']}" for rec in etcd.records]
        prefix = self._make_root()
        self.records = []
        for name in self.node_names:
            port, rest = ports.allocate(), ports.allocate()
            member = PatroniMember(
                name=name,
                listen=f"{LOOPBACK}:{port}",
                connect_address=f"{LOOPBACK}:{port}",
                rest_listen=f"{LOOPBACK}:{rest}",
                rest_connect_address=f"{LOOPBACK}:{rest}",
                data_dir=str(self._data(name)),
                bin_dir=str(PG_BIN),
                pgpass=str(self.root / f"{name}.pgpass"),
            )
            config = patroni_config(
                self.spec.postgres,
                member,
                etcd_hosts=etcd_hosts,
                network=f"{LOOPBACK}/32",
                superuser_password=self.secrets.postgres_superuser_password,
                replication_password=self.secrets.replication_password,
                timescaledb=self.timescaledb,
                tls=self.server_tls,
                client_ssl=self._patroni_client_ssl(),
            )
            write_owned(self._yml(name), patroni_yaml(config))
            command, env = patroni_command(prefix, self._yml(name))
            self.records.append(
                self._new_record(
                    name, command, cwd=self.root, ports={"client": port, "rest": rest}, env=env
                )
            )

    def _patroni_client_ssl(self) -> dict[str, str] | None:
        """libpq settings of Patroni's own connections (superuser, replication,
        pg_rewind): verified TLS, and a client certificate path that does not
        exist, as for a plain standby's clone (the PostgreSQL user runs with the
        caller's HOME, whose ~/.postgresql it may not read)."""
        own = self.server_tls
        if own is None:
            return None
        return {
            "sslmode": "verify-full",
            "sslrootcert": own.ca,
            "sslcert": str(self.root / "no-client-certificate"),
        }

    # -- the REST API ------------------------------------------------------------------

    def rest(
        self,
        name: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        timeout: float = _PROBE_TIMEOUT_S,
    ) -> tuple[int, Any]:
        """``(HTTP status, JSON body)`` of Patroni's REST API on node ``name``
        (a POST when ``body`` is given). Patroni answers 503 with a body for
        "not in that role"; that is an answer, not an error."""
        url = f"http://{LOOPBACK}:{self._port(name, 'rest')}{path}"
        return rest_call(url, body, timeout=timeout)

    def _running(self, name: str) -> bool:
        """Patroni answers and its postgres runs (any role)."""
        status, _ = self.rest(name, "/health")
        return status == 200

    def _answers_as(self, name: str, role: str) -> bool:
        status, _ = self.rest(name, f"/{role}")
        return status == 200

    # -- start -------------------------------------------------------------------------

    def node(self, name: str) -> ProcessNode:
        return PatroniProcessNode(
            self._record(name), ready=lambda: self._running(name), data_dir=self._data(name)
        )

    def start(self) -> dict[str, float]:
        """Start the leader and wait until it bootstrapped the cluster; create
        the application role, database and schema; then start the standbys
        together and wait until they stream and one is in the commit quorum."""
        began = time.monotonic()
        primary, standbys = self.node_names[0], self.node_names[1:]
        leader = PatroniProcessNode(
            self._record(primary),
            ready=lambda: self._answers_as(primary, "primary"),
            data_dir=self._data(primary),
        )
        timings = {primary: leader.start(timeout=_START_TIMEOUT_S)}
        self._bootstrap(primary)
        nodes = [
            PatroniProcessNode(
                self._record(n),
                ready=lambda n=n: self._answers_as(n, "replica"),  # type: ignore[misc]
                data_dir=self._data(n),
            )
            for n in standbys
        ]
        started, errors = start_together(nodes, timeout=_START_TIMEOUT_S)
        if errors:
            raise errors[0]
        timings.update(started)
        if standbys:
            self._wait_streaming(primary, sync=self.spec.postgres.synchronous)
            # Patroni records the quorum in etcd a loop after PostgreSQL has it;
            # a stack is up once its roles say what they will say from now on.
            wait_until(
                lambda: all(self.roles()[n] == "standby (quorum)" for n in standbys),
                "Patroni to count every standby in the commit quorum",
                _START_TIMEOUT_S,
                node=self.service,
                log=Path(self._record(primary).log),
                poll=0.2,
            )
        timings[self.service] = time.monotonic() - began
        return timings

    def _bootstrap_statement(self, conn: psycopg.Connection, statement: str) -> None:
        # Patroni created the replication role (and keeps its password) while
        # bootstrapping; the rendered statement for it finds it there.
        with contextlib.suppress(psycopg.errors.DuplicateObject):
            conn.execute(statement)

    # -- roles -----------------------------------------------------------------------

    def _quorum(self) -> dict[str, str]:
        """Member name -> Patroni's cluster role (``leader``, ``quorum_standby``,
        ``sync_standby``, ``replica``), from the first node that answers."""
        for rec in self.records:
            try:
                status, body = self.rest(rec.name, "/cluster")
            except OSError:
                continue
            if status == 200 and isinstance(body, dict):
                return cluster_roles(body)
        return {}

    def roles(self) -> dict[str, str]:
        """Each node's role as its own Patroni says: ``primary``, or ``standby``
        with ``(quorum)`` when commits may wait for it; a state other than
        ``running`` is added (``standby (starting)``)."""
        cluster = self._quorum()

        def ask(rec: ProcessRecord) -> str:
            status, body = self.rest(rec.name, "/patroni")
            return describe_role(status, body, cluster.get(rec.name, ""))

        return self._roles(ask, unreachable=(OSError,))

    def _settled_primary(self, deadline: float) -> str | None:
        """The primary once exactly one answers (None if none does by ``deadline``)."""
        while True:
            try:
                return self.primary()
            except InfraError:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.5)

    def switchover(self, candidate: str, timeout_s: float = 60.0) -> float:
        """Hand the primary role to ``candidate`` (a planned switchover through
        Patroni); returns the seconds until ``candidate`` is primary."""
        leader = self.primary()
        if leader == candidate:
            return 0.0
        began = time.monotonic()
        deadline = began + timeout_s
        while True:
            # Patroni answers once the switchover is done (or failed): wait for it.
            status, body = self.rest(
                candidate,
                "/switchover",
                {"leader": leader, "candidate": candidate},
                timeout=max(5.0, deadline - time.monotonic()),
            )
            if status == 200:
                break
            # A refused or failed attempt leaves (or puts back) the old leader; a
            # candidate that just rejoined may need a few more loops to be counted
            # healthy. Try again, once a primary answers, until the deadline.
            now = self._settled_primary(deadline)
            if now == candidate:
                break
            if now != leader or time.monotonic() + _SWITCHOVER_RETRY_S > deadline:
                raise InfraError(
                    f"Patroni refused the switchover {leader} -> {candidate} ({status}: {body}); "
                    f"check `harness node roles`: {candidate} must be a streaming quorum standby"
                )
            time.sleep(_SWITCHOVER_RETRY_S)
        wait_until(
            lambda: self.primary() == candidate,
            f"{candidate} to be primary",
            timeout_s,
            node=candidate,
            log=Path(self._record(candidate).log),
            poll=0.2,
        )
        return time.monotonic() - began
