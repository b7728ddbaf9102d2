"""The vocabulary the components speak and every target backend renders.

A component (``RedisDeployment``, ``KafkaCluster`` ...) turns the stack spec into
plain workload descriptions: a :class:`StatefulService` of N replicas with a
main container and exporter sidecars, its config and secret files, probes and
resources, and one-shot :class:`InitJob` s. A :class:`Backend` renders those as
Docker containers or Kubernetes objects. Ports, config files, topic lists and
exporters are therefore written once, in the components; the backends only
know how their platform runs a replica.

Per-replica behaviour (which Redis is the primary, a broker's ``node.id``)
comes from the replica's ordinal, read by the start scripts from the host
name (``redis-1``, ``kafka-2``): a StatefulSet pod name on Kubernetes, the
container host name on Docker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pulumi

from backbone.connections import HostPort
from backbone_infra.spec import Resources

__all__ = [
    "FIRST_ORDINAL",
    "SIDECAR_RESOURCES",
    "Backend",
    "Container",
    "File",
    "InitJob",
    "InitStep",
    "Probe",
    "RenderedService",
    "StatefulService",
    "ordinals",
    "secret_file",
]

#: Replicas are numbered from 1 on every target (``redis-1``, ``kafka-3``), as
#: the local environment names its processes: one numbering in every place a
#: replica is named (host names, Kafka ``node.id``, scrape targets, drills).
FIRST_ORDINAL = 1


def ordinals(replicas: int) -> range:
    """The ordinals of ``replicas`` replicas: ``1..replicas``."""
    return range(FIRST_ORDINAL, FIRST_ORDINAL + replicas)


#: Requests/limits of exporter sidecars and one-shot steps (small, fixed).
SIDECAR_RESOURCES = Resources(
    cpu_request="50m", cpu_limit="250m", memory_request="32Mi", memory_limit="128Mi", storage="0"
)


@dataclass(frozen=True)
class File:
    """A file mounted read-only into a container.

    ``secret`` files hold credentials: Kubernetes puts them in a Secret, Docker
    uploads them with mode 0400; their content must be a Pulumi secret Output.
    Everything else goes to a ConfigMap (Kubernetes) or a 0444 upload (Docker).
    """

    directory: str
    name: str
    content: pulumi.Input[str]
    secret: bool = False

    @property
    def path(self) -> str:
        return f"{self.directory}/{self.name}"


@dataclass(frozen=True)
class Probe:
    """Health check: a command run in the container, or an HTTP GET."""

    command: tuple[str, ...] | None = None
    http_port: int | None = None
    http_path: str = "/"
    initial_delay_s: int = 10
    period_s: int = 10
    timeout_s: int = 5
    failure_threshold: int = 6
    #: Where readiness differs from liveness (Kubernetes readiness probes):
    #: Patroni is alive long before its node may take traffic.
    readiness: Probe | None = None

    def __post_init__(self) -> None:
        if (self.command is None) == (self.http_port is None):
            raise ValueError("a Probe needs exactly one of command= or http_port=")


@dataclass(frozen=True)
class Container:
    """One container of a replica; the first of a service is its main container."""

    name: str
    image: str
    ports: Mapping[str, int]
    probe: Probe
    resources: Resources
    command: tuple[str, ...] | None = None
    args: tuple[str, ...] | None = None
    #: Plain settings only; credentials travel as secret :class:`File` s.
    env: Mapping[str, str] = field(default_factory=dict)
    files: tuple[File, ...] = ()
    #: Where the persistent volume is mounted, if the container keeps state.
    data_dir: str | None = None
    #: The image has ``wget`` (Docker health checks over HTTP need it).
    has_wget: bool = False
    #: The image's service user: owns the secret files Docker writes.
    uid: int | None = None
    #: Run the main process as ``uid`` (for images whose entrypoint, which the
    #: components no longer use, was what dropped root).
    run_as_uid: bool = False


@dataclass(frozen=True)
class InitStep:
    """Runs to completion before a replica's containers start, on its data volume."""

    name: str
    image: str
    command: tuple[str, ...]
    resources: Resources
    #: Runs as root (to prepare ownership of the volume); the service itself never does.
    as_root: bool = True


@dataclass(frozen=True)
class StatefulService:
    """N identical replicas with stable names, storage and a client endpoint."""

    name: str
    replicas: int
    containers: tuple[Container, ...]
    #: Ports clients (and peers) connect to: name -> port.
    client_ports: Mapping[str, int]
    #: The exporter port Prometheus scrapes on every replica, and the scrape
    #: job it belongs to (``backbone_infra.render.prometheus.JOB_*``).
    metrics_port: int
    metrics_job: str
    storage: str
    #: Other services (and jobs) whose pods may reach every port of this one.
    peers: tuple[str, ...] = ()
    #: Group id that owns the data volume (the image's service user).
    fs_group: int | None = None
    #: Ports published outside the network, per replica: name -> container port.
    published: Mapping[str, int] = field(default_factory=dict)
    #: Steps run before the containers, with the data volume mounted at the
    #: main container's ``data_dir``.
    init: tuple[InitStep, ...] = ()
    #: The pods are clients of the data services (Kubernetes: labelled
    #: ``backbone.io/client=true``, which the services' network policies admit).
    client: bool = False
    #: Nothing to keep across restarts: Kubernetes runs a Deployment (``data_dir``
    #: on an emptyDir) instead of a StatefulSet.
    stateless: bool = False

    @property
    def main(self) -> Container:
        return self.containers[0]


@dataclass(frozen=True)
class InitJob:
    """A run-to-completion container (topic creation and the like)."""

    name: str
    image: str
    command: tuple[str, ...]
    resources: Resources
    files: tuple[File, ...] = ()
    uid: int | None = None


@dataclass(frozen=True)
class RenderedService:
    """What a backend made for one service: the resources that gate readiness."""

    resources: list[pulumi.Resource]


class Backend(Protocol):
    """Resource-making primitives of one target (Docker or Kubernetes)."""

    environment: str
    #: True when the connections document addresses clients outside the
    #: platform's network (Docker host), False for in-cluster clients.
    clients_outside: bool

    def replica_host(self, service: str, ordinal: int) -> str:
        """The in-network DNS name of one replica."""
        ...

    def service_host(self, service: str) -> str:
        """The in-network DNS name that reaches any ready replica."""
        ...

    def external(self, service: str, ordinal: int, port: int) -> HostPort | None:
        """Where a published port of a replica is reached from outside, if anywhere."""
        ...

    def client_endpoint(self, service: str, ordinal: int, port: int) -> HostPort:
        """The address written to the connections document for clients."""
        ...

    def backbone_metrics_target(self, port: int) -> str:
        """Where Prometheus finds the backbone's own ``/metrics``."""
        ...

    def stateful_service(
        self, svc: StatefulService, parent: pulumi.Resource
    ) -> RenderedService: ...

    def init_job(
        self, job: InitJob, parent: pulumi.Resource, depends_on: Sequence[pulumi.Resource]
    ) -> pulumi.Resource: ...


def secret_file(directory: str, name: str, content: pulumi.Input[str]) -> File:
    """A credential file; its content is marked a Pulumi secret whatever it came from."""
    return File(directory, name, pulumi.Output.secret(content), secret=True)
