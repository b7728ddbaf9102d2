"""Docker target: the workload vocabulary rendered with pulumi-docker.

One user-defined network per stack; per replica a container whose host name
and network alias is the replica's name (``kafka-1``) plus the service alias
(``kafka``); exporter sidecars share the main container's network namespace,
like containers of one pod. Each stateful replica gets a named volume, a
health check, ``restart=unless-stopped`` and memory/CPU limits.

Credentials: Docker has no secret store outside swarm mode, so secret files
are written into the container with ``uploads`` (mode 0400, owned by the
service user) from Pulumi secret Outputs. They are never in ``envs`` (which
``docker inspect`` shows to anyone with the socket) and stay encrypted in the
Pulumi state. Published ports bind to 127.0.0.1 only.

Which containers a service makes is decided in :mod:`backbone_infra.targets.containers`
(the same plan the Compose renderer writes); this module only declares each
planned container as a Pulumi resource, and keeps the plan in :attr:`DockerBackend.plan`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker

from backbone.connections import HostPort
from backbone_infra.targets.containers import (
    Health,
    PlannedContainer,
    memory_mb,
    plan_job,
    plan_service,
    replica_host,
)
from backbone_infra.targets.workload import File, InitJob, RenderedService, StatefulService

__all__ = ["DockerBackend", "memory_mb"]


def _healthcheck(health: Health | None) -> docker.ContainerHealthcheckArgs | None:
    if health is None:
        return None
    return docker.ContainerHealthcheckArgs(
        tests=list(health.test),
        interval=f"{health.interval_s}s",
        timeout=f"{health.timeout_s}s",
        retries=health.retries,
        start_period=f"{health.start_period_s}s",
    )


def _uploads(files: Sequence[File], uid: int | None) -> list[docker.ContainerUploadArgs]:
    return [
        docker.ContainerUploadArgs(
            file=f.path,
            content=f.content,
            permissions="0400" if f.secret else "0444",
            owner=str(uid) if f.secret and uid is not None else None,
        )
        for f in files
    ]


@dataclass
class DockerBackend:
    """Renders services as containers on one Docker network of the stack."""

    stack: str
    external_host: str = "127.0.0.1"
    host_port_base: int = 21000
    environment: str = "docker"
    clients_outside: bool = True
    #: Every container declared so far, in order: the stack's container model.
    plan: list[PlannedContainer] = field(default_factory=list)
    _ports: dict[tuple[str, int, int], int] = field(default_factory=dict)
    _network: docker.Network | None = None
    _images: dict[str, docker.RemoteImage] = field(default_factory=dict)
    _scope: pulumi.Resource | None = None
    _declared: dict[str, docker.Container] = field(default_factory=dict)
    _volumes: dict[str, docker.Volume] = field(default_factory=dict)

    # -- names ---------------------------------------------------------------
    def replica_host(self, service: str, ordinal: int) -> str:
        return replica_host(service, ordinal)

    def service_host(self, service: str) -> str:
        return service

    def external(self, service: str, ordinal: int, port: int) -> HostPort | None:
        key = (service, ordinal, port)
        if key not in self._ports:
            # Deterministic: the n-th published port of the program, from the base.
            self._ports[key] = self.host_port_base + len(self._ports)
        return HostPort(host=self.external_host, port=self._ports[key])

    def client_endpoint(self, service: str, ordinal: int, port: int) -> HostPort:
        # Clients of a Docker stack run on the Docker host: published ports.
        ext = self.external(service, ordinal, port)
        assert ext is not None
        return ext

    def backbone_metrics_target(self, port: int) -> str:
        return f"host.docker.internal:{port}"

    # -- shared resources -----------------------------------------------------
    def bind(self, scope: pulumi.Resource | None) -> None:
        """Create the stack's network under ``scope`` (the program's root component)."""
        self._scope = scope
        self._network = docker.Network(
            f"{self.stack}-net",
            name=f"backbone-{self.stack}",
            labels=[docker.NetworkLabelArgs(label="backbone.stack", value=self.stack)],
            opts=pulumi.ResourceOptions(parent=scope),
        )

    @property
    def network(self) -> docker.Network:
        if self._network is None:
            raise RuntimeError("DockerBackend.bind(scope) must run before rendering services")
        return self._network

    def _image(self, ref: str) -> pulumi.Output[str]:
        if ref not in self._images:
            self._images[ref] = docker.RemoteImage(
                f"{self.stack}-image-{ref.replace('/', '-').replace(':', '-')}",
                name=ref,
                keep_locally=True,
                opts=pulumi.ResourceOptions(parent=self._scope),
            )
        return self._images[ref].image_id

    def _volume(self, key: str, parent: pulumi.Resource) -> docker.Volume:
        if key not in self._volumes:
            self._volumes[key] = docker.Volume(
                f"{self.stack}-{key}",
                name=f"backbone-{self.stack}-{key}",
                opts=pulumi.ResourceOptions(parent=parent),
            )
        return self._volumes[key]

    # -- one planned container as a Pulumi resource ---------------------------
    def _declare(
        self,
        c: PlannedContainer,
        parent: pulumi.Resource,
        extra_deps: Sequence[pulumi.Resource] = (),
    ) -> docker.Container:
        volume = self._volume(c.volume, parent) if c.volume else None
        deps: list[pulumi.Resource] = [self._declared[k] for k in c.depends_on]
        shared = self._declared[c.shares_network_of] if c.shares_network_of else None
        if shared is not None:
            # Sidecars wait for their replica through network_mode; no explicit edge.
            deps = []
        networks = (
            [
                docker.ContainerNetworksAdvancedArgs(
                    name=self.network.name, aliases=list(c.aliases) or None
                )
            ]
            if c.aliases is not None
            else None
        )
        container = docker.Container(
            f"{self.stack}-{c.key}",
            name=c.name,
            hostname=c.hostname,
            image=self._image(c.image),
            entrypoints=list(c.entrypoint) if c.entrypoint else None,
            command=list(c.command) if c.command else None,
            envs=[f"{k}={v}" for k, v in c.env.items()] or None,
            uploads=_uploads(c.files, c.uid),
            user=c.user,
            volumes=(
                [
                    docker.ContainerVolumeArgs(
                        volume_name=volume.name, container_path=c.data_dir or "/data"
                    )
                ]
                if volume is not None
                else None
            ),
            networks_advanced=networks,
            network_mode=(
                shared.id.apply(lambda cid: f"container:{cid}") if shared is not None else None
            ),
            hosts=[docker.ContainerHostArgs(host=h, ip=ip) for h, ip in c.extra_hosts] or None,
            ports=[
                docker.ContainerPortArgs(internal=inner, external=outer, ip="127.0.0.1")
                for outer, inner in c.ports
            ]
            or None,
            healthcheck=_healthcheck(c.health),
            # Run once to completion: Pulumi waits for it (attach) and it is not restarted.
            must_run=False if c.run_once else None,
            attach=True if c.run_once else None,
            restart="no" if c.run_once else "unless-stopped",
            labels=[docker.ContainerLabelArgs(label=k, value=v) for k, v in c.labels.items()],
            memory=c.memory_mb,
            memory_reservation=c.memory_reservation_mb,
            cpus=c.cpus,
            opts=pulumi.ResourceOptions(parent=parent, depends_on=[*deps, *extra_deps] or None),
        )
        self.plan.append(c)
        self._declared[c.key] = container
        return container

    # -- primitives -------------------------------------------------------------
    def stateful_service(self, svc: StatefulService, parent: pulumi.Resource) -> RenderedService:
        made: list[pulumi.Resource] = []
        for c in plan_service(svc, stack=self.stack, external=self.external):
            fresh_volume = c.volume is not None and c.volume not in self._volumes
            container = self._declare(c, parent)
            if fresh_volume and c.volume is not None:
                made.append(self._volumes[c.volume])
            made.append(container)
        return RenderedService(resources=made)

    def init_job(
        self, job: InitJob, parent: pulumi.Resource, depends_on: Sequence[pulumi.Resource]
    ) -> pulumi.Resource:
        after = [k for k, res in self._declared.items() if any(res is d for d in depends_on)]
        others = [d for d in depends_on if not any(d is res for res in self._declared.values())]
        return self._declare(plan_job(job, stack=self.stack, after=after), parent, others)
