"""The state directory of one local stack: ``.stacks/NAME/``.

Everything a later command needs to find, control and tear down a stack lives
here: ``state.json`` (the spec, one process record per node, the status and
timings; no secrets), ``secrets.json`` (0600, :mod:`backbone_infra.targets.local.secrets`) and
``outputs.json`` (0600, the ``backbone.connections/v1`` document). Data and
logs of every node live in sub-directories next to them.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from backbone_infra.paths import project_home
from backbone_infra.spec import StackSpec
from backbone_infra.targets.local.process import ProcessRecord

__all__ = [
    "STACKS_ENV",
    "StackState",
    "Status",
    "load_state",
    "save_state",
    "stack_dir",
    "stacks_root",
]

#: Environment variable that moves the root of all stack directories.
STACKS_ENV = "HARNESS_STACKS_DIR"
STATE_FILE = "state.json"
OUTPUTS_FILE = "outputs.json"

Status = Literal["starting", "running", "failed", "stopped"]


def stacks_root(root: Path | None = None) -> Path:
    """Where stack directories live: ``root``, else ``$HARNESS_STACKS_DIR``,
    else ``<project>/.stacks`` (:func:`backbone_infra.paths.project_home`)."""
    if root is not None:
        return Path(root).resolve()
    env = os.environ.get(STACKS_ENV)
    return Path(env).resolve() if env else project_home() / ".stacks"


def stack_dir(name: str, root: Path | None = None) -> Path:
    return stacks_root(root) / name


@dataclass
class StackState:
    """What ``state.json`` holds."""

    spec: StackSpec
    status: Status = "starting"
    environment: str = "local"
    #: service name -> its node records, in start order.
    records: dict[str, list[ProcessRecord]] = field(default_factory=dict)
    #: node or service name -> seconds to ready.
    timings: dict[str, float] = field(default_factory=dict)
    #: Why the last ``up`` failed, without secrets (the first line of the error).
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.model_dump(mode="json"),
            "status": self.status,
            "environment": self.environment,
            "records": {svc: [r.to_dict() for r in recs] for svc, recs in self.records.items()},
            "timings": self.timings,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StackState:
        return cls(
            spec=StackSpec.model_validate(data["spec"]),
            status=data.get("status", "stopped"),
            environment=data.get("environment", "local"),
            records={
                svc: [ProcessRecord.from_dict(r) for r in recs]
                for svc, recs in data.get("records", {}).items()
            },
            timings=dict(data.get("timings", {})),
            error=data.get("error"),
        )


def save_state(directory: Path, state: StackState) -> Path:
    """Write ``state.json`` atomically (a reader never sees half a file)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STATE_FILE
    tmp = directory / f".{STATE_FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state.to_dict(), fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)
    return path


@contextmanager
def _state_lock(directory: Path) -> Iterator[None]:
    """Exclusive across processes and threads (each ``open`` is its own lock holder)."""
    fd = os.open(directory / ".state.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def update_record(directory: Path, service: str, record: ProcessRecord) -> None:
    """Persist one node's record, leaving every other node's as saved.

    Read-modify-write under a lock, so node operations running at the same
    time (threads of one drill, or ``harness node`` in another shell) never
    overwrite each other's pids with stale copies.
    """
    with _state_lock(directory):
        state = load_state(directory)
        records = state.records.setdefault(service, [])
        for i, existing in enumerate(records):
            if existing.name == record.name:
                records[i] = record
                break
        else:
            records.append(record)
        save_state(directory, state)


def load_state(directory: Path) -> StackState:
    """Read ``state.json``; ``FileNotFoundError`` when there is none."""
    return StackState.from_dict(json.loads((directory / STATE_FILE).read_text()))
