"""One local service process: start it, wait until it answers, control it later.

Starting uses mirakuru: the process runs in its own session (process group),
and readiness is a real client check polled with a deadline. A stack outlives
the ``harness up`` command that started it, so after readiness the node is
*detached* from mirakuru (whose exit hook would otherwise kill it) and is
controlled from then on through its :class:`ProcessRecord` — pid plus process
create time, so a recycled pid is never signalled — from any later command
(``harness node kill``, ``harness down``) or test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from mirakuru import Executor
from mirakuru.base import ENV_UUID
from mirakuru.exceptions import ProcessExitedWithError, TimeoutExpired

from backbone_infra.errors import ServiceStartError

__all__ = ["ProcessNode", "ProcessRecord", "ReadyCheck", "log_tail"]

#: A readiness check: returns True once the service answered a real request.
#: It may raise; any exception counts as "not ready yet" and is kept for the
#: error message if the deadline passes.
ReadyCheck = Callable[[], bool]

_LOG_TAIL_LINES = 25


def log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file, or a note that it is empty."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"(log {path} is empty)"


class _ReadinessExecutor(Executor):
    """mirakuru executor whose start waits on a client-level readiness check."""

    def __init__(self, command: list[str], ready: ReadyCheck, **kwargs: Any) -> None:
        super().__init__(command, **kwargs)
        self._ready = ready
        self.last_error: BaseException | None = None

    def pre_start_check(self) -> bool:
        # Ports are chosen fresh for each node, so nothing can be "already running".
        return False

    def after_start_check(self) -> bool:
        try:
            ok = bool(self._ready())
        except Exception as exc:  # readiness probes fail until the service is up
            self.last_error = exc
            return False
        return ok

    @property
    def _popen_kwargs(self) -> dict[str, Any]:
        # mirakuru puts the child in its own session with ``preexec_fn=os.setsid``,
        # which is unsafe when nodes are started from several threads at once
        # (the provisioner does); ``start_new_session`` does the same in C.
        kwargs = dict(super()._popen_kwargs)
        kwargs.pop("preexec_fn", None)
        kwargs["start_new_session"] = True
        return kwargs

    @property
    def envvars(self) -> dict[str, str]:
        # Leave out mirakuru's marker variable: a detached service must not be
        # found (and killed) by mirakuru's interpreter-exit cleanup.
        env = dict(super().envvars)
        env.pop(ENV_UUID, None)
        return env

    def detach(self) -> None:
        """Forget the process without signalling it (it keeps running)."""
        self.process = None
        self._endtime = None


@dataclass
class ProcessRecord:
    """What a later command needs to find and control a node. No secrets here."""

    name: str
    service: str
    command: list[str]
    log: str
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    pid: int | None = None
    create_time: float | None = None
    ports: dict[str, int] = field(default_factory=dict)
    #: The signal that shuts this node down cleanly and promptly (PostgreSQL's
    #: SIGTERM is "smart" shutdown, which waits for clients: it uses SIGINT).
    stop_signal: int = int(signal.SIGTERM)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessRecord:
        return cls(**data)


class ProcessNode:
    """A service process that can be started, checked and signalled."""

    def __init__(self, record: ProcessRecord, ready: ReadyCheck | None = None) -> None:
        self.record = record
        self.ready = ready

    @property
    def name(self) -> str:
        return self.record.name

    # -- lifecycle -----------------------------------------------------------

    def start(self, *, timeout: float = 60.0, poll: float = 0.1) -> float:
        """Spawn the process and wait for its readiness check; returns seconds taken.

        On failure the process group is killed and :class:`ServiceStartError`
        names the node and carries the tail of its log.
        """
        if self.ready is None:
            raise RuntimeError(f"{self.name}: no readiness check to start with")
        log = Path(self.record.log)
        log.parent.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        with log.open("ab") as out:
            out.write(f"\n--- start {time.strftime('%Y-%m-%dT%H:%M:%S')} ---\n".encode())
            out.flush()
            env = {**os.environ, **self.record.env}
            executor = _ReadinessExecutor(
                self.record.command,
                self.ready,
                cwd=self.record.cwd,
                timeout=timeout,
                sleep=poll,
                envvars=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            try:
                executor.start()
            except (ProcessExitedWithError, TimeoutExpired) as exc:
                executor.kill()
                reason = (
                    "exited before it was ready"
                    if isinstance(exc, ProcessExitedWithError)
                    else f"was not ready within {timeout:.0f}s"
                )
                if executor.last_error is not None:
                    reason += f" (last check: {type(executor.last_error).__name__}: "
                    reason += f"{str(executor.last_error)[:200]})"
                raise ServiceStartError(self.name, reason, log, log_tail(log)) from None
            assert executor.process is not None
            self.record.pid = executor.process.pid
            self.record.create_time = psutil.Process(executor.process.pid).create_time()
            executor.detach()
        return time.monotonic() - began

    def _process(self) -> psutil.Process | None:
        """The live process, if the recorded pid still belongs to it."""
        if self.record.pid is None:
            return None
        try:
            proc = psutil.Process(self.record.pid)
            if self.record.create_time and abs(proc.create_time() - self.record.create_time) > 1:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.Error:
            return None
        return proc

    def running(self) -> bool:
        return self._process() is not None

    def paused(self) -> bool:
        proc = self._process()
        return proc is not None and proc.status() == psutil.STATUS_STOPPED

    def _signal_group(self, sig: int) -> bool:
        proc = self._process()
        if proc is None:
            return False
        try:
            os.killpg(proc.pid, sig)  # the node leads its own session/group
        except ProcessLookupError:
            return False
        return True

    def _wait_gone(self, timeout: float) -> bool:
        proc = self._process()
        if proc is None:
            return True
        try:
            proc.wait(timeout)
        except psutil.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash, as a drill wants it)."""
        self._signal_group(signal.SIGCONT)  # a paused group must not linger
        self._signal_group(signal.SIGKILL)
        self._wait_gone(5)
        self.record.pid = None

    def stop(self, timeout: float = 10.0) -> None:
        """The record's stop signal (SIGTERM), then SIGKILL after ``timeout`` seconds."""
        self._signal_group(signal.SIGCONT)
        if self._signal_group(self.record.stop_signal) and not self._wait_gone(timeout):
            self._signal_group(signal.SIGKILL)
            self._wait_gone(5)
        self.record.pid = None

    def pause(self) -> None:
        """SIGSTOP the group: the process holds its sockets but answers nothing.

        Returns once the process is seen stopped (a signal takes effect only
        when the task is next scheduled, which on a busy machine is not at once).
        """
        if not self._signal_group(signal.SIGSTOP):
            raise ProcessLookupError(f"{self.name} is not running")
        self._wait_status(stopped=True)

    def resume(self) -> None:
        """SIGCONT the group; returns once the process runs again."""
        if not self._signal_group(signal.SIGCONT):
            raise ProcessLookupError(f"{self.name} is not running")
        self._wait_status(stopped=False)

    def _wait_status(self, *, stopped: bool, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self._process()
            if proc is None:
                return
            try:
                if (proc.status() == psutil.STATUS_STOPPED) == stopped:
                    return
            except psutil.Error:
                return
            time.sleep(0.01)

    def restart(self, *, timeout: float = 60.0) -> float:
        self.stop()
        return self.start(timeout=timeout)
