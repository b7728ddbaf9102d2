"""Faults on more than one node at once (a quorum lost, a whole service down).

:class:`~backbone_harness.drills.base.Fault` hits one node. A drill that must take out
several (two of three brokers, every Redis and Sentinel) names them all in its
``target`` as one comma-separated string, so the report shows exactly which
nodes it hit, and uses :class:`NodeGroupFault`: it applies the fault in the
order given and undoes it in the reverse order (the node stopped last comes
back first; or all at once with ``together``), also when the runner undoes it after a failed drill.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from backbone_harness.drills.base import Fault
from backbone_harness.stacks import Stack

__all__ = ["NodeGroupFault", "join_nodes", "split_nodes"]


def join_nodes(nodes: Sequence[str]) -> str:
    """The ``target`` string naming ``nodes`` (in the order the fault hits them)."""
    if not nodes:
        raise ValueError("a node-group fault needs at least one node")
    return ",".join(nodes)


def split_nodes(target: str) -> list[str]:
    """The nodes a ``target`` string names, in order."""
    return [n for n in target.split(",") if n]


@dataclass(frozen=True)
class NodeGroupFault(Fault):
    """The same fault on every node named in a comma-separated target."""

    #: Undo on every node at once: nodes that need each other to be ready (the
    #: voters of a quorum that was lost) must start together, as ``up`` does.
    together: bool = False

    def apply(self, stack: Stack, node: str) -> None:
        for one in split_nodes(node):
            super().apply(stack, one)

    def undo(self, stack: Stack, node: str) -> None:
        # Every node is tried even when one fails to come back, so a failed
        # restart leaves as few nodes down as possible; the first error is raised.
        errors: list[Exception] = []

        def undo_one(one: str) -> None:
            try:
                super(NodeGroupFault, self).undo(stack, one)
            except Exception as exc:
                errors.append(exc)

        nodes = list(reversed(split_nodes(node)))
        if self.together:
            threads = [threading.Thread(target=undo_one, args=(n,)) for n in nodes]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        else:
            for one in nodes:
                undo_one(one)
        if errors:
            raise errors[0]
