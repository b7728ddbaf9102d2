"""PostgreSQL under Patroni in a compose ``ha`` stack, driven from the host.

Each node's container runs Patroni as its main process, and Patroni runs
postgres. The host reaches every node's REST API at its published port, so
roles, readiness and a switchover are asked of Patroni as on the local
processes (:mod:`backbone_infra.targets.patroni_api` reads the answers once
for both). A crashed database server on a live machine is the postmaster's
process group SIGKILLed inside the container, Patroni left running: what the
local environment's ``crash_postgres`` does to its processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from backbone_harness.containers.configs import POSTGRES_DATA
from backbone_harness.containers.engine import podman
from backbone_harness.errors import HarnessError
from backbone_infra.targets.local.ports import LOOPBACK
from backbone_infra.targets.patroni_api import (
    PROBE_TIMEOUT_S,
    cluster_roles,
    describe_role,
    rest_call,
)

__all__ = ["crash_server", "etcd_answers", "node_answers", "node_role", "rest", "switchover"]

#: Pause between switchover attempts Patroni refused or rolled back.
_SWITCHOVER_RETRY_S = 2.0

#: Shell run in the node's container: SIGKILL the postmaster that serves the
#: data directory and its backends (each in a process group of its own, so they
#: are named one by one, collected before the postmaster dies and orphans them).
#: Patroni started the postmaster in a session of its own, so Patroni (the
#: container's main process) survives; a postmaster in PID 1's group is refused.
_CRASH = (
    'pid=$(head -n 1 {data}/postmaster.pid 2>/dev/null) && [ -n "$pid" ] && [ -d /proc/$pid ] || '
    "{{ echo 'no postmaster runs' >&2; exit 3; }}; "
    "pgid=$(cut -d' ' -f5 /proc/$pid/stat); "
    '[ "$pgid" != "$(cut -d\' \' -f5 /proc/1/stat)" ] || '
    "{{ echo 'the postmaster shares the main process group' >&2; exit 4; }}; "
    "kids=$(for p in /proc/[0-9]*; do set -- $(cut -d' ' -f1,4 $p/stat 2>/dev/null); "
    '[ "$2" = "$pid" ] && echo $1; done); '
    "kill -9 -$pgid $kids"
)


def rest(
    port: int, path: str, body: dict[str, Any] | None = None, *, timeout: float = PROBE_TIMEOUT_S
) -> tuple[int, Any]:
    """Patroni's REST API at the node's published port (see ``rest_call``)."""
    return rest_call(f"http://{LOOPBACK}:{port}{path}", body, timeout=timeout)


def node_answers(port: int, role: str = "health") -> Callable[[], bool]:
    """A readiness check: the node's Patroni says 200 to ``/<role>`` (``health``:
    postgres runs in any role; ``primary``; ``replica``)."""

    def check() -> bool:
        return rest(port, f"/{role}")[0] == 200

    return check


def node_role(port: int, name: str) -> str:
    """Member ``name``'s role as its Patroni (REST API at ``port``) says
    (``primary``, ``standby (quorum)``, ...), with the cluster's view of it
    from the same node's ``/cluster``."""
    status, body = rest(port, "/patroni")
    cluster: dict[str, str] = {}
    if isinstance(body, dict):
        c_status, c_body = rest(port, "/cluster")
        if c_status == 200:
            cluster = cluster_roles(c_body)
    return describe_role(status, body, cluster.get(name, ""))


def etcd_answers(container: str, port: int) -> Callable[[], bool]:
    """A readiness check of the etcd container: its ``/health`` inside the
    container (etcd publishes no port; only the Patroni nodes dial it)."""

    def check() -> bool:
        url = f"http://127.0.0.1:{port}/health"
        done = podman("exec", container, "wget", "-q", "-O", "-", url, check=False, timeout=10)
        return done.returncode == 0 and '"health":"true"' in done.stdout.replace(" ", "")

    return check


def crash_server(container: str) -> None:
    """SIGKILL the node's PostgreSQL server (postmaster and backends), not Patroni."""
    done = podman("exec", container, "sh", "-c", _CRASH.format(data=POSTGRES_DATA), check=False)
    if done.returncode != 0:
        raise HarnessError(
            f"could not crash PostgreSQL in {container}: {(done.stderr or done.stdout).strip()}; "
            "check `harness node roles` (the node must run a postmaster)"
        )


def switchover(
    candidate: str,
    *,
    rest_port: Callable[[str], int],
    primary: Callable[[], str],
    timeout_s: float = 60.0,
) -> float:
    """Hand the primary role to ``candidate`` through Patroni; seconds until it is primary.

    A refused attempt (a candidate that just rejoined may need a loop or two
    to count as healthy) is tried again until ``timeout_s``.
    """
    leader = primary()
    if leader == candidate:
        return 0.0
    began = time.monotonic()
    deadline = began + timeout_s
    last: tuple[int, Any] = (0, None)
    while time.monotonic() < deadline:
        try:
            if primary() == candidate:
                return time.monotonic() - began
        except HarnessError:  # between two primaries: ask again
            time.sleep(0.2)
            continue
        last = rest(
            rest_port(candidate),
            "/switchover",
            {"leader": leader, "candidate": candidate},
            timeout=max(5.0, deadline - time.monotonic()),
        )
        if last[0] != 200:
            time.sleep(_SWITCHOVER_RETRY_S)
    raise HarnessError(
        f"Patroni did not switch over {leader} -> {candidate} within {timeout_s:.0f} s "
        f"(last answer {last[0]}: {last[1]}); check `harness node roles`: {candidate} must "
        "be a streaming quorum standby"
    )
