"""Drill: SIGKILL the PostgreSQL synchronous standby while bars are committed.

The primary runs ``synchronous_commit=on`` with ``synchronous_standby_names =
'ANY 1 (*)'``: a commit returns only once a standby has the WAL. With the
only standby down, commits *wait* — the documented price of losing no
committed transaction when the primary dies. The drill holds the fault for
:data:`HOLD_S`, measures how long commits were blocked, restarts the standby,
waits until it streams synchronously again, and checks every commit that
returned is stored.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Hashable, Iterator
from typing import Any

import psycopg

from backbone.bars import Bar
from backbone.job_logins import harness_section
from backbone.settings import TimescaleConnectionSettings
from backbone.store.timescale import TimescaleStore
from backbone_harness.drills.base import Drill, Fault, wait_until
from backbone_harness.drills.writer import drill_bars, stored_keys
from backbone_infra.render.postgres import SYNC_STATES
from backbone_infra.targets.local.secrets import StackSecrets

__all__ = ["PostgresStandbyKillDrill"]

#: How long the standby stays down.
HOLD_S = 6.0  # at least; the runner may hold longer (--hold)


def _synchronous(replication: tuple[str, str] | None) -> bool:
    """Streaming, and a standby commits wait for (``quorum`` under ``ANY 1 (*)``)."""
    return (
        replication is not None
        and replication[0] == "streaming"
        and (replication[1] in SYNC_STATES)
    )


class PostgresStandbyKillDrill(Drill):
    name = "postgres-standby-kill"
    summary = (
        "SIGKILL the synchronous standby under synchronous_commit=on: commits wait "
        "until it is back (the trade-off), none acknowledged is lost"
    )
    fault = Fault(role="the PostgreSQL synchronous standby", kind="kill")
    #: Seconds writes may stop (issue 12's target: a quorum (ANY 1) commit
    #: does not wait for a lost standby).
    max_unavailable_s: float | None = 2.0
    min_acknowledged = 200

    def __init__(self, stack: Any) -> None:
        super().__init__(stack)
        doc = stack.document
        if doc.timescale is None or len(doc.timescale.hosts) < 2:
            raise ValueError(f"stack {stack.name!r} has no PostgreSQL standby; use an ha stack")
        self.doc = doc
        prefix = f"DP{secrets.token_hex(2).upper()}"
        self.symbols = [f"{prefix}{i}" for i in range(4)]
        self.store: TimescaleStore | None = None

    def _replication(self) -> dict[str, tuple[str, str]]:
        """``application_name -> (state, sync_state)`` as the primary sees it."""
        primary = self.stack.postgres_primary()
        port = self.stack.node_ports(primary)["client"]
        password = StackSecrets.load(self.stack.dir).postgres_superuser_password
        host = self.doc.timescale.hosts[0].host
        with psycopg.connect(
            host=host,
            port=port,
            dbname="postgres",
            user="postgres",
            password=password,
            sslmode=self.doc.timescale.sslmode,
            sslrootcert=self.doc.timescale.sslrootcert,
            connect_timeout=3,
            autocommit=True,
        ) as conn:
            rows = conn.execute(
                "SELECT application_name, state, sync_state FROM pg_stat_replication"
            ).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def target(self) -> str:
        sync = [n for n, (_, mode) in self._replication().items() if mode in SYNC_STATES]
        if not sync:
            raise RuntimeError("the PostgreSQL primary has no synchronous standby now")
        return sync[0]

    def prepare(self) -> None:
        # It writes bars (and reads them back): the consumer's login, as Backbone's store.
        self.store = TimescaleStore(
            TimescaleConnectionSettings.from_section(
                harness_section(self.doc, "store"), pool_max_size=2
            ),
            timeout=60.0,
        )

    def bars(self) -> Iterator[Bar]:
        return drill_bars(self.symbols, "1m")

    def write(self, bars: list[Bar]) -> None:
        assert self.store is not None
        self.store.write(bars)

    def during_fault(self, node: str) -> None:
        time.sleep(HOLD_S)

    def recover(self, node: str) -> None:
        self.fault.undo(self.stack, node)
        took = wait_until(
            lambda: _synchronous(self._replication().get(node)),
            60,
            f"{node} to stream synchronously again",
        )
        self.figures["sync_again_after_restart_s"] = round(took, 2)

    def found_keys(self, acknowledged: list[Any]) -> list[Hashable]:
        store = self.store
        assert store is not None
        found = stored_keys(store, self.symbols, "1m")
        self.figures["trade_off"] = (
            "commits wait while the only synchronous standby is down "
            "(synchronous_commit=on); see slowest write and unavailable seconds"
        )
        return found

    def close(self) -> None:
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.close()
