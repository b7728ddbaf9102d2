"""What a drill is: a fault chosen by role, a writer's workload, recovery, a reader.

A concrete drill (one module each) subclasses :class:`Drill`. The runner
(:mod:`backbone_harness.drills.runner`) drives every drill through the same phases:
``prepare`` → writer starts → ``fault`` on the node ``target`` names *now* →
``during_fault`` (wait for the failover, or hold) → ``recover`` (the node back,
the stack as found) → writer stops → ``found_keys`` (the reader) → verdict.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from backbone.bars import Bar
from backbone_harness.stacks import Stack

__all__ = ["Drill", "Fault", "FaultKind", "wait_redis_roles", "wait_until"]

#: ``cut`` and ``slow`` are network faults on a path, not on a node: the drill
#: applies them itself (see :mod:`backbone_harness.drills.network`).
#: ``disconnect`` takes the node off its network (compose: a real partition).
#: ``rotate`` replaces the clients' credentials (the credential-rotation drill).
FaultKind = Literal["kill", "stop", "pause", "cut", "slow", "disconnect", "rotate"]


@dataclass(frozen=True)
class Fault:
    """What to hit and how: ``role`` is a description, resolved at run time."""

    role: str
    kind: FaultKind

    def apply(self, stack: Stack, node: str) -> None:
        """SIGKILL (kill), clean stop (stop), SIGSTOP (pause) or partition (disconnect) the node."""
        control = {
            "kill": "kill_node",
            "stop": "stop_node",
            "pause": "pause_node",
            "disconnect": "disconnect_node",
        }
        getattr(stack, control[self.kind])(node)

    def undo(self, stack: Stack, node: str) -> None:
        """Bring the node back: SIGCONT after a pause, its network back after a
        disconnect, a restart otherwise."""
        if self.kind == "pause":
            stack.resume_node(node)
        elif self.kind == "disconnect":
            stack.reconnect_node(node)
        else:
            stack.restart_node(node)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``condition`` (exceptions count as "not yet"); seconds it took.

    Raises :class:`TimeoutError` naming ``what``.
    """
    began = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - began
        except Exception:  # a node mid-failover answers with errors: keep polling
            pass
        if time.monotonic() - began > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.2)


def wait_redis_roles(stack: Stack, primary: str, timeout_s: float = 60) -> None:
    """Wait until ``primary`` is the Redis primary and every other Redis server
    follows it as a replica: the roles as a Redis drill found them."""
    wait_until(lambda: stack.redis_primary() == primary, timeout_s, f"{primary} as primary")
    wait_until(
        lambda: all(
            stack.roles().get(n) == "replica"
            for n in stack.node_names()
            if n.startswith("redis-") and n != primary
        ),
        timeout_s,
        f"the other Redis servers to follow {primary}",
    )


class Drill(ABC):
    """One rehearsed outage. Subclasses set ``name``, ``summary`` and ``fault``."""

    name: str
    summary: str
    fault: Fault
    #: The drill fails when fewer bars than this were acknowledged (a drill that
    #: wrote nothing proves nothing).
    min_acknowledged: int = 200
    #: Stack sizes the drill can run on (a failover needs the replicas of ``ha``).
    stack_sizes: tuple[str, ...] = ("ha",)
    #: Environments the drill can run on (:data:`backbone_harness.stacks.ENVIRONMENTS`),
    #: and, when that is not all of them, what the others lack.
    environments: tuple[str, ...] = ("local", "compose")
    needs: str = ""
    #: Whether ``--load`` may run its producers: False where the drill's own writer
    #: or reader consumes the bar topics (``Backbone.ingest``, a consumer group),
    #: which would take the load's records as its own, counts and all, and have to
    #: store them; the load then runs its readers only.
    load_produces: bool = True
    #: The longest write outage the drill accepts (``unavailable_seconds``), or
    #: None where the fault stops writes by design for as long as it is held (a
    #: whole service down). The targets of issue 12 live on the drills themselves.
    max_unavailable_s: float | None = None
    #: Seconds of writing before the fault, and after recovery.
    warmup_s: float = 2.0
    tail_s: float = 2.0

    @classmethod
    def not_applicable(cls, stack: Stack) -> str | None:
        """Why the drill cannot run on ``stack`` (its environment), or None."""
        if stack.environment not in cls.environments:
            return f"not applicable on {stack.environment}: {cls.needs or 'no such fault there'}"
        return None

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        #: Extra figures for the report (drill-specific), and problems that fail it.
        self.figures: dict[str, float | int | str] = {}
        self.problems: list[str] = []

    @abstractmethod
    def target(self) -> str:
        """The node that plays ``fault.role`` now (asked of the stack)."""

    @abstractmethod
    def prepare(self) -> None:
        """Open the clients the writer and the reader use."""

    @abstractmethod
    def bars(self) -> Iterator[Bar]:
        """The writer's bars (unique keys, the drill's own symbols)."""

    @abstractmethod
    def write(self, bars: list[Bar]) -> None:
        """Write one batch through the public API; return only once acknowledged."""

    def load_outputs(self) -> Path | None:
        """The outputs document ``--load`` reaches the stack with, after :meth:`prepare`:
        ``None`` for the stack's own. A drill whose clients take a faulted path
        returns one that sends the load's clients the same way."""
        return None

    def inject(self, node: str) -> None:
        """Apply the fault to ``node`` (by default :meth:`Fault.apply` on the stack)."""
        self.fault.apply(self.stack, node)

    def probe(self) -> None:  # noqa: B027 - optional hook
        """Called by the runner's probe loop while the fault lasts (e.g. a read
        that must never fail); record problems in :attr:`problems`."""

    def during_fault(self, node: str) -> None:  # noqa: B027 - optional hook
        """Wait for what the fault should cause (a failover), or hold it a while."""

    def recover(self, node: str) -> None:
        """Undo the fault and wait until the stack is as the drill found it."""
        self.fault.undo(self.stack, node)

    @abstractmethod
    def found_keys(self, acknowledged: list[tuple[str, str, object]]) -> list[Hashable]:
        """The reader: bar keys where they must be, once per copy found."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Close what :meth:`prepare` opened (called even when the drill failed)."""
