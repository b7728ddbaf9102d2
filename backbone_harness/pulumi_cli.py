"""Find the Pulumi CLI built by ``scripts/build-pulumi.sh`` and the environment to run it in.

The CLI is built from its Go modules into
``${BACKBONE_CACHE:-~/.cache/backbone}/pulumi-vVERSION/bin``; nothing here
downloads anything. Every Pulumi command the harness runs gets the environment
from :func:`pulumi_env`: the cache's ``bin`` first on ``PATH``, a private
``PULUMI_HOME``, the local file backend under the stacks root, the stack's
passphrase *file* (the passphrase itself is never put in an environment, a
command line or a log) and every switch that keeps the CLI off the network.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import psutil

from backbone_harness.errors import HarnessError
from backbone_infra.targets.local.state import stacks_root

__all__ = [
    "BACKEND_DIRNAME",
    "PULUMI_VERSION",
    "SETUP_COMMAND",
    "STACK_MARKER",
    "PulumiCLIError",
    "PulumiCLIMissingError",
    "PulumiCLIVersionError",
    "backend_dir",
    "backend_url",
    "build_failure",
    "cli_dir",
    "marked_processes",
    "passphrase_file",
    "pulumi_bin",
    "pulumi_env",
    "sdk_version",
]

#: The CLI version the build script installs: always the pinned Python SDK's
#: (``pulumi==`` in constraints.txt), so the engine and the SDK match exactly.
PULUMI_VERSION = metadata.version("pulumi")
#: Environment variable naming the stack on every process of its Pulumi runs.
STACK_MARKER = "BACKBONE_PULUMI_STACK"
#: The one command that builds (or reuses) the CLI.
SETUP_COMMAND = "bash scripts/build-pulumi.sh  (or `make setup`)"
#: The local file backend and the Pulumi workspaces live here, under the stacks root.
BACKEND_DIRNAME = "pulumi-backend"

_CACHE_ENV = "BACKBONE_CACHE"
_REPO_ROOT = Path(__file__).resolve().parents[1]
_VERSION_RE = re.compile(r"^v?(\d+\.\d+\.\d+)")


class PulumiCLIError(HarnessError):
    """The Pulumi CLI cannot be used; the message names the version and the fix."""


class PulumiCLIMissingError(PulumiCLIError):
    """No CLI binary where the build script installs it."""

    def __init__(self, looked: Path, reason: str | None) -> None:
        why = f" The last build failed: {reason}." if reason else ""
        super().__init__(
            f"the Pulumi CLI v{PULUMI_VERSION} is not installed (looked for {looked}).{why} "
            f"Build it with `{SETUP_COMMAND}`; it compiles from the Go module proxy "
            "in a few minutes and is reused afterwards"
        )


class PulumiCLIVersionError(PulumiCLIError):
    """The binary answers with another version than the one this repository pins."""

    def __init__(self, path: Path, found: str) -> None:
        super().__init__(
            f"{path} reports {found or 'no version'}, expected v{PULUMI_VERSION}; "
            f"rebuild it with `{SETUP_COMMAND}`"
        )


def cli_dir() -> Path:
    """Where the build script installs this version: ``<cache>/pulumi-vVERSION``."""
    cache = os.environ.get(_CACHE_ENV) or str(Path.home() / ".cache" / "backbone")
    return Path(cache) / f"pulumi-v{PULUMI_VERSION}"


def build_failure() -> str | None:
    """The reason the last build failed (the ``FAILED`` marker), else ``None``."""
    marker = cli_dir() / "FAILED"
    try:
        return marker.read_text().strip() or "unknown reason"
    except OSError:
        return None


def pulumi_bin() -> Path:
    """The CLI binary, after checking it reports :data:`PULUMI_VERSION`.

    Raises :class:`PulumiCLIMissingError` or :class:`PulumiCLIVersionError`.
    """
    path = cli_dir() / "bin" / "pulumi"
    if not os.access(path, os.X_OK):
        raise PulumiCLIMissingError(path, build_failure())
    try:
        out = subprocess.run(
            [str(path), "version"],
            env={**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PulumiCLIVersionError(path, f"an error ({exc.__class__.__name__})") from None
    match = _VERSION_RE.match(out)
    if match is None or match.group(1) != PULUMI_VERSION:
        raise PulumiCLIVersionError(path, out.splitlines()[0] if out else "")
    return path


def sdk_version() -> str:
    """The installed Python SDK (``pulumi`` package) version."""
    return metadata.version("pulumi")


def backend_dir(root: Path | None = None) -> Path:
    """``<stacks root>/pulumi-backend``: state, workspaces and passphrases."""
    return stacks_root(root) / BACKEND_DIRNAME


def backend_url(root: Path | None = None) -> str:
    """The local file backend, ``file://<stacks root>/pulumi-backend``."""
    return f"file://{backend_dir(root)}"


def passphrase_file(stack: str, root: Path | None = None) -> Path:
    """The stack's passphrase file (0600), generated on first use.

    Only its *path* is handed to the CLI (``PULUMI_CONFIG_PASSPHRASE_FILE``).
    """
    directory = backend_dir(root) / "passphrases"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{stack}.passphrase"
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first
            return path
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return path


def pulumi_env(stack: str, root: Path | None = None) -> dict[str, str]:
    """Variables for every CLI run on ``stack`` (merged over ``os.environ``).

    Holds no secret: the passphrase stays in its 0600 file.
    """
    bin_dir = cli_dir() / "bin"
    home = backend_dir(root) / "home"
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PULUMI_HOME": str(home),
        "PULUMI_BACKEND_URL": backend_url(root),
        "PULUMI_CONFIG_PASSPHRASE_FILE": str(passphrase_file(stack, root)),
        # Stay off the network: no update check, no plugin downloads, no
        # registry look-ups, no links to the hosted service.
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_DISABLE_REGISTRY_RESOLVE": "true",
        "PULUMI_SUPPRESS_NEO_LINK": "true",
        "PULUMI_DIY_BACKEND_NO_LEGACY_WARNING": "true",
        "PULUMI_SKIP_CONFIRMATIONS": "true",
        # Marks every process of this stack's runs: the CLI hands its environment
        # to the plugins it starts, so a dynamic provider orphaned by an
        # interrupted `up` is found (and stopped) by `harness down --via pulumi`.
        STACK_MARKER: stack,
        # The dynamic-provider launcher runs `$PULUMI_PYTHON_CMD -m pulumi.dynamic`:
        # use this interpreter, whose environment has the repository installed.
        "PULUMI_PYTHON_CMD": sys.executable,
        # ... and can import this repository's packages wherever it runs from.
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(_REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    }


def _stack_arg(argv: list[str]) -> str | None:
    """The stack a command line names: ``-s NAME``, ``--stack[=]NAME`` or
    ``stack init|select|rm NAME``."""
    words = [a for a in argv if not a.startswith("-")]
    if len(words) >= 3 and words[0] == "stack" and words[1] in ("init", "select", "rm"):
        return words[2]
    for i, arg in enumerate(argv):
        if arg in ("-s", "--stack") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--stack="):
            return arg.split("=", 1)[1]
    return None


def main(argv: list[str] | None = None) -> None:
    """``python -m backbone_harness.pulumi_cli ARGS``: the built CLI in this repository's
    environment (file backend under ``.stacks``, the stack's passphrase file,
    no network). Give the stack with ``-s NAME`` (default ``local``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    stack = _stack_arg(args) or "local"
    try:
        binary = pulumi_bin()
    except PulumiCLIError as exc:
        sys.exit(f"error: {exc}")
    env = {**os.environ, **pulumi_env(stack)}
    os.execve(binary, [str(binary), *args], env)


if __name__ == "__main__":
    main()


def marked_processes(stack: str) -> list[psutil.Process]:
    """Live processes of ``stack``'s Pulumi runs (those carrying :data:`STACK_MARKER`),
    other than this one."""
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(STACK_MARKER) == stack and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found
