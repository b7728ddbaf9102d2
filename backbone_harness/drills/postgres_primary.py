"""Drill: SIGKILL the PostgreSQL primary (the whole Patroni node) while bars are committed.

The ``ha`` stack runs PostgreSQL under Patroni: commits wait for any one of
two standbys (quorum mode), so every acknowledged commit is on a standby when
the primary dies. The drill asks Patroni which node is primary *now*, kills
that node's Patroni and postgres together (a crashed machine: no one releases
the leader key), and waits until Patroni promotes a standby once the key's
``ttl`` ran out. The writer keeps committing through the store client, whose
multi-host connection (``target_session_attrs=read-write``) finds the new
primary; a batch whose commit outcome the kill hid is retried, and the
``ON CONFLICT DO NOTHING`` upsert stores it once. Then the old primary is
restarted, must rejoin as a standby (pg_rewind onto the new timeline), and a
Patroni switchover hands the primary role back to it: the stack as found.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any, cast

from backbone.bars import Bar
from backbone.settings import TimescaleConnectionSettings
from backbone.store.timescale import TimescaleStore
from backbone_harness.drills.base import Drill, Fault, wait_until
from backbone_harness.drills.writer import DRILL_SPAN, drill_bars
from backbone_infra.targets.local.stack import LocalStack

__all__ = ["PostgresPrimaryKillDrill"]

#: The role a rejoined node must reach: streaming, and in the commit quorum.
QUORUM_STANDBY = "standby (quorum)"
#: How long the failover may take before the drill gives up (the leader key's
#: ttl is 20 s at least; this leaves room for a loaded machine).
FAILOVER_TIMEOUT_S = 90.0


class PostgresPrimaryKillDrill(Drill):
    name = "postgres-primary-kill"
    summary = (
        "SIGKILL the PostgreSQL primary (Patroni and postgres): Patroni promotes a "
        "quorum standby, none acknowledged is lost or stored twice, the old primary "
        "rejoins as a standby"
    )
    fault = Fault(role="the PostgreSQL primary (Patroni leader)", kind="kill")
    min_acknowledged = 200
    environments = ("local",)
    needs = "PostgreSQL on compose is a primary and a standby without Patroni"

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
        assert self.doc.timescale is not None
        # The pool waits up to the timeout for a read-write node: long enough
        # to ride out the failover, so the writer's retry lands on the new primary.
        self.store = TimescaleStore(
            TimescaleConnectionSettings.from_section(self.doc.timescale, pool_max_size=2),
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
        local = cast(LocalStack, self.stack)  # Patroni runs on local stacks only
        log = Path(local.node(node).record.log)
        log_at = log.stat().st_size if log.exists() else 0
        began = time.monotonic()
        self.fault.undo(self.stack, node)
        wait_until(
            lambda: self.stack.roles().get(node) == QUORUM_STANDBY,
            FAILOVER_TIMEOUT_S,
            f"{node} to rejoin as a streaming quorum standby",
        )
        self.figures["rejoined_as_standby_s"] = round(time.monotonic() - began, 2)
        self.figures["pg_rewind"] = _rewound(log, log_at)
        # As found: Patroni hands the primary role back to the original node.
        self.figures["switched_back_s"] = round(local.postgres_switchover(node), 2)
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


def _rewound(log: Path, since: int) -> str:
    """What the node's log says pg_rewind did after the restart (``since``: byte offset)."""
    try:
        with log.open("rb") as fh:
            fh.seek(since)
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "unknown (no log)"
    if "pg_rewind: Done!" in text or "rewind finished" in text.lower():
        return "rewound onto the new timeline"
    if "pg_rewind" in text:
        return "attempted (see the node's log)"
    return "not needed"
