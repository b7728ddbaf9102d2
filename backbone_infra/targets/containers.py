"""The container model: every container a Docker-style stack runs, as plain data.

The components describe services in the workload vocabulary
(:mod:`backbone_infra.targets.workload`); this module decides, once, which containers
that makes on a single-host engine (Docker or Podman): names, host names and
network aliases, images, entrypoints and commands, mounted files, the data
volume, published loopback ports, health checks, restart policy, one-shot
steps and what waits for what, limits and labels.

Two renderers consume the same :class:`PlannedContainer` list: the Pulumi
Docker backend (:mod:`backbone_infra.targets.docker`) declares each as a
``docker.Container``; the Compose renderer (:mod:`backbone_infra.targets.compose`)
writes each as a Compose service. So a Compose file and a ``pulumi up``
cannot disagree on which containers a stack has or how they run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from backbone.connections import HostPort
from backbone_infra.spec import Resources
from backbone_infra.targets.workload import Container, File, InitJob, StatefulService, ordinals

__all__ = [
    "HOST_GATEWAY",
    "Health",
    "PlannedContainer",
    "container_name",
    "health_of",
    "memory_mb",
    "plan_job",
    "plan_service",
    "replica_host",
]

_UNITS = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}

#: How containers reach the engine's host (the backbone's own /metrics).
HOST_GATEWAY = ("host.docker.internal", "host-gateway")

#: Where a published port of a replica is reached from the host.
External = Callable[[str, int, int], HostPort | None]


def memory_mb(quantity: str) -> int:
    """A Kubernetes memory quantity (``512Mi``, ``1Gi``) in MiB for Docker."""
    for suffix, factor in _UNITS.items():
        if quantity.endswith(suffix):
            return max(1, int(float(quantity[: -len(suffix)]) * factor))
    raise ValueError(f"memory {quantity!r} needs a Ki/Mi/Gi/Ti suffix (for example 512Mi)")


def _cpus(quantity: str) -> str:
    return str(int(quantity[:-1]) / 1000) if quantity.endswith("m") else quantity


def replica_host(service: str, ordinal: int) -> str:
    """The host name and network alias of one replica (``kafka-1``)."""
    return f"{service}-{ordinal}"


def container_name(stack: str, key: str) -> str:
    """The engine-wide container name of one planned container."""
    return f"backbone-{stack}-{key}"


@dataclass(frozen=True)
class Health:
    """A container health check as Docker runs it (``CMD`` form)."""

    test: tuple[str, ...]
    interval_s: int
    timeout_s: int
    retries: int
    start_period_s: int


def health_of(container: Container) -> Health | None:
    """The container's probe as a Docker health check; None where nothing can run it."""
    probe = container.probe
    if probe.command is not None:
        test = ("CMD", *probe.command)
    elif container.has_wget:
        url = f"http://127.0.0.1:{probe.http_port}{probe.http_path}"
        test = ("CMD", "wget", "-q", "-O", "/dev/null", url)
    else:
        return None  # distroless exporter images have no tool to run a check with
    return Health(
        test=test,
        interval_s=probe.period_s,
        timeout_s=probe.timeout_s,
        retries=probe.failure_threshold,
        start_period_s=probe.initial_delay_s,
    )


@dataclass(frozen=True)
class PlannedContainer:
    """One container of a stack, whichever renderer declares it."""

    #: Unique within the stack: ``redis-1``, ``redis-1-exporter``, ``create-topics``.
    key: str
    #: Engine-wide name (:func:`container_name`).
    name: str
    #: The service (or job) it belongs to, for labels and selection.
    service: str
    image: str
    entrypoint: tuple[str, ...] | None
    command: tuple[str, ...] | None
    env: Mapping[str, str]
    files: tuple[File, ...]
    #: Owner of the secret files (the image's service user).
    uid: int | None
    memory_mb: int
    memory_reservation_mb: int
    cpus: str
    hostname: str | None = None
    #: Named data volume (key of the replica's volume) and where it is mounted.
    volume: str | None = None
    data_dir: str | None = None
    #: Network aliases on the stack network; None for a container that
    #: joins another's network namespace (:attr:`shares_network_of`).
    aliases: tuple[str, ...] | None = ()
    shares_network_of: str | None = None
    #: (host port, container port), published on 127.0.0.1.
    ports: tuple[tuple[int, int], ...] = ()
    extra_hosts: tuple[tuple[str, str], ...] = ()
    health: Health | None = None
    #: Runs to completion once (an init step or job) instead of staying up.
    run_once: bool = False
    user: str | None = None
    #: Keys of containers that must have started (or, when run_once, finished) first.
    depends_on: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


def _limits(resources: Resources) -> dict[str, object]:
    return {
        "memory_mb": memory_mb(resources.memory_limit),
        "memory_reservation_mb": memory_mb(resources.memory_request),
        "cpus": _cpus(resources.cpu_limit),
    }


def _labels(stack: str, service: str) -> dict[str, str]:
    return {"backbone.stack": stack, "backbone.service": service}


def plan_service(svc: StatefulService, *, stack: str, external: External) -> list[PlannedContainer]:
    """Per replica: its init steps, its main container and the sidecars sharing its network."""
    planned: list[PlannedContainer] = []
    main = svc.main
    data_dir = main.data_dir or "/data"
    for ordinal in ordinals(svc.replicas):
        host = replica_host(svc.name, ordinal)
        volume = f"{host}-data"
        steps = [
            PlannedContainer(
                key=f"{host}-{step.name}",
                name=container_name(stack, f"{host}-{step.name}"),
                service=svc.name,
                image=step.image,
                entrypoint=step.command,
                command=None,
                env={},
                files=(),
                uid=None,
                user="0" if step.as_root else None,
                volume=volume,
                data_dir=data_dir,
                # Egress for the step (a download) needs a network; it runs once.
                aliases=(),
                run_once=True,
                labels=_labels(stack, svc.name),
                **_limits(step.resources),  # type: ignore[arg-type]
            )
            for step in svc.init
        ]
        ports = tuple(
            (ext.port, port)
            for port in svc.published.values()
            if (ext := external(svc.name, ordinal, port)) is not None
        )
        planned += steps
        planned.append(
            PlannedContainer(
                key=host,
                name=container_name(stack, host),
                service=svc.name,
                hostname=host,
                image=main.image,
                entrypoint=main.command or None,
                command=main.args or None,
                env=dict(main.env),
                files=main.files,
                uid=main.uid,
                volume=volume,
                data_dir=data_dir,
                aliases=(host, svc.name),
                extra_hosts=(HOST_GATEWAY,),
                ports=ports,
                health=health_of(main),
                # Images whose entrypoint dropped root run the binary as their user.
                user=str(main.uid) if main.run_as_uid and main.uid is not None else None,
                depends_on=tuple(s.key for s in steps),
                labels=_labels(stack, svc.name),
                **_limits(main.resources),  # type: ignore[arg-type]
            )
        )
        for sidecar in svc.containers[1:]:
            planned.append(
                PlannedContainer(
                    key=f"{host}-{sidecar.name}",
                    name=container_name(stack, f"{host}-{sidecar.name}"),
                    service=svc.name,
                    image=sidecar.image,
                    entrypoint=sidecar.command or None,
                    command=sidecar.args or None,
                    env=dict(sidecar.env),
                    files=sidecar.files,
                    uid=sidecar.uid,
                    # Share the replica's network namespace, as a pod's containers do.
                    aliases=None,
                    shares_network_of=host,
                    health=health_of(sidecar),
                    depends_on=(host,),
                    labels=_labels(stack, svc.name),
                    **_limits(sidecar.resources),  # type: ignore[arg-type]
                )
            )
    return planned


def plan_job(job: InitJob, *, stack: str, after: Sequence[str]) -> PlannedContainer:
    """A run-to-completion container that starts once ``after`` (keys) are up."""
    return PlannedContainer(
        key=job.name,
        name=container_name(stack, job.name),
        service=job.name,
        image=job.image,
        entrypoint=job.command,
        command=None,
        env={},
        files=job.files,
        uid=job.uid,
        aliases=(),
        run_once=True,
        depends_on=tuple(after),
        labels=_labels(stack, job.name),
        **_limits(job.resources),  # type: ignore[arg-type]
    )
