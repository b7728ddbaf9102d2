"""Patroni's REST API as every target asks it: one call, and what a node's answer means.

The local processes and the compose containers both learn PostgreSQL's roles
from Patroni (each node's ``/patroni``, the cluster's ``/cluster``) and hand
the primary role over with ``/switchover``. The call and the reading of the
answers live here once, so a role is spelt the same in every environment
(``primary``, ``standby (quorum)``, ``standby (starting)``): the drills wait
for exactly those words.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

__all__ = ["PROBE_TIMEOUT_S", "cluster_roles", "describe_role", "rest_call"]

#: Seconds one REST call may take (a node that cannot answer in that time is "unknown").
PROBE_TIMEOUT_S = 2.0


def rest_call(
    url: str, body: dict[str, Any] | None = None, *, timeout: float = PROBE_TIMEOUT_S
) -> tuple[int, Any]:
    """``(HTTP status, JSON body)`` of a GET of ``url`` (a POST of ``body`` when given).

    Patroni answers 503 with a body for "not in that role": that is an answer,
    not an error. A node that does not answer raises :class:`OSError`.
    """
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def cluster_roles(body: Any) -> dict[str, str]:
    """Member name -> Patroni's cluster role (``leader``, ``quorum_standby``,
    ``sync_standby``, ``replica``) from a ``/cluster`` answer; empty when it is none."""
    if not isinstance(body, dict):
        return {}
    return {m["name"]: m.get("role", "") for m in body.get("members", []) if "name" in m}


def describe_role(status: int, body: Any, cluster_role: str) -> str:
    """A node's role from its own ``/patroni`` answer and the cluster's view of it:
    ``primary``, or ``standby`` with ``(quorum)`` when commits may wait for it;
    a state other than ``running`` is added (``standby (starting)``)."""
    if not isinstance(body, dict):
        return f"patroni answered {status}"
    role, state = body.get("role", "?"), body.get("state", "?")
    if role in ("primary", "master"):
        base = "primary"
    elif role == "replica":
        base = {"quorum_standby": "standby (quorum)", "sync_standby": "standby (sync)"}.get(
            cluster_role, "standby"
        )
    else:
        base = f"patroni {role}"
    return base if state == "running" else f"{base} ({state})"
