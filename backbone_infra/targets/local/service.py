"""The shared base of the local services: node records, start, readiness, roles.

Every local service (Redis, Kafka, PostgreSQL, monitoring) keeps one
:class:`~backbone_infra.targets.local.process.ProcessRecord` per node and needs the same
few things: find a node's record and port, write a new record, start several
nodes at once, wait until the running nodes agree on something, and say what
role each node has. They live here once, so a timeout, a poll loop or an error
message is written one way (as testcontainers keeps its wait strategies in one
module): :func:`wait_until` raises :class:`~backbone_infra.errors.ServiceStartError` with
what it waited for, the last thing the check said, a hint what to do and the
recent lines of the node's log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from backbone_infra.errors import ServiceStartError
from backbone_infra.render.certificates import TLSFiles
from backbone_infra.spec import StackSpec
from backbone_infra.targets.local.process import ProcessNode, ProcessRecord, log_tail
from backbone_infra.targets.local.secrets import StackSecrets
from backbone_infra.targets.local.tls import (
    ca_file,
    ensure_local_certificates,
    local_tls_files,
)

__all__ = ["DEFAULT_POLL_S", "LocalNodes", "start_together", "wait_until"]

#: Seconds between two readiness checks.
DEFAULT_POLL_S = 0.05


def wait_until(
    check: Callable[[], object],
    what: str,
    timeout: float,
    *,
    node: str,
    log: Path,
    hint: str = "",
    poll: float = DEFAULT_POLL_S,
    abort: Callable[[], str | None] | None = None,
) -> float:
    """Poll ``check`` until it returns a true value; returns the seconds waited.

    ``check`` may raise: an exception means "not yet", and its message is what
    the timeout error reports as the last answer. ``abort`` is asked between
    checks; a message from it ends the wait at once (a process that died).
    On timeout, :class:`ServiceStartError` names ``node`` and ``what``, quotes
    the last answer and ``hint``, and carries the tail of ``log``.
    """
    began = time.monotonic()
    last = "nothing checked yet"
    while True:
        try:
            answer = check()
            if answer:
                return time.monotonic() - began
            last = f"check said {answer!r}"
        except Exception as exc:  # not there yet: keep polling
            last = f"{type(exc).__name__}: {str(exc)[:300]}"
        stop = abort() if abort is not None else None
        if stop:
            raise ServiceStartError(node, f"{stop} while waiting for {what} ({last})", log,
                                    log_tail(log))  # fmt: skip
        if time.monotonic() - began >= timeout:
            break
        time.sleep(poll)
    reason = f"{what} not within {timeout:.0f}s (last: {last})"
    if hint:
        reason += f"; {hint}"
    raise ServiceStartError(node, reason, log, log_tail(log))


def start_together(
    nodes: Sequence[ProcessNode], *, timeout: float, poll: float = 0.1
) -> tuple[dict[str, float], list[ServiceStartError]]:
    """Start ``nodes`` at once and wait for each to be ready.

    Returns seconds-to-ready per node and the errors of those that failed
    (the caller decides whether to stop the others); never raises for a node.
    """
    if not nodes:
        return {}, []
    timings: dict[str, float] = {}
    errors: list[ServiceStartError] = []
    with ThreadPoolExecutor(max_workers=len(nodes), thread_name_prefix="start") as pool:
        futures = {n.name: pool.submit(n.start, timeout=timeout, poll=poll) for n in nodes}
        for name, future in futures.items():
            try:
                timings[name] = future.result()
            except ServiceStartError as exc:
                errors.append(exc)
    return timings, errors


class LocalNodes:
    """Node records of one local service and the look-ups every service needs.

    Subclasses set :attr:`service` and implement the service's own steps
    (``prepare``, ``start``, ``node``, ``connection``).
    """

    #: ``redis``, ``kafka``, ``postgres`` or ``monitoring``.
    service: str

    def __init__(
        self,
        spec: StackSpec,
        stack_dir: Path,
        secrets: StackSecrets,
        records: list[ProcessRecord] | None = None,
    ) -> None:
        self.spec = spec
        self.dir = stack_dir.resolve()
        self.secrets = secrets
        self.records: list[ProcessRecord] = list(records or [])

    # -- TLS -------------------------------------------------------------------

    @property
    def tls(self) -> TLSFiles | None:
        """This service's certificate, key and CA (``None`` when the stack runs
        without TLS)."""
        return local_tls_files(self.spec, self.dir, self.service)

    def _ensure_certificates(self) -> None:
        """Issue the stack's certificates if nothing did yet (``prepare`` calls it)."""
        ensure_local_certificates(self.spec, self.dir)

    @property
    def ca_file(self) -> str | None:
        """The CA bundle this stack's clients verify servers with."""
        return ca_file(self.spec, self.dir)

    # -- records ---------------------------------------------------------------

    def _record(self, name: str) -> ProcessRecord:
        for record in self.records:
            if record.name == name:
                return record
        known = ", ".join(r.name for r in self.records) or "none (not prepared)"
        raise KeyError(f"no {self.service} node named {name!r} in this stack; nodes: {known}")

    def _port(self, name: str, port: str = "client") -> int:
        return self._record(name).ports[port]

    def _log(self, name: str) -> Path:
        return self.dir / "logs" / f"{name}.log"

    def _new_record(
        self,
        name: str,
        command: list[str],
        *,
        cwd: Path,
        ports: dict[str, int],
        env: dict[str, str] | None = None,
        stop_signal: int | None = None,
    ) -> ProcessRecord:
        """A record for node ``name`` of this service, logging to ``logs/NAME.log``."""
        record = ProcessRecord(
            name=name,
            service=self.service,
            command=command,
            log=str(self._log(name)),
            cwd=str(cwd),
            ports=ports,
            env=env or {},
        )
        if stop_signal is not None:
            record.stop_signal = stop_signal
        return record

    # -- roles -----------------------------------------------------------------

    def _roles(
        self,
        ask: Callable[[ProcessRecord], str],
        *,
        unreachable: tuple[type[BaseException], ...],
        records: Iterable[ProcessRecord] | None = None,
    ) -> dict[str, str]:
        """Node name -> role: ``down`` / ``paused`` from the process table,
        else what ``ask`` says, ``unreachable`` if it raises one of ``unreachable``."""
        out: dict[str, str] = {}
        for record in self.records if records is None else records:
            node = ProcessNode(record)
            if not node.running():
                out[record.name] = "down"
            elif node.paused():
                out[record.name] = "paused"
            else:
                try:
                    out[record.name] = ask(record)
                except unreachable:
                    out[record.name] = "unreachable"
        return out
