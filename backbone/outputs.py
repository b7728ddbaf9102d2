"""Find and load the connections document of the stack the runtime should use.

In order: an explicit path, the ``BACKBONE_OUTPUTS`` environment variable, or
``pulumi stack output --json connections --show-secrets`` for a named stack when
the Pulumi CLI is on ``PATH``. The CLI's output holds secrets: it is parsed in
memory and never logged or echoed in errors.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from backbone.connections import (
    ConnectionsDocument,
    ConnectionsError,
    load_document,
    parse_document,
)

__all__ = ["OUTPUTS_ENV", "PULUMI_TIMEOUT_SECONDS", "load_connections"]

OUTPUTS_ENV = "BACKBONE_OUTPUTS"
PULUMI_TIMEOUT_SECONDS = 120.0

_HOW = (
    "pass the outputs file explicitly (--outputs PATH), set BACKBONE_OUTPUTS=PATH "
    "(a local stack writes .stacks/NAME/outputs.json), or name a Pulumi stack (--stack NAME) "
    "with the `pulumi` CLI on PATH"
)


def load_connections(
    path: Path | str | None = None, *, stack: str | None = None
) -> ConnectionsDocument:
    """The validated connections document; :class:`ConnectionsError` says how to get one."""
    if path is not None:
        return load_document(path)
    from_env = os.environ.get(OUTPUTS_ENV)
    if from_env:
        return load_document(from_env)
    if stack is not None:
        pulumi = shutil.which("pulumi")
        if pulumi is None:
            raise ConnectionsError(
                f"cannot read the outputs of Pulumi stack {stack!r}: the `pulumi` CLI is not "
                f"on PATH (build it with scripts/build-pulumi.sh); or {_HOW}"
            )
        return _from_pulumi(pulumi, stack)
    raise ConnectionsError(f"no connections document was given; {_HOW}")


def _from_pulumi(pulumi: str, stack: str) -> ConnectionsDocument:
    argv = [pulumi, "stack", "output", "--json", "connections", "--show-secrets"]
    argv += ["--stack", stack]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            timeout=PULUMI_TIMEOUT_SECONDS,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise ConnectionsError(
            f"`pulumi stack output` for stack {stack!r} did not answer within "
            f"{PULUMI_TIMEOUT_SECONDS:.0f}s; check `pulumi login` and the backend"
        ) from None
    if done.returncode != 0:
        # stderr comes from the CLI's own diagnostics, not from the secret output.
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        reason = detail[-1] if detail else f"exit code {done.returncode}"
        raise ConnectionsError(
            f"`pulumi stack output --json connections` failed for stack {stack!r}: {reason}; "
            f"select the right stack or run `pulumi up` first; or {_HOW}"
        )
    return parse_document(done.stdout)
