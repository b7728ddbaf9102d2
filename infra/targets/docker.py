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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypedDict

import pulumi
import pulumi_docker as docker

from backbone.connections import HostPort
from infra.spec import Resources
from infra.targets.workload import (
    Container,
    File,
    InitJob,
    Probe,
    RenderedService,
    StatefulService,
    ordinals,
)

__all__ = ["DockerBackend", "memory_mb"]

_UNITS = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}


def memory_mb(quantity: str) -> int:
    """A Kubernetes memory quantity (``512Mi``, ``1Gi``) in MiB for Docker."""
    for suffix, factor in _UNITS.items():
        if quantity.endswith(suffix):
            return max(1, int(float(quantity[: -len(suffix)]) * factor))
    raise ValueError(f"memory {quantity!r} needs a Ki/Mi/Gi/Ti suffix (for example 512Mi)")


def _cpus(quantity: str) -> str:
    return str(int(quantity[:-1]) / 1000) if quantity.endswith("m") else quantity


def _healthcheck(container: Container) -> docker.ContainerHealthcheckArgs | None:
    probe: Probe = container.probe
    if probe.command is not None:
        tests = ["CMD", *probe.command]
    elif container.has_wget:
        url = f"http://127.0.0.1:{probe.http_port}{probe.http_path}"
        tests = ["CMD", "wget", "-q", "-O", "/dev/null", url]
    else:
        return None  # distroless exporter images have no tool to run a check with
    return docker.ContainerHealthcheckArgs(
        tests=tests,
        interval=f"{probe.period_s}s",
        timeout=f"{probe.timeout_s}s",
        retries=probe.failure_threshold,
        start_period=f"{probe.initial_delay_s}s",
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


class _Limits(TypedDict):
    memory: int
    memory_reservation: int
    cpus: str


def _limits(resources: Resources) -> _Limits:
    return {
        "memory": memory_mb(resources.memory_limit),
        "memory_reservation": memory_mb(resources.memory_request),
        "cpus": _cpus(resources.cpu_limit),
    }


@dataclass
class DockerBackend:
    """Renders services as containers on one Docker network of the stack."""

    stack: str
    external_host: str = "127.0.0.1"
    host_port_base: int = 21000
    environment: str = "docker"
    clients_outside: bool = True
    _ports: dict[tuple[str, int, int], int] = field(default_factory=dict)
    _network: docker.Network | None = None
    _images: dict[str, docker.RemoteImage] = field(default_factory=dict)
    _scope: pulumi.Resource | None = None

    # -- names ---------------------------------------------------------------
    def replica_host(self, service: str, ordinal: int) -> str:
        return f"{service}-{ordinal}"

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

    def _labels(self, service: str) -> list[docker.ContainerLabelArgs]:
        return [
            docker.ContainerLabelArgs(label="backbone.stack", value=self.stack),
            docker.ContainerLabelArgs(label="backbone.service", value=service),
        ]

    # -- primitives -------------------------------------------------------------
    def stateful_service(self, svc: StatefulService, parent: pulumi.Resource) -> RenderedService:
        made: list[pulumi.Resource] = []
        opts = pulumi.ResourceOptions(parent=parent)
        for ordinal in ordinals(svc.replicas):
            host = self.replica_host(svc.name, ordinal)
            volume = docker.Volume(
                f"{self.stack}-{host}-data",
                name=f"backbone-{self.stack}-{host}-data",
                opts=opts,
            )
            main = svc.main
            steps = [
                docker.Container(
                    f"{self.stack}-{host}-{step.name}",
                    name=f"backbone-{self.stack}-{host}-{step.name}",
                    image=self._image(step.image),
                    entrypoints=list(step.command),
                    user="0" if step.as_root else None,
                    volumes=[
                        docker.ContainerVolumeArgs(
                            volume_name=volume.name, container_path=main.data_dir or "/data"
                        )
                    ],
                    # Egress for the step (a download) needs a network; it runs once.
                    networks_advanced=[
                        docker.ContainerNetworksAdvancedArgs(name=self.network.name)
                    ],
                    must_run=False,
                    attach=True,
                    restart="no",
                    labels=self._labels(svc.name),
                    **_limits(step.resources),
                    opts=opts,
                )
                for step in svc.init
            ]
            ports = [
                docker.ContainerPortArgs(internal=port, external=ext.port, ip="127.0.0.1")
                for port in svc.published.values()
                if (ext := self.external(svc.name, ordinal, port)) is not None
            ]
            container = docker.Container(
                f"{self.stack}-{host}",
                name=f"backbone-{self.stack}-{host}",
                hostname=host,
                image=self._image(main.image),
                user=str(main.uid) if main.run_as_uid and main.uid is not None else None,
                entrypoints=list(main.command) if main.command else None,
                command=list(main.args) if main.args else None,
                envs=[f"{k}={v}" for k, v in main.env.items()] or None,
                uploads=_uploads(main.files, main.uid),
                volumes=[
                    docker.ContainerVolumeArgs(
                        volume_name=volume.name, container_path=main.data_dir or "/data"
                    )
                ],
                networks_advanced=[
                    docker.ContainerNetworksAdvancedArgs(
                        name=self.network.name, aliases=[host, self.service_host(svc.name)]
                    )
                ],
                hosts=[docker.ContainerHostArgs(host="host.docker.internal", ip="host-gateway")],
                ports=ports or None,
                healthcheck=_healthcheck(main),
                restart="unless-stopped",
                labels=self._labels(svc.name),
                **_limits(main.resources),
                opts=pulumi.ResourceOptions(parent=parent, depends_on=steps),
            )
            made += [volume, *steps, container]
            for sidecar in svc.containers[1:]:
                made.append(
                    docker.Container(
                        f"{self.stack}-{host}-{sidecar.name}",
                        name=f"backbone-{self.stack}-{host}-{sidecar.name}",
                        image=self._image(sidecar.image),
                        entrypoints=list(sidecar.command) if sidecar.command else None,
                        command=list(sidecar.args) if sidecar.args else None,
                        envs=[f"{k}={v}" for k, v in sidecar.env.items()] or None,
                        uploads=_uploads(sidecar.files, sidecar.uid),
                        # Share the replica's network namespace, as a pod's containers do.
                        network_mode=container.id.apply(lambda cid: f"container:{cid}"),
                        healthcheck=_healthcheck(sidecar),
                        restart="unless-stopped",
                        labels=self._labels(svc.name),
                        **_limits(sidecar.resources),
                        opts=opts,
                    )
                )
        return RenderedService(resources=made)

    def init_job(
        self, job: InitJob, parent: pulumi.Resource, depends_on: Sequence[pulumi.Resource]
    ) -> pulumi.Resource:
        return docker.Container(
            f"{self.stack}-{job.name}",
            name=f"backbone-{self.stack}-{job.name}",
            image=self._image(job.image),
            entrypoints=list(job.command),
            uploads=_uploads(job.files, job.uid),
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=self.network.name)],
            # Run once to completion: Pulumi waits for it (attach) and it is not restarted.
            must_run=False,
            attach=True,
            restart="no",
            labels=self._labels(job.name),
            **_limits(job.resources),
            opts=pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on)),
        )
