"""PostgreSQL on loopback: a primary and, for ``ha``, synchronous streaming standbys.

``postgres-1`` is created with ``initdb`` (scram-sha-256 everywhere), gets the
application role, database and bars schema (TimescaleDB hypertables when the
extension is available, native range partitions otherwise); ``postgres-2..``
are cloned with ``pg_basebackup -R`` and stream from it. With a standby the
primary's commits wait for it (``synchronous_commit=on`` and
``synchronous_standby_names``), so a killed primary loses no acknowledged commit.

PostgreSQL refuses to run as root: as root, every PostgreSQL program runs as the
system user :data:`PG_USER` through ``setpriv``, which execs (the recorded pid is
the postmaster itself). Passwords go through 0600 files owned by that user
(``--pwfile``, a passfile) or as SCRAM verifiers, never on a command line.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import secrets as pysecrets
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import psycopg

from backbone.connections import HostPort, TimescaleConnection
from backbone.store.schema import schema_statements
from infra.errors import InfraError, MissingBinaryError, ServiceStartError
from infra.render.postgres import (
    INITDB_ARGS,
    SUPERUSER,
    SYNC_STATES,
    bootstrap_statements,
    pg_hba_conf,
    postgresql_conf,
    scram_verifier,
    synchronous_standby_names,
)
from infra.spec import StackSpec
from infra.targets.local.base import LocalService
from infra.targets.local.files import write_private
from infra.targets.local.ports import LOOPBACK, PortAllocator
from infra.targets.local.process import ProcessNode, ProcessRecord, log_tail
from infra.targets.local.secrets import StackSecrets

__all__ = ["PG_BIN", "PG_USER", "SUPERUSER", "LocalPostgres"]

PG_BIN = Path(os.environ.get("HARNESS_PG_BIN", "/usr/lib/postgresql/15/bin"))
#: The system user PostgreSQL runs as when the harness runs as root
#: (created by ``scripts/setup.d/05-postgres-user.sh``).
PG_USER = os.environ.get("BACKBONE_PG_USER", "backbone-pg")
_TIMESCALE_CONTROL = Path("/usr/share/postgresql/15/extension/timescaledb.control")
_START_TIMEOUT_S = 30.0
#: Where the ``initdb`` template is cached (see ``LocalPostgres._template``).
_TEMPLATE_CACHE = (
    Path(os.environ.get("HARNESS_CACHE_DIR", Path(__file__).resolve().parents[3] / ".cache"))
    / "postgres-template"
)
_PROBE_TIMEOUT_S = 2


def _cmd_output(args: list[str]) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=False).stdout.strip()


def _as_pg_user() -> tuple[list[str], int | None, int | None]:
    """Command prefix, uid and gid for running PostgreSQL programs."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        pw = pwd.getpwnam(PG_USER)
    except KeyError:
        raise MissingBinaryError(
            f"the system user {PG_USER!r} (PostgreSQL refuses to run as root)",
            "getent passwd",
        ) from None
    prefix = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups"]
    return prefix, pw.pw_uid, pw.pw_gid


class LocalPostgres:
    """Renders ``spec.postgres`` as ``postgres`` processes."""

    service = "postgres"

    def __init__(
        self,
        spec: StackSpec,
        stack_dir: Path,
        secrets: StackSecrets,
        records: list[ProcessRecord] | None = None,
    ) -> None:
        self.spec = spec
        self.dir = stack_dir.resolve()
        self.root = self.dir / "postgres"
        self.secrets = secrets
        self.records: list[ProcessRecord] = list(records or [])
        self.timescaledb = _TIMESCALE_CONTROL.exists()

    @staticmethod
    def check_installed(spec: StackSpec) -> None:
        """Raise :class:`MissingBinaryError` unless PostgreSQL 15 and, as root,
        its system user are there."""
        for tool in ("postgres", "initdb", "pg_basebackup"):
            if not (PG_BIN / tool).exists():
                raise MissingBinaryError(f"PostgreSQL 15 ({tool})", str(PG_BIN / tool))
        _as_pg_user()

    @property
    def node_names(self) -> list[str]:
        return [f"postgres-{i}" for i in range(1, self.spec.postgres.nodes + 1)]

    def _record(self, name: str) -> ProcessRecord:
        for rec in self.records:
            if rec.name == name:
                return rec
        raise KeyError(
            f"no PostgreSQL node named {name!r}; nodes: {[r.name for r in self.records]}"
        )

    def _port(self, name: str) -> int:
        return self._record(name).ports["client"]

    def _data(self, name: str) -> Path:
        return self.root / name

    @property
    def _passfile(self) -> Path:
        return self.root / "replication.pgpass"

    # -- prepare -----------------------------------------------------------------

    def prepare(self, ports: PortAllocator, peers: Mapping[str, LocalService]) -> None:
        """Choose ports and create the (empty) PostgreSQL directory owned by the
        PostgreSQL user; ``initdb`` and cloning happen in :meth:`start` so they
        overlap with the other services' start-up."""
        self.check_installed(self.spec)
        prefix, uid, gid = _as_pg_user()
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True, mode=0o700)
        if uid is not None and gid is not None:
            os.chown(self.root, uid, gid)
            # The PostgreSQL user must be able to walk into its directory.
            os.chmod(self.dir, os.stat(self.dir).st_mode | 0o111)
        self.records = [
            ProcessRecord(
                name=name,
                service=self.service,
                command=[
                    *prefix,
                    str(PG_BIN / "postgres"),
                    "-D",
                    str(self._data(name)),
                    "-p",
                    str(port),
                ],
                log=str(self.dir / "logs" / f"{name}.log"),
                cwd=str(self.root),
                ports={"client": port},
                # SIGTERM is "smart" shutdown, which waits for every client to leave.
                stop_signal=int(signal.SIGINT),
            )
            for name, port in ((n, ports.allocate()) for n in self.node_names)
        ]

    # -- helpers -------------------------------------------------------------------

    def _run(self, args: list[str], what: str, log: Path) -> None:
        """Run a PostgreSQL tool as the PostgreSQL user; its output goes to ``log``."""
        prefix, _, _ = _as_pg_user()
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            out.write(f"\n--- {what} ---\n".encode())
            out.flush()
            proc = subprocess.run(
                [*prefix, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
                check=False,
                timeout=120,
            )
        if proc.returncode != 0:
            raise ServiceStartError(
                what, f"failed with exit code {proc.returncode}", log, log_tail(log)
            )

    def _write_owned(self, path: Path, text: str, *, append: bool = False) -> None:
        """Write a file readable only by the PostgreSQL user."""
        _, uid, gid = _as_pg_user()
        owner = (uid, gid) if uid is not None and gid is not None else None
        write_private(path, text, append=append, owner=owner)

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
            sslmode="disable",
            connect_timeout=_PROBE_TIMEOUT_S,
            autocommit=autocommit,
        )

    def _answers(self, name: str) -> bool:
        with self._connect(name) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)

    def _config(self) -> str:
        # synchronous_standby_names comes later (_make_synchronous): the
        # bootstrap would otherwise wait for a standby that does not exist yet.
        return postgresql_conf(
            self.spec.postgres, listen=LOOPBACK, timescaledb=self.timescaledb, synchronous=False
        )

    def _hba(self) -> str:
        return pg_hba_conf(self.spec.postgres, network=f"{LOOPBACK}/32")

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
        template = self._template(log)
        subprocess.run(["cp", "-a", str(template), str(data)], check=True, timeout=120)
        self._single_user(
            data,
            f"ALTER ROLE {SUPERUSER} PASSWORD "
            f"'{scram_verifier(self.secrets.postgres_superuser_password)}';\n",
            f"{name} set superuser password",
            log,
        )
        self._write_owned(data / "postgresql.conf", self._config(), append=True)
        self._write_owned(data / "pg_hba.conf", self._hba())

    def _template(self, log: Path) -> Path:
        """An ``initdb`` output cached per machine (and PostgreSQL build): the
        same for every stack except the superuser password, which is reset on
        each copy. Built once under a lock; later stacks skip ``initdb``."""
        _, uid, gid = _as_pg_user()
        build = _cmd_output([str(PG_BIN / "postgres"), "--version"])
        key = hashlib.sha256(f"{PG_BIN}|{build}|{INITDB_ARGS}|{uid}".encode()).hexdigest()[:12]
        cache = _TEMPLATE_CACHE / key
        if (cache / "PG_VERSION").exists():
            return cache
        _TEMPLATE_CACHE.mkdir(parents=True, exist_ok=True)
        with (_TEMPLATE_CACHE / f"{key}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (cache / "PG_VERSION").exists():
                return cache
            building = _TEMPLATE_CACHE / f"{key}.building-{os.getpid()}"
            shutil.rmtree(building, ignore_errors=True)
            building.mkdir(mode=0o700)
            if uid is not None and gid is not None:
                os.chown(building, uid, gid)
            pwfile = building / "pw"
            # A throwaway password: every copy gets its own before it starts.
            self._write_owned(pwfile, pysecrets.token_urlsafe(24) + "\n")
            try:
                self._run(
                    [
                        str(PG_BIN / "initdb"),
                        "-D",
                        str(building / "data"),
                        f"--pwfile={pwfile}",
                        *INITDB_ARGS,
                    ],
                    "initdb (template, once per machine)",
                    log,
                )
            finally:
                pwfile.unlink(missing_ok=True)
            os.replace(building / "data", cache)
            shutil.rmtree(building, ignore_errors=True)
        return cache

    def _single_user(self, data: Path, sql: str, what: str, log: Path) -> None:
        """Run SQL in single-user mode (stdin, never a command line)."""
        prefix, _, _ = _as_pg_user()
        with log.open("ab") as out:
            out.write(f"\n--- {what} ---\n".encode())
            out.flush()
            proc = subprocess.run(
                [*prefix, str(PG_BIN / "postgres"), "--single", "-D", str(data), "-j", "postgres"],
                input=sql.encode(),
                stdout=subprocess.DEVNULL,
                stderr=out,
                cwd=self.root,
                check=False,
                timeout=60,
            )
        if proc.returncode != 0:
            raise ServiceStartError(
                what, f"failed with exit code {proc.returncode}", log, log_tail(log)
            )

    def _bootstrap(self, name: str) -> None:
        p = self.spec.postgres
        with self._connect(name) as conn:
            for statement in bootstrap_statements(
                p,
                password_verifier=scram_verifier(self.secrets.postgres_password),
                replication_verifier=scram_verifier(self.secrets.replication_password),
            ):
                conn.execute(statement)  # type: ignore[arg-type]
            row = conn.execute(
                "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
            ).fetchone()
        self.timescaledb = bool(row and row[0])
        statements = schema_statements(
            timescaledb=self.timescaledb,
            chunk_interval_days=p.chunk_interval_days,
            compress_after_days=p.compress_after_days,
            retention_days=p.retention_days,
        )
        if self.timescaledb:  # the extension is created by a superuser
            with self._connect(name, dbname=p.dbname) as conn:
                conn.execute(statements[0])
                statements = statements[1:]
        with self._connect(name, dbname=p.dbname, superuser=False, autocommit=False) as conn:
            for stmt in statements:
                conn.execute(stmt)  # type: ignore[arg-type]
            conn.commit()

    def _clone(self, primary: str, name: str) -> None:
        p = self.spec.postgres
        self._write_owned(
            self._passfile, f"*:*:*:{p.replication_user}:{self.secrets.replication_password}\n"
        )
        conninfo = (
            f"host={LOOPBACK} port={self._port(primary)} user={p.replication_user} "
            f"application_name={name} passfile={self._passfile} sslmode=disable"
        )
        self._run(
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
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")  # type: ignore[arg-type]
            conn.execute("SELECT pg_reload_conf()")

    def _wait_streaming(self, primary: str, *, sync: bool) -> None:
        standbys = set(self.node_names[1:])
        deadline = time.monotonic() + _START_TIMEOUT_S
        seen: dict[str, tuple[str, str]] = {}
        while time.monotonic() < deadline:
            with self._connect(primary) as conn:
                rows = conn.execute(
                    "SELECT application_name, state, sync_state FROM pg_stat_replication"
                ).fetchall()
            seen = {r[0]: (r[1], r[2]) for r in rows}
            streaming = {n for n, (state, _) in seen.items() if state == "streaming"}
            if standbys <= streaming and (
                not sync or any(state in SYNC_STATES for _, state in seen.values())
            ):
                return
            time.sleep(0.05)
        log = Path(self._record(self.node_names[-1]).log)
        raise ServiceStartError(
            "postgres",
            f"standbys not streaming within {_START_TIMEOUT_S:.0f}s (pg_stat_replication: {seen})",
            log,
            log_tail(log),
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
            password=self.secrets.postgres_password,  # type: ignore[arg-type]
            sslmode="disable",
            timescaledb=self.timescaledb,
        )

    def roles(self) -> dict[str, str]:
        """``primary`` or ``standby`` per node as ``pg_is_in_recovery()`` says;
        ``down``, ``paused`` or ``unreachable`` otherwise."""
        out: dict[str, str] = {}
        for rec in self.records:
            node = ProcessNode(rec)
            if not node.running():
                out[rec.name] = "down"
            elif node.paused():
                out[rec.name] = "paused"
            else:
                try:
                    with self._connect(rec.name) as conn:
                        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                    out[rec.name] = "standby" if row and row[0] else "primary"
                except psycopg.Error:
                    out[rec.name] = "unreachable"
        return out

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
