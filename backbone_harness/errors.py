"""Every error the harness reports to a user, in one place.

Each says what went wrong and what to do. The CLI turns a :class:`HarnessError`
(or a :class:`~backbone_infra.errors.InfraError` from provisioning) into one line on
stderr and exit code 2; nothing here ever carries a secret.
"""

from __future__ import annotations

from backbone_infra.errors import (
    InfraError,
    MissingBinaryError,
    ServiceStartError,
    StackExistsError,
    StackNotFoundError,
)

__all__ = [
    "USER_ERRORS",
    "HarnessError",
    "InfraError",
    "MissingBinaryError",
    "ServiceStartError",
    "StackExistsError",
    "StackNotFoundError",
    "UsageError",
]


class HarnessError(Exception):
    """Base class: a failure the user can act on. ``str()`` is the whole message."""


class UsageError(HarnessError):
    """A command-line value is not one the harness knows (unknown --env, --size ...)."""


#: What a CLI catches to print one line and exit 2.
USER_ERRORS: tuple[type[Exception], ...] = (HarnessError, InfraError)
