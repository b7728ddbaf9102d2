"""The container engine: podman, and its Docker-compatible API for the length of one use.

There is no Docker daemon on the machines this project runs on, but Debian's
podman with the runc runtime runs containers (``scripts/setup.d/60-podman.sh``
installs and configures it). Tools that speak the Docker API (testcontainers,
the docker SDK) reach podman through ``podman system service``; that service
is started only by :func:`api_service`, for the command or test that needs
it, and stopped again by whoever started it, so no process outlives its user.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from backbone_harness.errors import HarnessError

__all__ = [
    "PODMAN_SOCKET",
    "EngineError",
    "api_answers",
    "api_service",
    "docker_env",
    "no_engine_reason",
    "podman",
]

#: Where the Docker-compatible API listens (root podman's conventional place).
PODMAN_SOCKET = Path("/run/podman/podman.sock")
#: How long the API service may take to answer after it was started (seconds).
API_START_TIMEOUT_S = 30.0


class EngineError(HarnessError):
    """The container engine is missing or refused a command; says what to do."""


def no_engine_reason() -> str | None:
    """Why no container can run here, in the engine's own words; None when one can."""
    if shutil.which("podman") is None:
        return (
            "podman is not installed; `make setup` installs it as root "
            "(apt-get install podman runc) so the container tests can run"
        )
    probe = subprocess.run(
        ["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        lines = (probe.stderr or probe.stdout).strip().splitlines()
        return f"podman cannot run containers here: {lines[-1] if lines else 'no output'}"
    return None


def podman(
    *args: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run one podman command; a failure raises :class:`EngineError` with its stderr tail."""
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise EngineError(
            f"`podman {' '.join(args[:3])} ...` failed (exit {done.returncode}):\n{tail}\n"
            "check that `make setup` configured podman (runc, containers.conf)"
        )
    return done


def api_answers(sock: Path = PODMAN_SOCKET) -> bool:
    """True when the Docker-compatible API on ``sock`` answers ``/_ping``."""
    if not sock.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(5)
            conn.connect(str(sock))
            conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
            reply = conn.recv(4096)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0] + b" "


def docker_env(sock: Path = PODMAN_SOCKET) -> dict[str, str]:
    """The environment a Docker-API client (testcontainers) needs to use podman.

    Ryuk (testcontainers' reaper container) is off: its image cannot be pulled
    here, and the tests stop their containers themselves. ``docker_host``
    connection mode stops testcontainers guessing it runs inside a container
    (which fails on podman with ``KeyError: 'HostConfig'``).
    """
    return {
        "DOCKER_HOST": f"unix://{sock}",
        "TESTCONTAINERS_RYUK_DISABLED": "true",
        "TESTCONTAINERS_CONNECTION_MODE": "docker_host",
    }


@contextmanager
def api_service(sock: Path = PODMAN_SOCKET) -> Iterator[dict[str, str]]:
    """The Docker-compatible API for the block; yields :func:`docker_env`.

    A service that already answers is used and left alone; one started here is
    stopped on exit (and killed if it does not stop within 10 s).
    """
    if api_answers(sock):
        yield docker_env(sock)
        return
    sock.parent.mkdir(parents=True, exist_ok=True)
    # Its log goes to a file, not a pipe nobody reads while it runs (a full pipe blocks it).
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{sock}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
        try:
            _wait_answering(sock, proc, log)
            yield docker_env(sock)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _wait_answering(sock: Path, proc: subprocess.Popen[bytes], log: IO[str]) -> None:
    deadline = time.monotonic() + API_START_TIMEOUT_S
    while not api_answers(sock):
        if proc.poll() is not None:
            log.seek(0)
            raise EngineError(
                f"`podman system service` exited with {proc.returncode}: "
                f"{log.read().strip()[-500:]}; check `podman info`"
            )
        if time.monotonic() > deadline:
            raise EngineError(
                f"the podman API did not answer on {sock} within "
                f"{API_START_TIMEOUT_S:.0f} s; check `podman info`"
            )
        time.sleep(0.2)
