"""The container plan as a Compose file (Docker Compose or podman-compose).

:func:`compose_document` turns the :class:`~backbone_infra.targets.containers.PlannedContainer`
list the Docker backend declared into a Compose document: the same
containers, names, images, commands, published loopback ports, health checks,
limits and labels. Files the Pulumi target uploads into a container are
bind-mounted read-only here, from a ``files/`` folder written next to the
Compose file; the document itself carries no file content and no secret.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from backbone_infra.targets.containers import PlannedContainer

__all__ = ["compose_document", "mounted_file"]


def mounted_file(key: str, path: str) -> str:
    """Where a container's file lives, relative to the Compose file."""
    return f"files/{key}{path}"


def _service(
    c: PlannedContainer, network: str, by_key: Mapping[str, PlannedContainer]
) -> dict[str, Any]:
    svc: dict[str, Any] = {"container_name": c.name, "image": c.image}
    if c.hostname:
        svc["hostname"] = c.hostname
    if c.entrypoint:
        svc["entrypoint"] = list(c.entrypoint)
    if c.command:
        svc["command"] = list(c.command)
    if c.env:
        svc["environment"] = dict(c.env)
    if c.user:
        svc["user"] = c.user
    volumes = [f"{c.volume}:{c.data_dir or '/data'}"] if c.volume else []
    volumes += [f"./{mounted_file(c.key, f.path)}:{f.path}:ro" for f in c.files]
    if volumes:
        svc["volumes"] = volumes
    if c.shares_network_of:
        svc["network_mode"] = f"service:{c.shares_network_of}"
    elif c.aliases is not None:
        svc["networks"] = {network: {"aliases": list(c.aliases)} if c.aliases else None}
    if c.extra_hosts:
        svc["extra_hosts"] = [f"{host}:{ip}" for host, ip in c.extra_hosts]
    if c.ports:
        svc["ports"] = [f"127.0.0.1:{outer}:{inner}" for outer, inner in c.ports]
    if c.health:
        svc["healthcheck"] = {
            "test": list(c.health.test),
            "interval": f"{c.health.interval_s}s",
            "timeout": f"{c.health.timeout_s}s",
            "retries": c.health.retries,
            "start_period": f"{c.health.start_period_s}s",
        }
    if c.depends_on:
        svc["depends_on"] = {
            k: {
                "condition": "service_completed_successfully"
                if by_key[k].run_once
                else "service_started"
            }
            for k in c.depends_on
        }
    svc["restart"] = "no" if c.run_once else "unless-stopped"
    svc["mem_limit"] = f"{c.memory_mb}m"
    svc["mem_reservation"] = f"{c.memory_reservation_mb}m"
    svc["cpus"] = c.cpus
    svc["labels"] = dict(c.labels)
    return svc


def compose_document(plan: Sequence[PlannedContainer], *, stack: str) -> dict[str, Any]:
    """The Compose document of ``plan`` (service keys are the planned containers' keys)."""
    network = "backbone"
    by_key = {c.key: c for c in plan}
    if len(by_key) != len(plan):
        raise ValueError("the container plan has two containers with one key")
    return {
        "name": f"backbone-{stack}",
        "services": {c.key: _service(c, network, by_key) for c in plan},
        "networks": {network: {"name": f"backbone-{stack}", "labels": {"backbone.stack": stack}}},
        "volumes": {
            c.volume: {"name": f"backbone-{stack}-{c.volume}"} for c in plan if c.volume is not None
        },
    }
