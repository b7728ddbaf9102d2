"""PostgreSQL on loopback: a primary and, for ``ha``, synchronous streaming standbys.

``postgres-1`` is created with ``initdb`` (scram-sha-256 everywhere), gets the
application role, database and bars schema (TimescaleDB hypertables when the
extension is available, native range partitions otherwise); ``postgres-2..``
are cloned with ``pg_basebackup -R`` and stream from it. With a standby the
primary's commits wait for it (``synchronous_commit=on`` and
``synchronous_standby_names``), so a killed primary loses no acknowledged commit.

Configuration and roles are rendered by :mod:`backbone_infra.render.postgres` (which
the container targets use too); how PostgreSQL's programs run on this machine
(as a non-root user, the cached ``initdb`` template) is
:mod:`backbone_infra.targets.local.postgres_programs`. Passwords go through 0600 files
owned by the PostgreSQL user (``--pwfile``, a passfile) or as SCRAM verifiers,
never on a command line.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg

from backbone.connections import HostPort, TimescaleConnection
from backbone_infra.errors import InfraError, MissingBinaryError
from backbone_infra.render.certificates import TLSFiles, tls_files
from backbone_infra.render.postgres import (
    SUPERUSER,
    SYNC_STATES,
    pg_hba_conf,
    postgresql_conf,
    scram_verifier,
    synchronous_standby_names,
)
from backbone_infra.spec import StackSpec
from backbone_infra.targets.local.base import LocalService
from backbone_infra.targets.local.ports import LOOPBACK, PortAllocator
from backbone_infra.targets.local.postgres_programs import (
    PG_BIN,
    PG_USER,
    as_pg_user,
    initdb_template,
    run_pg_program,
    single_user,
    write_owned,
)
from backbone_infra.targets.local.process import ProcessNode, ProcessRecord
from backbone_infra.targets.local.secrets import StackSecrets
from backbone_infra.targets.local.service import LocalNodes, wait_until
from backbone_infra.targets.postgres_roles import bootstrap_roles_and_schema

__all__ = ["PG_BIN", "PG_USER", "SUPERUSER", "LocalPostgres"]

_TIMESCALE_CONTROL = Path("/usr/share/postgresql/15/extension/timescaledb.control")
_START_TIMEOUT_S = 30.0
_PROBE_TIMEOUT_S = 2


class LocalPostgres(LocalNodes):
    """Renders ``spec.postgres`` as ``postgres`` processes.

    A spec with ``postgres.patroni`` gets
    :class:`~backbone_infra.targets.local.patroni.LocalPatroni` instead (one
    Patroni per node, each managing its postgres): the provisioner knows one
    renderer per service name, and this is where the choice is made.
    """

    service = "postgres"

    def __new__(cls, spec: StackSpec, *args: Any, **kwargs: Any) -> LocalPostgres:
        if cls is LocalPostgres and spec.postgres.patroni is not None:
            from backbone_infra.targets.local.patroni import LocalPatroni

            return super().__new__(LocalPatroni)
        return super().__new__(cls)

    def __init__(
        self,
        spec: StackSpec,
        stack_dir: Path,
        secrets: StackSecrets,
        records: list[ProcessRecord] | None = None,
    ) -> None:
        super().__init__(spec, stack_dir, secrets, records)
        self.root = self.dir / "postgres"
        self.timescaledb = _TIMESCALE_CONTROL.exists()

    @staticmethod
    def check_installed(spec: StackSpec) -> None:
        """Raise :class:`MissingBinaryError` unless PostgreSQL 15 and, as root,
        its system user are there."""
        for tool in ("postgres", "initdb", "pg_basebackup"):
            if not (PG_BIN / tool).exists():
                raise MissingBinaryError(f"PostgreSQL 15 ({tool})", str(PG_BIN / tool))
        as_pg_user()

    @property
    def node_names(self) -> list[str]:
        return [f"postgres-{i}" for i in range(1, self.spec.postgres.nodes + 1)]

    def _data(self, name: str) -> Path:
        return self.root / name

    @property
    def _passfile(self) -> Path:
        return self.root / "replication.pgpass"

    @property
    def server_tls(self) -> TLSFiles | None:
        """The server's copies of its certificate, key and CA: in its own
        directory, owned by the PostgreSQL user (it refuses a key others can
        read). The standbys' replication connections verify with this CA."""
        return tls_files(str(self.root), "postgres") if self.spec.tls else None

    def _install_tls(self) -> None:
        source, own = self.tls, self.server_tls
        if source is None or own is None:
            return
        for src, dst in ((source.ca, own.ca), (source.cert, own.cert), (source.key, own.key)):
            write_owned(Path(dst), Path(src).read_text())

    def _ssl_kwargs(self) -> dict[str, Any]:
        own = self.server_tls
        if own is None:
            return {"sslmode": "disable"}
        return {"sslmode": "verify-full", "sslrootcert": own.ca}

    # -- prepare -----------------------------------------------------------------

    def prepare(self, ports: PortAllocator, peers: Mapping[str, LocalService]) -> None:
        """Choose ports and create the (empty) PostgreSQL directory owned by the
        PostgreSQL user; ``initdb`` and cloning happen in :meth:`start` so they
        overlap with the other services' start-up."""
        self._ensure_certificates()
        self.check_installed(self.spec)
        prefix = self._make_root()
        self.records = [
            self._new_record(
                name,
                [*prefix, str(PG_BIN / "postgres"), "-D", str(self._data(name)), "-p", str(port)],
                cwd=self.root,
                ports={"client": port},
                # SIGTERM is "smart" shutdown, which waits for every client to leave.
                stop_signal=int(signal.SIGINT),
            )
            for name, port in ((n, ports.allocate()) for n in self.node_names)
        ]

    def _make_root(self) -> list[str]:
        """An empty PostgreSQL directory owned by the PostgreSQL user; returns
        the command prefix that runs a program as that user."""
        prefix, uid, gid = as_pg_user()
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True, mode=0o700)
        if uid is not None and gid is not None:
            os.chown(self.root, uid, gid)
            # The PostgreSQL user must be able to walk into its directory.
            os.chmod(self.dir, os.stat(self.dir).st_mode | 0o111)
        self._install_tls()
        return prefix

    # -- helpers -------------------------------------------------------------------

    def _connect(
        self,
        name: str,
        *,
        dbname: str = "postgres",
        superuser: bool = True,
        autocommit: bool = True,
    ) -> psycopg.Connection:
        user = SUPERUSER if superuser else self.spec.postgres.user
        password = (
            self.secrets.postgres_superuser_password
            if superuser
            else self.secrets.postgres_password
        )
        return psycopg.connect(
            host=LOOPBACK,
            port=self._port(name),
            dbname=dbname,
            user=user,
            password=password,
            connect_timeout=_PROBE_TIMEOUT_S,
            **self._ssl_kwargs(),
            autocommit=autocommit,
        )

    def _answers(self, name: str) -> bool:
        with self._connect(name) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)

    def _config(self) -> str:
        # synchronous_standby_names comes later (_make_synchronous): the
        # bootstrap would otherwise wait for a standby that does not exist yet.
        return postgresql_conf(
            self.spec.postgres,
            listen=LOOPBACK,
            timescaledb=self.timescaledb,
            synchronous=False,
            tls=self.server_tls,
        )

    def _hba(self) -> str:
        return pg_hba_conf(self.spec.postgres, network=f"{LOOPBACK}/32", tls=self.spec.tls)

    # -- start ----------------------------------------------------------------------

    def node(self, name: str) -> ProcessNode:
        return ProcessNode(self._record(name), ready=lambda: self._answers(name))

    def start(self) -> dict[str, float]:
        """``initdb`` and start the primary, create role, database and schema,
        then clone and start each standby and wait until it streams synchronously."""
        began = time.monotonic()
        primary = self.node_names[0]
        self._initdb(primary)
        timings = {primary: self.node(primary).start(timeout=_START_TIMEOUT_S)}
        self._bootstrap(primary)
        for name in self.node_names[1:]:
            t0 = time.monotonic()
            self._clone(primary, name)
            self.node(name).start(timeout=_START_TIMEOUT_S)
            timings[name] = time.monotonic() - t0
        if len(self.node_names) > 1:
            self._wait_streaming(primary, sync=False)
            if self.spec.postgres.synchronous:
                self._make_synchronous(primary)
                self._wait_streaming(primary, sync=True)
        timings[self.service] = time.monotonic() - began
        return timings

    def _initdb(self, name: str) -> None:
        """A fresh cluster: a copy of the cached ``initdb`` template, with this
        stack's superuser password set in single-user mode (no network)."""
        data = self._data(name)
        log = Path(self._record(name).log)
        template = initdb_template(log, cwd=self.root)
        subprocess.run(["cp", "-a", str(template), str(data)], check=True, timeout=120)
        single_user(
            data,
            f"ALTER ROLE {SUPERUSER} PASSWORD "
            f"'{scram_verifier(self.secrets.postgres_superuser_password)}';\n",
            f"{name} set superuser password",
            log,
            cwd=self.root,
        )
        write_owned(data / "postgresql.conf", self._config(), append=True)
        write_owned(data / "pg_hba.conf", self._hba())

    def _bootstrap(self, name: str) -> None:
        self.timescaledb = bootstrap_roles_and_schema(
            lambda dbname, autocommit: self._connect(name, dbname=dbname, autocommit=autocommit),
            self.spec.postgres,
            self.secrets,
            self._bootstrap_statement,
        )

    def _bootstrap_statement(self, conn: psycopg.Connection, statement: str) -> None:
        """Run one of the rendered bootstrap statements (a hook: under Patroni
        some roles exist already)."""
        conn.execute(statement)

    def _clone(self, primary: str, name: str) -> None:
        p = self.spec.postgres
        write_owned(
            self._passfile, f"*:*:*:{p.replication_user}:{self.secrets.replication_password}\n"
        )
        conninfo = (
            f"host={LOOPBACK} port={self._port(primary)} user={p.replication_user} "
            f"application_name={name} passfile={self._passfile} "
            + " ".join(f"{k}={v}" for k, v in self._ssl_kwargs().items())
        )
        if self.spec.tls:
            # libpq offers ~/.postgresql/postgresql.crt when it exists, and the
            # PostgreSQL user runs with the caller's HOME, which it may not
            # read: name a client certificate that does not exist (none is used).
            conninfo += f" sslcert={self.root / 'no-client-certificate'}"
        run_pg_program(
            [
                str(PG_BIN / "pg_basebackup"),
                "-d",
                conninfo,
                "-D",
                str(self._data(name)),
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ],
            f"{name} pg_basebackup",
            Path(self._record(name).log),
            cwd=self.root,
        )

    def _make_synchronous(self, primary: str) -> None:
        """From now on the primary's commits wait for a standby.

        Set only on the primary, once a standby streams (earlier, the bootstrap
        itself would wait for a standby that does not exist yet). The value is
        the one every target renders, ``ANY 1 (*)``: any streaming standby
        counts, so the old primary rejoining as a standby is synchronous again.
        """
        names = synchronous_standby_names(self.spec.postgres)
        if names is None:
            return
        with self._connect(primary) as conn:
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")
            conn.execute("SELECT pg_reload_conf()")

    def _wait_streaming(self, primary: str, *, sync: bool) -> None:
        standbys = set(self.node_names[1:])

        def streaming() -> bool:
            with self._connect(primary) as conn:
                rows = conn.execute(
                    "SELECT application_name, state, sync_state FROM pg_stat_replication"
                ).fetchall()
            seen = {r[0]: (r[1], r[2]) for r in rows}
            if not standbys <= {n for n, (state, _) in seen.items() if state == "streaming"}:
                raise RuntimeError(f"pg_stat_replication: {seen}")
            if sync and not any(state in SYNC_STATES for _, state in seen.values()):
                raise RuntimeError(f"no synchronous standby yet; pg_stat_replication: {seen}")
            return True

        wait_until(
            streaming,
            "standbys streaming" + (" synchronously" if sync else ""),
            _START_TIMEOUT_S,
            node=self.service,
            log=Path(self._record(self.node_names[-1]).log),
            hint="the standby's log says why it does not stream",
        )

    # -- outputs and roles -------------------------------------------------------------

    def connection(self) -> TimescaleConnection:
        p = self.spec.postgres
        try:
            first = self.primary()
        except InfraError:
            first = self.node_names[0]
        order = [first] + [n for n in self.node_names if n != first]
        return TimescaleConnection(
            hosts=[HostPort(host=LOOPBACK, port=self._port(n)) for n in order],
            dbname=p.dbname,
            user=p.user,
            password=self.secrets.postgres_password,
            sslmode="verify-full" if self.spec.tls else "disable",
            sslrootcert=self.ca_file,
            timescaledb=self.timescaledb,
        )

    def roles(self) -> dict[str, str]:
        """``primary`` or ``standby`` per node as ``pg_is_in_recovery()`` says;
        ``down``, ``paused`` or ``unreachable`` otherwise."""

        def ask(rec: ProcessRecord) -> str:
            with self._connect(rec.name) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            return "standby" if row and row[0] else "primary"

        return self._roles(ask, unreachable=(psycopg.Error,))

    def primary(self) -> str:
        """The node that is not in recovery."""
        roles = self.roles()
        primaries = [n for n, role in roles.items() if role == "primary"]
        if len(primaries) != 1:
            raise InfraError(
                f"expected one PostgreSQL primary, found {primaries or 'none'} (roles: {roles}); "
                "check the node logs under the stack's logs/ directory"
            )
        return primaries[0]
