"""What the harness needs of a running stack, whichever environment runs it.

The drills (and anything else that faults nodes by role) take a :class:`Stack`:
the outputs document, the nodes and their current roles, and node control.
Two environments satisfy it: the local process stack
(:class:`~backbone_infra.targets.local.stack.LocalStack`) and the compose
stack of the project's images on podman
(:class:`~backbone_harness.containers.stack.ContainerStack`). A control one
environment cannot do (a process on loopback cannot be taken off a network)
raises :class:`~backbone_infra.errors.NotApplicableError`; drills declare
the environments they run on, so the runner reports them "not applicable"
instead of trying.

:func:`up_stack`, :func:`load_stack` and :func:`down_stack` pick the
environment: ``--env local`` or ``--env compose`` at ``up``; afterwards the
stack's directory says which it is.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import redis
from kafka import KafkaAdminClient

from backbone.connections import ConnectionsDocument
from backbone_infra.spec import StackSpec
from backbone_infra.targets.local.secrets import StackSecrets

__all__ = ["ENVIRONMENTS", "Environment", "Stack", "down_stack", "load_stack", "up_stack"]

Environment = Literal["local", "compose"]
#: The environments a drill can run on.
ENVIRONMENTS: tuple[Environment, ...] = ("local", "compose")
Echo = Callable[[str], None]


@runtime_checkable
class Stack(Protocol):
    """A stack that is (or was) up: outputs, nodes, roles and node control."""

    @property
    def name(self) -> str: ...

    @property
    def environment(self) -> str:
        """``local`` or ``compose``."""
        ...

    @property
    def dir(self) -> Path:
        """The stack's directory (``.stacks/NAME``): logs, secrets, outputs."""
        ...

    @property
    def spec(self) -> StackSpec: ...

    @property
    def status(self) -> str:
        """``running`` once ``up`` finished."""
        ...

    @property
    def outputs_path(self) -> Path: ...

    @property
    def document(self) -> ConnectionsDocument: ...

    # -- nodes and roles ---------------------------------------------------------
    def node_names(self) -> list[str]: ...

    def node_running(self, name: str) -> bool:
        """Whether the node's process (or container) runs, paused or not."""
        ...

    def node_ports(self, name: str) -> dict[str, int]:
        """The node's loopback ports by purpose (``client``, ...), as clients dial them."""
        ...

    def roles(self) -> dict[str, str]: ...

    def redis_primary(self) -> str: ...

    def postgres_primary(self) -> str: ...

    def kafka_partition_leader(self, topic: str, partition: int) -> str: ...

    def kafka_active_controller(self) -> str: ...

    def kafka_admin(self) -> AbstractContextManager[KafkaAdminClient]:
        """An admin client (as the admin user) of the stack's Kafka, closed on exit."""
        ...

    # -- credentials: what a rotation persists (backbone_infra.rotation.RotatableStack) --
    def keep_redis_acl(self, node: str, admin: redis.Redis) -> None: ...

    def keep_credentials(self, old: StackSecrets, new: StackSecrets) -> None: ...

    # -- node control ------------------------------------------------------------
    def kill_node(self, name: str) -> None: ...

    def stop_node(self, name: str) -> None: ...

    def pause_node(self, name: str) -> None: ...

    def resume_node(self, name: str) -> None: ...

    def restart_node(self, name: str) -> float:
        """Start the node again (with its data); seconds until it answered."""
        ...

    def disconnect_node(self, name: str) -> None:
        """Partition the node from the others and from the clients."""
        ...

    def reconnect_node(self, name: str) -> None: ...


def _is_compose(name: str) -> bool:
    from backbone_harness.containers.stack import is_container_stack

    return is_container_stack(name)


def load_stack(name: str) -> Stack:
    """The stack called ``name``, local or compose (its directory says which)."""
    if _is_compose(name):
        from backbone_harness.containers.stack import ContainerStack

        return ContainerStack(name)
    from backbone_infra.targets.local import provisioner

    return provisioner.load(name)


def up_stack(env: str, spec: StackSpec, *, echo: Echo) -> Stack:
    """Bring ``spec`` up in ``env``."""
    if env == "compose":
        from backbone_harness.containers import stack as containers

        containers.up(spec, echo=echo)
        return containers.ContainerStack(spec.name)
    if env == "local":
        from backbone_infra.targets.local import provisioner

        return provisioner.up(spec, echo=echo)
    from backbone_harness.errors import UsageError

    raise UsageError(f"unknown environment {env!r}; use one of: {', '.join(ENVIRONMENTS)}")


def down_stack(name: str) -> None:
    """Take the stack down (idempotent), whichever environment runs it."""
    if _is_compose(name):
        from backbone_harness.containers.stack import ContainerStack

        ContainerStack(name).down()
        return
    from backbone_infra.targets.local import provisioner

    provisioner.down(name)
