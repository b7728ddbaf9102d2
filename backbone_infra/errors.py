"""Every error provisioning a stack can report to a user, in one place.

Each says what went wrong and what to do. The CLIs turn an :class:`InfraError`
into one line on stderr and exit code 2; nothing here ever carries a secret.
The harness has its own (:mod:`backbone_harness.errors`) for command-line mistakes.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "InfraError",
    "MissingBinaryError",
    "NotApplicableError",
    "ServiceStartError",
    "StackExistsError",
    "StackNotFoundError",
]


class InfraError(Exception):
    """Base class: a failure the user can act on. ``str()`` is the whole message."""


class NotApplicableError(InfraError):
    """A node control this environment cannot do (a process on loopback has no
    network to be taken off); the message names the environment that can."""

    def __init__(self, environment: str, what: str, instead: str) -> None:
        self.environment = environment
        super().__init__(f"{what} is not applicable on {environment}: {instead}")


class StackExistsError(InfraError):
    """``harness up`` was asked for a name whose stack is still running."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"stack {name!r} already exists and is running; "
            f"run `harness down --name {name}` first or pick another --name"
        )


class StackNotFoundError(InfraError):
    """No state directory for the named stack."""

    def __init__(self, name: str, root: Path) -> None:
        super().__init__(
            f"no stack named {name!r} under {root}; "
            "bring one up with `harness up --env local --name NAME`"
        )


class MissingBinaryError(InfraError):
    """A program the local environment runs is not installed."""

    def __init__(self, what: str, looked: str) -> None:
        super().__init__(
            f"{what} is not installed (looked for {looked}); run `make setup` "
            "(it installs Debian packages and the Kafka jars) and try again"
        )


class ServiceStartError(InfraError):
    """A service did not become ready; carries the tail of its log."""

    def __init__(self, node: str, reason: str, log: Path, tail: str) -> None:
        self.node = node
        self.log = log
        self.tail = tail
        super().__init__(
            f"{node} {reason}; everything started so far was stopped and the state "
            f"directory kept for inspection. Last lines of {log}:\n{tail}"
        )
