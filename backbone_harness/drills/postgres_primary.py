"""Drills: the PostgreSQL primary crashes (its server, or its whole node) while bars are committed.

The ``ha`` stack runs PostgreSQL under Patroni, locally and on compose (one
rendering of ``patroni.yml``): commits wait for any one of two standbys
(quorum mode), so every acknowledged commit is on a standby when the primary
dies. Both drills ask Patroni which node is primary *now*:

- ``postgres-primary-kill`` SIGKILLs that node's PostgreSQL server (postmaster
  and backends) and leaves Patroni running, as when the database crashes on a
  live machine (on compose: inside the node's container, whose main process
  is Patroni). With ``primary_start_timeout: 0`` Patroni does not restart it
  in place: it releases the leader key at its next loop and a quorum standby
  takes it, so the failover takes a loop or two, not the key's ``ttl``.
- ``postgres-node-kill`` SIGKILLs Patroni and postgres together (a crashed
  machine; on compose the node's container is killed): no one releases the
  leader key, and the standbys wait until its ``ttl`` (20 s at least, Patroni's floor) runs out.

The writer keeps committing through the store client, whose multi-host
connection (``target_session_attrs=read-write``) finds the new primary; a
batch whose commit outcome the kill hid is retried, and the ``ON CONFLICT DO
NOTHING`` upsert stores it once. Then the old primary must rejoin as a
standby (pg_rewind onto the new timeline; Patroni restarts the crashed server
itself, a killed node is restarted), and a Patroni switchover hands the
primary role back to it: the stack as found.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from backbone.bars import Bar
from backbone.job_logins import harness_section
from backbone.settings import TimescaleConnectionSettings
from backbone.store.timescale import TimescaleStore
from backbone_harness.drills.base import Drill, Fault, wait_until
from backbone_harness.drills.writer import DRILL_SPAN, drill_bars
from backbone_harness.stacks import Stack
from backbone_infra.targets.local.stack import LocalStack

__all__ = ["PostgresNodeKillDrill", "PostgresPrimaryKillDrill", "PostgresServerCrash"]

#: The role a rejoined node must reach: streaming, and in the commit quorum.
QUORUM_STANDBY = "standby (quorum)"
#: What both drills say they need where they do not apply.
NEEDS = "PostgreSQL under Patroni (an ha stack: local or compose)"


class PatroniStack(Protocol):
    """What the drills need of a stack that runs PostgreSQL under Patroni, besides
    :class:`~backbone_harness.stacks.Stack`: the local stack and the compose one."""

    def crash_postgres(self, name: str) -> None: ...

    def postgres_switchover(self, candidate: str) -> float: ...


#: How long the failover may take before the drill gives up (a lost node's
#: leader key lives 20 s at least; this leaves room for a loaded machine).
FAILOVER_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class PostgresServerCrash(Fault):
    """SIGKILL a Patroni node's PostgreSQL server; its Patroni stays up.

    Undone by Patroni itself (it restarts the server, as a standby once a
    standby has taken over); ``undo`` restarts the node only if Patroni is gone too.
    """

    def apply(self, stack: Stack, node: str) -> None:
        cast(PatroniStack, stack).crash_postgres(node)

    def undo(self, stack: Stack, node: str) -> None:
        if not stack.node_running(node):
            stack.restart_node(node)


class PostgresPrimaryKillDrill(Drill):
    name = "postgres-primary-kill"
    summary = (
        "SIGKILL the PostgreSQL primary's server (Patroni lives): Patroni fails over to "
        "a quorum standby at once, none acknowledged is lost or stored twice, the old "
        "primary rejoins as a standby"
    )
    fault: Fault = PostgresServerCrash(
        role="the PostgreSQL primary's server (postmaster; Patroni kept)", kind="kill"
    )
    min_acknowledged = 200
    #: Seconds writes may stop: issue 12's target (Patroni fails over at its next loop).
    max_unavailable_s: float | None = 15.0
    needs = NEEDS

    def __init__(self, stack: Any) -> None:
        super().__init__(stack)
        doc = stack.document
        if stack.spec.postgres.patroni is None or doc.timescale is None:
            raise ValueError(
                f"stack {stack.name!r} runs PostgreSQL without Patroni; use an ha stack"
            )
        self.doc = doc
        prefix = f"DF{secrets.token_hex(2).upper()}"
        self.symbols = [f"{prefix}{i}" for i in range(4)]
        self.store: TimescaleStore | None = None

    def target(self) -> str:
        return str(self.stack.postgres_primary())

    def prepare(self) -> None:
        # The pool waits up to the timeout for a read-write node: long enough
        # to ride out the failover, so the writer's retry lands on the new primary.
        # It writes bars (and reads them back): the consumer's login, as Backbone's store.
        self.store = TimescaleStore(
            TimescaleConnectionSettings.from_section(
                harness_section(self.doc, "store"), pool_max_size=2
            ),
            timeout=FAILOVER_TIMEOUT_S,
        )

    def bars(self) -> Iterator[Bar]:
        return drill_bars(self.symbols, "1m")

    def write(self, bars: list[Bar]) -> None:
        assert self.store is not None
        self.store.write(bars)

    def _new_primary(self, old: str) -> str | None:
        primary = str(self.stack.postgres_primary())
        return primary if primary != old else None

    def during_fault(self, node: str) -> None:
        took = wait_until(
            lambda: self._new_primary(node) is not None,
            FAILOVER_TIMEOUT_S,
            "Patroni to promote a standby",
        )
        self.figures["failover_s"] = round(took, 2)
        self.figures["new_primary"] = str(self.stack.postgres_primary())

    def recover(self, node: str) -> None:
        log_at = len(_node_log(self.stack, node))
        began = time.monotonic()
        self.fault.undo(self.stack, node)
        wait_until(
            lambda: self.stack.roles().get(node) == QUORUM_STANDBY,
            FAILOVER_TIMEOUT_S,
            f"{node} to rejoin as a streaming quorum standby",
        )
        self.figures["rejoined_as_standby_s"] = round(time.monotonic() - began, 2)
        self.figures["pg_rewind"] = _rewound(_node_log(self.stack, node)[log_at:])
        # As found: Patroni hands the primary role back to the original node.
        switched = cast(PatroniStack, self.stack).postgres_switchover(node)
        self.figures["switched_back_s"] = round(switched, 2)
        wait_until(
            lambda: all(
                role == QUORUM_STANDBY
                for name, role in self.stack.roles().items()
                if name.startswith("postgres-") and name != node
            ),
            FAILOVER_TIMEOUT_S,
            "the other PostgreSQL nodes to follow as quorum standbys",
        )

    def found_keys(self, acknowledged: list[Any]) -> list[Hashable]:
        store = self.store
        assert store is not None
        found: list[Hashable] = []
        for symbol in self.symbols:
            found.extend(b.key for b in store.read(symbol, "1m", *DRILL_SPAN))
        self.figures["retried_transactions"] = store.retried_transactions
        return found

    def close(self) -> None:
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.close()


class PostgresNodeKillDrill(PostgresPrimaryKillDrill):
    name = "postgres-node-kill"
    summary = (
        "SIGKILL the PostgreSQL primary's whole node (Patroni and postgres): a standby "
        "is promoted once the leader key's ttl runs out, none acknowledged is lost or "
        "stored twice, the old primary rejoins as a standby"
    )
    fault = Fault(role="the PostgreSQL primary's node (Patroni leader and postgres)", kind="kill")
    #: The leader key's ttl (20 s, Patroni's floor) + a loop + the pool's reconnect.
    max_unavailable_s: float | None = 30.0


def _node_log(stack: Stack, node: str) -> str:
    """The node's log so far: the local process's log file, or the container's log."""
    if isinstance(stack, LocalStack):
        log = Path(stack.node(node).record.log)
        return log.read_text(errors="replace") if log.exists() else ""
    return str(cast(Any, stack).node_log(node))


def _rewound(text: str) -> str:
    """What the node's log (``text``: the part after the restart) says pg_rewind did."""
    if not text:
        return "unknown (no log)"
    if "pg_rewind: Done!" in text or "rewind finished" in text.lower():
        return "rewound onto the new timeline"
    if "pg_rewind" in text:
        return "attempted (see the node's log)"
    return "not needed"
