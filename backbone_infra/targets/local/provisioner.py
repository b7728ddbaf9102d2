"""The local provisioner: a whole stack as real processes on loopback.

``up`` renders a :class:`~backbone_infra.spec.StackSpec` through the service renderers
(:func:`stages`), waits until every service answered a real client request,
writes ``.stacks/NAME/outputs.json`` and returns a :class:`LocalStack`. ``down``
stops every node of a stack, however far it got. ``load`` rebuilds a
``LocalStack`` from the state directory in any later process, for node control
(kill, stop, pause, resume, restart) and role look-ups.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from backbone.connections import (
    ConnectionsDocument,
    DrillConnection,
    DuckDBConnection,
    write_document,
)
from backbone_infra.errors import ServiceStartError, StackExistsError, StackNotFoundError
from backbone_infra.spec import StackSpec
from backbone_infra.targets.job_principals import job_principals
from backbone_infra.targets.local.base import LocalService
from backbone_infra.targets.local.ports import PortAllocator, is_port_conflict
from backbone_infra.targets.local.process import ProcessNode, ProcessRecord
from backbone_infra.targets.local.secrets import StackSecrets
from backbone_infra.targets.local.stack import LocalStack
from backbone_infra.targets.local.state import (
    StackState,
    load_state,
    save_state,
    stack_dir,
    stacks_root,
)
from backbone_infra.targets.local.tls import issue_local_certificates

__all__ = [
    "LocalStack",
    "down",
    "list_stacks",
    "load",
    "preflight",
    "stack_processes",
    "start_service",
    "up",
]


def stages() -> tuple[tuple[type[Any], ...], ...]:
    """The renderers, in stages. Services of one stage are independent and
    start concurrently; each stage sees the services of the earlier ones as
    ``peers``. Adding a service is adding its class here. (Imported here, so
    ``down`` and node control do not pay for every client library.)"""
    from backbone_infra.targets.local.etcd import LocalEtcd
    from backbone_infra.targets.local.kafka import LocalKafka
    from backbone_infra.targets.local.monitoring import LocalMonitoring
    from backbone_infra.targets.local.postgres import LocalPostgres
    from backbone_infra.targets.local.redis import LocalRedis

    # etcd first: Patroni (PostgreSQL on ha) elects its leader through it.
    return (
        (LocalEtcd,),
        (LocalPostgres, LocalRedis, LocalKafka),
        (LocalMonitoring,),
    )


def _renderer_class(service: str) -> type[Any]:
    for stage in stages():
        for cls in stage:
            if cls.service == service:
                return cls
    raise KeyError(f"no renderer for service {service!r}")


#: Tries per service when a port is taken between choosing and binding it.
PORT_RETRIES = 3
#: ``down``: how long nodes get to exit on their stop signal before SIGKILL.
_GRACE_S = 1.0
BOOTSTRAP_DUCKDB = "bootstrap.duckdb"

Echo = Callable[[str], None]


class _SharedPorts(PortAllocator):
    """A :class:`PortAllocator` that services preparing in parallel can share."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def allocate(self) -> int:
        with self._lock:
            return super().allocate()


# -- up ----------------------------------------------------------------------------------


def up(
    spec: StackSpec,
    *,
    root: Path | None = None,
    echo: Echo | None = None,
) -> LocalStack:
    """Bring the stack up and return it once every service is ready.

    Raises :class:`StackExistsError` when a stack of that name is running. On a
    failure every node already started is stopped, the state directory is kept
    for inspection and the error is re-raised.
    """
    say: Echo = echo or (lambda _msg: None)
    if spec.has_services:
        preflight(spec)
    directory = stack_dir(spec.name, root)
    if directory.exists():
        if stack_processes(directory) or _recorded_running(directory):
            raise StackExistsError(spec.name)
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    # Traversable (not readable) for the PostgreSQL user; every file is 0600.
    os.chmod(directory, 0o711)
    secrets = StackSecrets.load_or_create(directory)
    if spec.has_services:
        issue_local_certificates(spec, directory)
    state = StackState(spec=spec)
    save_state(directory, state)
    services: dict[str, LocalService] = {}
    stack = LocalStack(directory, state, services)
    began = time.monotonic()
    try:
        if spec.has_services:
            _start_stages(stack, secrets, say)
        document = _document(stack)
        write_document(document, stack.outputs_path)
    except BaseException as exc:
        state.status = "failed"
        state.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        stack._save()
        say(f"up failed; stopping what was started (state kept in {directory})")
        _stop_everything(directory, state)
        raise
    state.timings["total"] = time.monotonic() - began
    state.status = "running"
    stack._save()
    return stack


def preflight(spec: StackSpec) -> None:
    """Fail before anything starts when a program the stack needs is missing.

    Each renderer may offer ``check_installed(spec)``, raising
    :class:`~backbone_infra.errors.MissingBinaryError`.
    """
    for stage in stages():
        for cls in stage:
            check = getattr(cls, "check_installed", None)
            if callable(check):
                check(spec)


def _start_stages(stack: LocalStack, secrets: StackSecrets, say: Echo) -> None:
    """Every service in its own thread. A service of a later stage starts as
    soon as the earlier stages are *prepared* (their ports and configs are
    what it needs), so e.g. Prometheus comes up while Kafka is still starting.
    If an earlier service re-prepares after a port race, the later one is
    brought up again against the new ports."""
    ports = _SharedPorts()
    abort = threading.Event()
    staged = [[cls(stack.spec, stack.dir, secrets) for cls in stage] for stage in stages()]
    flat: list[tuple[int, LocalService]] = [(i, s) for i, st in enumerate(staged) for s in st]
    for _, svc in flat:
        stack.services[svc.service] = svc
    prepared = {svc.service: threading.Event() for _, svc in flat}
    preparations = dict.fromkeys(prepared, 0)

    def run(index: int, svc: LocalService) -> None:
        earlier = [s for stage in staged[:index] for s in stage]
        for dep in earlier:
            while not prepared[dep.service].wait(0.05):
                if abort.is_set():
                    raise _Aborted(svc.service)
        peers = {dep.service: dep for dep in earlier}
        seen = {dep.service: preparations[dep.service] for dep in earlier}

        def on_prepared() -> None:
            preparations[svc.service] += 1
            prepared[svc.service].set()

        _bring_up(stack, svc, ports, peers, say, abort, on_prepared)
        # Followers wait here for the services they render against to be up,
        # and start over if one of them moved to new ports meanwhile.
        for dep in earlier:
            while dep.service in running and not abort.is_set():
                time.sleep(0.05)
        if any(preparations[dep.service] != seen[dep.service] for dep in earlier):
            _stop_records(svc.records)
            say(f"{svc.service}: a peer moved to new ports; starting it again")
            _bring_up(stack, svc, ports, peers, say, abort, on_prepared)

    running = {svc.service for _, svc in flat}
    with ThreadPoolExecutor(max_workers=len(flat)) as pool:
        futures = {}
        for index, svc in flat:
            fut = pool.submit(run, index, svc)
            fut.add_done_callback(partial(_discard, running, svc.service))
            futures[fut] = svc
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        if any(f.exception() for f in done):
            # Do not wait for the others to come up only to stop them: stop
            # what runs now, so their starts fail fast.
            abort.set()
            _stop_everything(stack.dir, stack._state_with_records())
        errors = [f.exception() for f in futures]
    for _, svc in flat:
        if not svc.records:  # a disabled service (monitoring off) has no nodes
            del stack.services[svc.service]
    stack._save()
    failed = [e for e in errors if e is not None and not isinstance(e, _Aborted)]
    if failed:
        # A service error names its node and log; prefer it over a follow-on error.
        failed.sort(key=lambda e: not isinstance(e, ServiceStartError))
        raise failed[0]


class _Aborted(Exception):
    """Another service of the stage failed; this one gave up."""


def _bring_up(
    stack: LocalStack,
    svc: LocalService,
    ports: PortAllocator,
    peers: dict[str, LocalService],
    say: Echo,
    abort: threading.Event,
    on_prepared: Callable[[], None],
) -> None:
    began = time.monotonic()
    node_times = start_service(
        svc, ports, peers, say=say, abort=abort, on_change=stack._save, on_prepared=on_prepared
    )
    took = time.monotonic() - began
    with stack._lock:
        stack._state.timings.update(
            {k: round(v, 3) for k, v in node_times.items() if k != svc.service}
        )
        stack._state.timings[svc.service] = round(took, 3)
    if svc.records:
        nodes = ", ".join(f"{k} {v:.1f}s" for k, v in node_times.items() if k != svc.service)
        say(f"{svc.service:<10} ready in {took:5.1f}s  ({nodes})")


def start_service(
    svc: LocalService,
    ports: PortAllocator,
    peers: dict[str, LocalService],
    *,
    say: Echo | None = None,
    abort: threading.Event | None = None,
    on_change: Callable[[], None] | None = None,
    on_prepared: Callable[[], None] | None = None,
) -> dict[str, float]:
    """``prepare`` and ``start`` one service; returns its seconds-to-ready.

    A port taken between choosing and binding (the node's log says so, see
    :func:`~backbone_infra.targets.local.ports.is_port_conflict`) is retried with fresh
    ports, up to :data:`PORT_RETRIES` tries. ``abort`` set by another thread
    makes it give up; ``on_change`` is called whenever the records changed,
    ``on_prepared`` after each successful ``prepare``.
    """
    for attempt in range(1, PORT_RETRIES + 1):
        svc.prepare(ports, peers)
        if on_change:
            on_change()
        if on_prepared:
            on_prepared()
        if abort is not None and abort.is_set():
            raise _Aborted(svc.service)
        try:
            return svc.start()
        except Exception as exc:
            _stop_records(svc.records)
            if abort is not None and abort.is_set():
                raise _Aborted(svc.service) from exc
            if (
                isinstance(exc, ServiceStartError)
                and attempt < PORT_RETRIES
                and is_port_conflict(exc.tail)
            ):
                if say:
                    say(f"{svc.service}: {exc.node} lost a port race; retrying with new ports")
                continue
            raise
        finally:
            if on_change:
                on_change()
    raise AssertionError("unreachable")  # pragma: no cover


def _document(stack: LocalStack) -> ConnectionsDocument:
    spec = stack.spec
    if not spec.has_services:
        return ConnectionsDocument(
            stack=spec.name,
            environment="local",
            tier=spec.tier,
            size=spec.size,
            duckdb=DuckDBConnection(path=str(stack.dir / BOOTSTRAP_DUCKDB)),
        )
    svcs = stack.services
    kafka: Any = svcs["kafka"]  # LocalKafka: the drills' listener addresses
    return ConnectionsDocument(
        stack=spec.name,
        environment="local",
        tier=spec.tier,
        size=spec.size,
        redis=svcs["redis"].connection(),
        kafka=kafka.connection(),
        timescale=svcs["postgres"].connection(),
        monitoring=svcs["monitoring"].connection() if "monitoring" in svcs else None,
        drill=DrillConnection(kafka_bootstrap_servers=kafka.drill_bootstrap_servers()),
        principals=job_principals(spec, StackSecrets.load(stack.dir)),
    )


# -- down ----------------------------------------------------------------------------------


def down(name: str, *, root: Path | None = None) -> None:
    """Stop every node of the stack; idempotent, and fine on a half-started stack.

    Each node gets its stop signal and :data:`_GRACE_S` seconds, then SIGKILL;
    any process still running from the stack's directory is killed too.
    """
    directory = stack_dir(name, root)
    if not directory.exists():
        return
    try:
        state: StackState | None = load_state(directory)
    except (OSError, ValueError):
        state = None
    _stop_everything(directory, state)
    if state is not None:
        state.status = "stopped"
        save_state(directory, state)


def _stop_everything(directory: Path, state: StackState | None) -> None:
    records = [r for recs in (state.records.values() if state else ()) for r in recs]
    _stop_records(records)
    leftovers = stack_processes(directory)
    for proc in leftovers:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(leftovers, timeout=2)


def _stop_records(records: list[ProcessRecord]) -> None:
    """Signal every node at once, wait up to the grace period, then SIGKILL."""
    nodes = [ProcessNode(r) for r in records]
    live = [n for n in nodes if n.running()]
    for node in live:
        node._signal_group(signal.SIGCONT)
        node._signal_group(node.record.stop_signal)
    deadline = time.monotonic() + _GRACE_S
    while time.monotonic() < deadline and any(n.running() for n in live):
        time.sleep(0.05)
    for node in live:
        if node.running():
            node._signal_group(signal.SIGKILL)
    for node in live:
        node._wait_gone(2)
    for rec in records:
        rec.pid = None


def stack_processes(directory: Path) -> list[psutil.Process]:
    """Processes started from the stack's directory (by working directory or a
    path on their command line) — whatever a crashed ``up`` may have left."""
    prefix = str(directory.resolve()) + os.sep
    own = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for proc in psutil.process_iter(["pid", "cwd", "cmdline", "status"]):
        info = proc.info
        if info["pid"] in own or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cwd = (info.get("cwd") or "") + os.sep
        args = info.get("cmdline") or []
        if cwd.startswith(prefix) or any(prefix in a for a in args):
            found.append(proc)
    return found


def _recorded_running(directory: Path) -> bool:
    try:
        state = load_state(directory)
    except (OSError, ValueError):
        return False
    return any(ProcessNode(r).running() for recs in state.records.values() for r in recs)


# -- load / list -----------------------------------------------------------------------------


def load(name: str, *, root: Path | None = None) -> LocalStack:
    """The stack as saved in its state directory, for control from any process."""
    directory = stack_dir(name, root)
    try:
        state = load_state(directory)
    except FileNotFoundError:
        raise StackNotFoundError(name, stacks_root(root)) from None
    services: dict[str, LocalService] = {}
    if state.records:
        secrets = StackSecrets.load(directory)
        for service, records in state.records.items():
            services[service] = _renderer_class(service)(
                state.spec, directory, secrets, records=records
            )
    return LocalStack(directory, state, services)


def list_stacks(root: Path | None = None) -> list[str]:
    """Names of every stack with a state directory under the root."""
    base = stacks_root(root)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "state.json").is_file())


def _discard(names: set[str], name: str, _done: object) -> None:
    """Done-callback of a service's bring-up: it no longer runs."""
    names.discard(name)
