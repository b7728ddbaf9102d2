"""Ephemeral local stacks through the Pulumi Automation API (``--via pulumi``).

``up_via_pulumi`` creates a uniquely named Pulumi stack on the local file
backend (``.stacks/pulumi-backend``), sets its configuration (``target=local``,
``tier``, ``size``) and the passphrase secrets provider, runs ``pulumi up`` and
returns the ``connections`` output as a validated outputs document.
``down_via_pulumi`` refreshes, destroys and removes the stack, and still cleans
up after an ``up`` that was interrupted midway.

The program is an *inline* program: its language runtime is served in this
process by the Python SDK, so the CLI needs no ``pulumi-language-python``
plugin. The Pulumi stack and the local stack share one name.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

import psutil
from pulumi import automation as auto

from backbone.connections import ConnectionsDocument, parse_document
from backbone_harness.errors import HarnessError, StackExistsError, StackNotFoundError, UsageError
from backbone_harness.pulumi_cli import (
    backend_dir,
    cli_dir,
    marked_processes,
    pulumi_bin,
    pulumi_env,
)
from backbone_infra.spec import StackSpec, build_spec
from backbone_infra.targets.local.state import stack_dir, stacks_root

__all__ = [
    "PROJECT",
    "PulumiStackError",
    "PulumiStackExistsError",
    "down_via_pulumi",
    "new_stack_name",
    "pulumi_stack_exists",
    "up_via_pulumi",
]

#: The Pulumi project of every stack (``backbone_infra/Pulumi.yaml`` uses the same name).
PROJECT = "market-data-backbone"

Echo = Callable[[str], None]

#: How long an interrupted ``pulumi`` of ours may take to exit before it is killed.
_HOLDER_GRACE_S = 10.0


class PulumiStackError(HarnessError):
    """A Pulumi operation failed; carries the CLI's last lines (no secrets)."""


class PulumiStackExistsError(StackExistsError):
    """The name is taken by a Pulumi stack or a running local stack."""

    def __init__(self, name: str) -> None:
        HarnessError.__init__(
            self,
            f"stack {name!r} already exists (a Pulumi stack or a running local stack); "
            f"remove it with `harness down --via pulumi --name {name}` or pick another --name",
        )


def new_stack_name() -> str:
    """A fresh ephemeral name: ``ci-`` and 6 random hex digits."""
    return f"ci-{secrets.token_hex(3)}"


def _work_dir(name: str, root: Path | None) -> Path:
    return backend_dir(root) / "workspaces" / name


def _program(root: Path) -> Callable[[], None]:
    """The inline program: the project's own program (``backbone_infra.program.run``, what
    ``pulumi up -s local`` runs), with the local stacks under ``root``."""

    def program() -> None:
        from backbone_infra.config import read_config
        from backbone_infra.program import run
        from backbone_infra.targets.local.pulumi_resource import stacks_root_override

        with stacks_root_override(root):
            run(read_config())

    return program


def _workspace_opts(name: str, root: Path | None) -> auto.LocalWorkspaceOptions:
    work_dir = _work_dir(name, root)
    work_dir.mkdir(parents=True, exist_ok=True)
    env = pulumi_env(name, root)
    return auto.LocalWorkspaceOptions(
        work_dir=str(work_dir),
        pulumi_home=env["PULUMI_HOME"],
        env_vars=env,
        secrets_provider="passphrase",
        pulumi_command=auto.PulumiCommand(root=str(cli_dir()), skip_version_check=True),
        project_settings=auto.ProjectSettings(
            name=PROJECT,
            runtime="python",
            backend=auto.ProjectBackend(url=env["PULUMI_BACKEND_URL"]),
        ),
    )


def _tail(exc: auto.CommandError, lines: int = 15) -> str:
    text = getattr(exc, "stderr", "") or getattr(exc, "stdout", "") or str(exc)
    return "\n".join(str(text).strip().splitlines()[-lines:])


def pulumi_stack_exists(name: str, *, root: Path | None = None) -> bool:
    """True when the file backend holds a Pulumi stack of that name."""
    stacks = backend_dir(root) / ".pulumi" / "stacks" / PROJECT
    # The checkpoint, maybe compressed; `stack rm` leaves a `.json.bak` behind.
    return any((stacks / f"{name}{ext}").exists() for ext in (".json", ".json.gz", ".json.zst"))


def _local_stack_running(name: str, base: Path) -> bool:
    """True when a local stack of that name has any process running."""
    from backbone_infra.targets.local import provisioner

    directory = stack_dir(name, base)
    return directory.is_dir() and bool(provisioner.stack_processes(directory))


def up_via_pulumi(
    spec: StackSpec,
    *,
    name: str | None = None,
    root: Path | None = None,
    echo: Echo | None = None,
) -> tuple[str, ConnectionsDocument]:
    """Bring a local stack up with ``pulumi up``; returns (stack name, outputs document).

    ``name`` defaults to a fresh ``ci-XXXXXX``. The spec must be a standard one
    (``build_spec(name, tier=, size=)``): the stack's configuration records only
    ``tier`` and ``size``, so a later ``pulumi up`` rebuilds the same spec.
    Raises :class:`StackExistsError` when the name is in use (as a Pulumi stack
    or as a local stack), :class:`PulumiStackError` when ``up`` fails; after a
    failed ``up`` run :func:`down_via_pulumi` to clean up.
    """
    pulumi_bin()  # a missing or wrong CLI fails here, with the set-up command
    name = name or new_stack_name()
    wanted = build_spec(name, tier=spec.tier, size=spec.size)
    if spec.model_copy(update={"name": name}) != wanted:
        raise UsageError(
            "--via pulumi brings up standard stacks only (chosen by --tier and --size); "
            "bring a customised spec up with `harness up --env local` instead"
        )
    base = stacks_root(root)
    if pulumi_stack_exists(name, root=base) or _local_stack_running(name, base):
        raise PulumiStackExistsError(name)
    try:
        stack = auto.create_stack(
            name, project_name=PROJECT, program=_program(base), opts=_workspace_opts(name, base)
        )
    except auto.StackAlreadyExistsError:
        raise PulumiStackExistsError(name) from None
    stack.set_all_config(
        {
            "target": auto.ConfigValue("local"),
            "tier": auto.ConfigValue(spec.tier),
            "size": auto.ConfigValue(spec.size),
        }
    )
    try:
        result = stack.up(on_output=echo, color="never", show_secrets=False)
    except auto.CommandError as exc:
        raise PulumiStackError(
            f"`pulumi up` of stack {name!r} failed; run `harness down --via pulumi --name {name}` "
            f"to clean up. Last lines:\n{_tail(exc)}"
        ) from None
    doc = parse_document(result.outputs["connections"].value)
    return name, doc


def _stop_orphans(name: str) -> None:
    """Stop what an interrupted ``up`` left behind: the CLI starts its dynamic
    provider in a session of its own, so killing ``up`` orphans the provider
    (which also holds the exit status of every service it started)."""
    procs = marked_processes(name)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def down_via_pulumi(name: str, *, root: Path | None = None, echo: Echo | None = None) -> None:
    """Refresh, destroy and remove the Pulumi stack ``name``; stop its processes.

    Works after an interrupted ``up`` too: pending creates are cleared, a
    failed destroy falls back to ``backbone_infra.targets.local.provisioner.down``, and the
    stack is removed with ``--force``. Raises :class:`StackNotFoundError` when
    neither a Pulumi stack nor a local stack of that name exists.
    """
    from backbone_infra.targets.local import provisioner

    base = stacks_root(root)
    has_pulumi = pulumi_stack_exists(name, root=base)
    has_local = stack_dir(name, base).exists()
    if not has_pulumi and not has_local:
        raise StackNotFoundError(name, base)
    problems: list[str] = []
    if has_pulumi:
        pulumi_bin()
        _unlock_stale(name, base)
        stack = auto.select_stack(
            name, project_name=PROJECT, program=_program(base), opts=_workspace_opts(name, base)
        )
        try:
            stack.refresh(on_output=echo, color="never", clear_pending_creates=True)
        except auto.CommandError as exc:
            problems.append(f"refresh: {_tail(exc, 3)}")
        try:
            stack.destroy(on_output=echo, color="never")
        except auto.CommandError as exc:
            problems.append(f"destroy: {_tail(exc, 3)}")
    # Whatever the engine managed, the local stack must be gone: down is idempotent.
    if stack_dir(name, base).exists():
        provisioner.down(name, root=base)
    if has_pulumi:
        try:
            stack.workspace.remove_stack(name, force=True)
        except auto.CommandError as exc:
            problems.append(f"stack rm: {_tail(exc, 3)}")
    _stop_orphans(name)
    shutil.rmtree(_work_dir(name, base), ignore_errors=True)
    if not pulumi_stack_exists(name, root=base):
        (backend_dir(base) / "passphrases" / f"{name}.passphrase").unlink(missing_ok=True)
    elif problems:
        raise PulumiStackError(
            f"stack {name!r}: its processes are stopped, but the Pulumi stack could not be "
            f"removed ({'; '.join(problems)}); retry `harness down --via pulumi --name {name}`"
        )


def _unlock_stale(name: str, base: Path) -> None:
    """Drop the file backend's lock of ``name`` left by an interrupted ``pulumi``.

    The lock names the pid of the CLI that holds it. A holder that is gone (or
    a zombie) leaves a stale lock. A holder that still runs *in this stack's
    workspace* is an interrupted ``up`` of ours that has not noticed yet: it is
    given a few seconds, then stopped. Any other holder keeps its lock.
    """
    import json

    import psutil

    workspace = str(_work_dir(name, base).resolve())
    locks = backend_dir(base) / ".pulumi" / "locks"
    for lock in locks.glob(f"*/{PROJECT}/{name}/*.json"):
        try:
            pid = int(json.loads(lock.read_text()).get("pid", 0))
            holder = psutil.Process(pid)
            if holder.status() != psutil.STATUS_ZOMBIE:
                if holder.cwd() != workspace:
                    continue
                with contextlib.suppress(psutil.TimeoutExpired):
                    holder.wait(_HOLDER_GRACE_S)
                if holder.is_running() and holder.status() != psutil.STATUS_ZOMBIE:
                    holder.kill()
                    holder.wait(5)
        except (OSError, ValueError, psutil.NoSuchProcess):
            pass  # gone, or an unreadable lock: stale either way
        except psutil.Error:
            continue  # a holder we may not inspect is not ours to judge
        lock.unlink(missing_ok=True)
