"""Kubernetes target: the workload vocabulary rendered with pulumi-kubernetes.

Per stack a Namespace and a default-deny ingress NetworkPolicy. Per service a
ConfigMap (plain files only), a Secret (credential files), a headless Service
(stable replica DNS, published before readiness so a KRaft quorum or a
Sentinel group can form), a client Service, a StatefulSet with a PVC per
replica, requests/limits and liveness/readiness probes on every container, a
PodDisruptionBudget, and a NetworkPolicy that admits only peers, pods labelled
``backbone.io/client=true`` on the client ports, and Prometheus on the
exporter port. With ``externalHost`` set, published ports get one NodePort
Service per replica.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from backbone.connections import HostPort
from backbone_infra.targets.workload import (
    FIRST_ORDINAL,
    Container,
    File,
    InitJob,
    InitStep,
    Probe,
    RenderedService,
    StatefulService,
    ordinals,
)

__all__ = ["CLIENT_LABEL", "KubernetesBackend"]

#: Label a pod carries to be admitted to the services' client ports.
CLIENT_LABEL = "backbone.io/client"
PROMETHEUS = "prometheus"

core = k8s.core.v1
meta = k8s.meta.v1


def _key(path: str) -> str:
    return re.sub(r"[^-._a-zA-Z0-9]", "_", path.strip("/"))


def _volumes_for(
    files: Sequence[File], prefix: str, config_map: str, secret: str
) -> tuple[list[core.VolumeArgs], list[core.VolumeMountArgs]]:
    """One volume per (directory, secret?) holding just that directory's files."""
    groups: dict[tuple[str, bool], list[File]] = {}
    for f in files:
        groups.setdefault((f.directory, f.secret), []).append(f)
    volumes, mounts = [], []
    for n, ((directory, is_secret), group) in enumerate(sorted(groups.items())):
        vname = f"{prefix}-{'s' if is_secret else 'c'}{n}"
        items = [core.KeyToPathArgs(key=_key(f.path), path=f.name) for f in group]
        if is_secret:
            volume = core.VolumeArgs(
                name=vname,
                secret=core.SecretVolumeSourceArgs(
                    secret_name=secret, items=items, default_mode=0o440
                ),
            )
        else:
            volume = core.VolumeArgs(
                name=vname,
                config_map=core.ConfigMapVolumeSourceArgs(
                    name=config_map, items=items, default_mode=0o444
                ),
            )
        volumes.append(volume)
        mounts.append(core.VolumeMountArgs(name=vname, mount_path=directory, read_only=True))
    return volumes, mounts


def _probe(probe: Probe, *, readiness: bool) -> core.ProbeArgs:
    exec_: core.ExecActionArgs | None = None
    http_get: core.HTTPGetActionArgs | None = None
    if probe.command is not None:
        exec_ = core.ExecActionArgs(command=list(probe.command))
    else:
        assert probe.http_port is not None  # a Probe has exactly one of the two
        http_get = core.HTTPGetActionArgs(path=probe.http_path, port=probe.http_port)
    return core.ProbeArgs(
        initial_delay_seconds=5 if readiness else probe.initial_delay_s,
        period_seconds=5 if readiness else probe.period_s,
        timeout_seconds=probe.timeout_s,
        failure_threshold=probe.failure_threshold,
        exec_=exec_,
        http_get=http_get,
    )


def _resources(c: Container | InitJob | InitStep) -> core.ResourceRequirementsArgs:
    r = c.resources
    return core.ResourceRequirementsArgs(
        requests={"cpu": r.cpu_request, "memory": r.memory_request},
        limits={"cpu": r.cpu_limit, "memory": r.memory_limit},
    )


@dataclass
class KubernetesBackend:
    """Renders services as StatefulSets (Deployments when stateless) in the stack's namespace."""

    stack: str
    namespace: str
    external_host: str | None = None
    node_port_base: int = 31000
    storage_class: str | None = None
    cluster_domain: str = "cluster.local"
    environment: str = "kubernetes"
    clients_outside: bool = False
    _node_ports: dict[tuple[str, int, int], int] = field(default_factory=dict)
    _ns: k8s.core.v1.Namespace | None = None

    # -- names ---------------------------------------------------------------
    def replica_host(self, service: str, ordinal: int) -> str:
        return f"{service}-{ordinal}.{service}-headless.{self.namespace}.svc.{self.cluster_domain}"

    def service_host(self, service: str) -> str:
        return f"{service}.{self.namespace}.svc.{self.cluster_domain}"

    def external(self, service: str, ordinal: int, port: int) -> HostPort | None:
        if self.external_host is None:
            return None
        key = (service, ordinal, port)
        if key not in self._node_ports:
            self._node_ports[key] = self.node_port_base + len(self._node_ports)
        return HostPort(host=self.external_host, port=self._node_ports[key])

    def client_endpoint(self, service: str, ordinal: int, port: int) -> HostPort:
        # Clients of a Kubernetes stack run in the cluster (pods labelled as clients).
        return HostPort(host=self.replica_host(service, ordinal), port=port)

    def backbone_metrics_target(self, port: int) -> str:
        return f"backbone-ingest.{self.namespace}.svc.{self.cluster_domain}:{port}"

    # -- shared resources -----------------------------------------------------
    def bind(self, scope: pulumi.Resource | None) -> None:
        """Create the Namespace and its default-deny ingress policy under ``scope``."""
        self._ns = core.Namespace(
            f"{self.stack}-namespace",
            metadata=meta.ObjectMetaArgs(name=self.namespace, labels=self._labels("namespace")),
            opts=pulumi.ResourceOptions(parent=scope),
        )
        k8s.networking.v1.NetworkPolicy(
            f"{self.stack}-default-deny",
            metadata=self._meta("default-deny-ingress", "namespace"),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=meta.LabelSelectorArgs(), policy_types=["Ingress"]
            ),
            opts=pulumi.ResourceOptions(parent=scope, depends_on=[self._ns]),
        )

    def _labels(self, name: str) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": name,
            "app.kubernetes.io/part-of": "backbone",
            "app.kubernetes.io/instance": self.stack,
        }

    def _selector(self, name: str) -> dict[str, str]:
        return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": self.stack}

    def _meta(self, name: str, app: str) -> meta.ObjectMetaArgs:
        return meta.ObjectMetaArgs(name=name, namespace=self.namespace, labels=self._labels(app))

    def _opts(self, parent: pulumi.Resource, *deps: pulumi.Resource) -> pulumi.ResourceOptions:
        depends = [d for d in (self._ns, *deps) if d is not None]
        return pulumi.ResourceOptions(parent=parent, depends_on=depends)

    def _files(
        self, name: str, app: str, files: Sequence[File], parent: pulumi.Resource
    ) -> list[pulumi.Resource]:
        plain = {_key(f.path): f.content for f in files if not f.secret}
        secret = {_key(f.path): f.content for f in files if f.secret}
        made: list[pulumi.Resource] = [
            core.ConfigMap(
                f"{self.stack}-{name}-config",
                metadata=self._meta(f"{name}-config", app),
                data=plain,
                opts=self._opts(parent),
            )
        ]
        if secret:
            made.append(
                core.Secret(
                    f"{self.stack}-{name}-secrets",
                    metadata=self._meta(f"{name}-secrets", app),
                    type="Opaque",
                    string_data=secret,
                    opts=self._opts(parent),
                )
            )
        return made

    # -- primitives -------------------------------------------------------------
    def _container(
        self, c: Container, n: int, config_map: str, secret: str
    ) -> tuple[core.ContainerArgs, list[core.VolumeArgs]]:
        volumes, mounts = _volumes_for(c.files, f"f{n}", config_map, secret)
        if c.data_dir:
            mounts.append(core.VolumeMountArgs(name="data", mount_path=c.data_dir))
        args = core.ContainerArgs(
            name=c.name,
            image=c.image,
            image_pull_policy="IfNotPresent",
            command=list(c.command) if c.command else None,
            args=list(c.args) if c.args else None,
            env=[core.EnvVarArgs(name=k, value=v) for k, v in c.env.items()] or None,
            ports=[
                core.ContainerPortArgs(name=pname[:15], container_port=port)
                for pname, port in c.ports.items()
            ],
            resources=_resources(c),
            liveness_probe=_probe(c.probe, readiness=False),
            readiness_probe=_probe(c.probe.readiness or c.probe, readiness=True),
            volume_mounts=mounts or None,
            security_context=core.SecurityContextArgs(run_as_user=c.uid, run_as_non_root=True)
            if c.run_as_uid and c.uid is not None
            else None,
        )
        return args, volumes

    def stateful_service(self, svc: StatefulService, parent: pulumi.Resource) -> RenderedService:
        name, selector = svc.name, self._selector(svc.name)
        made = self._files(name, name, [f for c in svc.containers for f in c.files], parent)
        containers, volumes = [], []
        for n, c in enumerate(svc.containers):
            args, vols = self._container(c, n, f"{name}-config", f"{name}-secrets")
            containers.append(args)
            volumes += vols
        ports = {**svc.client_ports, "metrics": svc.metrics_port}
        service_ports = [
            core.ServicePortArgs(name=pname[:15], port=port, target_port=port)
            for pname, port in ports.items()
        ]
        made.append(
            core.Service(
                f"{self.stack}-{name}-headless",
                metadata=self._meta(f"{name}-headless", name),
                spec=core.ServiceSpecArgs(
                    cluster_ip="None",
                    publish_not_ready_addresses=True,
                    selector=selector,
                    ports=service_ports,
                ),
                opts=self._opts(parent),
            )
        )
        made.append(
            core.Service(
                f"{self.stack}-{name}",
                metadata=self._meta(name, name),
                spec=core.ServiceSpecArgs(type="ClusterIP", selector=selector, ports=service_ports),
                opts=self._opts(parent),
            )
        )
        if svc.stateless:
            made.append(self._deployment(svc, containers, volumes, parent, made))
        else:
            made.append(self._stateful_set(svc, containers, volumes, parent, made))
        made.append(
            k8s.policy.v1.PodDisruptionBudget(
                f"{self.stack}-{name}-pdb",
                metadata=self._meta(f"{name}-pdb", name),
                spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                    max_unavailable=1, selector=meta.LabelSelectorArgs(match_labels=selector)
                ),
                opts=self._opts(parent),
            )
        )
        made.append(self._network_policy(svc, parent))
        made += self._node_port_services(svc, parent)
        return RenderedService(resources=made)

    def _stateful_set(
        self,
        svc: StatefulService,
        containers: list[core.ContainerArgs],
        volumes: list[core.VolumeArgs],
        parent: pulumi.Resource,
        made: list[pulumi.Resource],
    ) -> pulumi.Resource:
        name, labels, selector = svc.name, self._labels(svc.name), self._selector(svc.name)
        return k8s.apps.v1.StatefulSet(
            f"{self.stack}-{name}",
            metadata=self._meta(name, name),
            spec=k8s.apps.v1.StatefulSetSpecArgs(
                service_name=f"{name}-headless",
                replicas=svc.replicas,
                # Pods are named from 1 (``redis-1``), like every other target
                # (StatefulSet start ordinal, GA since Kubernetes 1.31).
                ordinals=k8s.apps.v1.StatefulSetOrdinalsArgs(start=FIRST_ORDINAL),
                # Every replica starts at once: a quorum cannot form one pod at a time.
                pod_management_policy="Parallel",
                selector=meta.LabelSelectorArgs(match_labels=selector),
                template=core.PodTemplateSpecArgs(
                    metadata=meta.ObjectMetaArgs(
                        labels={**labels, CLIENT_LABEL: "true"} if svc.client else labels
                    ),
                    spec=core.PodSpecArgs(
                        init_containers=[
                            core.ContainerArgs(
                                name=step.name,
                                image=step.image,
                                image_pull_policy="IfNotPresent",
                                command=list(step.command),
                                resources=_resources(step),
                                security_context=core.SecurityContextArgs(run_as_user=0)
                                if step.as_root
                                else None,
                                volume_mounts=[
                                    core.VolumeMountArgs(
                                        name="data", mount_path=svc.main.data_dir or "/data"
                                    )
                                ],
                            )
                            for step in svc.init
                        ]
                        or None,
                        containers=containers,
                        volumes=volumes or None,
                        security_context=core.PodSecurityContextArgs(fs_group=svc.fs_group)
                        if svc.fs_group is not None
                        else None,
                        termination_grace_period_seconds=30,
                    ),
                ),
                volume_claim_templates=[
                    core.PersistentVolumeClaimArgs(
                        metadata=meta.ObjectMetaArgs(name="data", labels=labels),
                        spec=core.PersistentVolumeClaimSpecArgs(
                            access_modes=["ReadWriteOnce"],
                            storage_class_name=self.storage_class,
                            resources=core.VolumeResourceRequirementsArgs(
                                requests={"storage": svc.storage}
                            ),
                        ),
                    )
                ],
            ),
            opts=self._opts(parent, *made),
        )

    def _deployment(
        self,
        svc: StatefulService,
        containers: list[core.ContainerArgs],
        volumes: list[core.VolumeArgs],
        parent: pulumi.Resource,
        made: list[pulumi.Resource],
    ) -> pulumi.Resource:
        name, labels, selector = svc.name, self._labels(svc.name), self._selector(svc.name)
        if svc.client:
            labels = {**labels, CLIENT_LABEL: "true"}
        scratch = core.VolumeArgs(name="data", empty_dir=core.EmptyDirVolumeSourceArgs())
        return k8s.apps.v1.Deployment(
            f"{self.stack}-{name}",
            metadata=self._meta(name, name),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=svc.replicas,
                selector=meta.LabelSelectorArgs(match_labels=selector),
                template=core.PodTemplateSpecArgs(
                    metadata=meta.ObjectMetaArgs(labels=labels),
                    spec=core.PodSpecArgs(
                        containers=containers,
                        volumes=[*volumes, scratch],
                        security_context=core.PodSecurityContextArgs(fs_group=svc.fs_group)
                        if svc.fs_group is not None
                        else None,
                        termination_grace_period_seconds=30,
                    ),
                ),
            ),
            opts=self._opts(parent, *made),
        )

    def _network_policy(self, svc: StatefulService, parent: pulumi.Resource) -> pulumi.Resource:
        np = k8s.networking.v1

        def from_app(app: str) -> np.NetworkPolicyPeerArgs:
            return np.NetworkPolicyPeerArgs(
                pod_selector=meta.LabelSelectorArgs(match_labels=self._selector(app))
            )

        def on(ports: Sequence[int]) -> list[np.NetworkPolicyPortArgs]:
            return [np.NetworkPolicyPortArgs(port=p, protocol="TCP") for p in ports]

        rules = [
            # Peers (replicas of this service, its sidecars' partners, init jobs): every port.
            np.NetworkPolicyIngressRuleArgs(from_=[from_app(a) for a in (svc.name, *svc.peers)]),
            np.NetworkPolicyIngressRuleArgs(
                from_=[
                    np.NetworkPolicyPeerArgs(
                        pod_selector=meta.LabelSelectorArgs(match_labels={CLIENT_LABEL: "true"}),
                        namespace_selector=meta.LabelSelectorArgs(),
                    )
                ],
                ports=on(sorted(set(svc.client_ports.values()))),
            ),
            np.NetworkPolicyIngressRuleArgs(
                from_=[from_app(PROMETHEUS)], ports=on([svc.metrics_port])
            ),
        ]
        if self.external_host is not None and svc.published:
            rules.append(np.NetworkPolicyIngressRuleArgs(ports=on(list(svc.published.values()))))
        return np.NetworkPolicy(
            f"{self.stack}-{svc.name}-ingress",
            metadata=self._meta(f"{svc.name}-ingress", svc.name),
            spec=np.NetworkPolicySpecArgs(
                pod_selector=meta.LabelSelectorArgs(match_labels=self._selector(svc.name)),
                policy_types=["Ingress"],
                ingress=rules,
            ),
            opts=self._opts(parent),
        )

    def _node_port_services(
        self, svc: StatefulService, parent: pulumi.Resource
    ) -> list[pulumi.Resource]:
        made: list[pulumi.Resource] = []
        for ordinal in ordinals(svc.replicas):
            ports = [
                core.ServicePortArgs(
                    name=pname[:15], port=port, target_port=port, node_port=ext.port
                )
                for pname, port in svc.published.items()
                if (ext := self.external(svc.name, ordinal, port)) is not None
            ]
            if not ports:
                continue
            pod = f"{svc.name}-{ordinal}"
            made.append(
                core.Service(
                    f"{self.stack}-{pod}-external",
                    metadata=self._meta(f"{pod}-external", svc.name),
                    spec=core.ServiceSpecArgs(
                        type="NodePort",
                        selector={"statefulset.kubernetes.io/pod-name": pod},
                        ports=ports,
                    ),
                    opts=self._opts(parent),
                )
            )
        return made

    def init_job(
        self, job: InitJob, parent: pulumi.Resource, depends_on: Sequence[pulumi.Resource]
    ) -> pulumi.Resource:
        made = self._files(job.name, job.name, job.files, parent)
        volumes, mounts = _volumes_for(job.files, "f0", f"{job.name}-config", f"{job.name}-secrets")
        return k8s.batch.v1.Job(
            f"{self.stack}-{job.name}",
            metadata=self._meta(job.name, job.name),
            spec=k8s.batch.v1.JobSpecArgs(
                backoff_limit=20,
                template=core.PodTemplateSpecArgs(
                    metadata=meta.ObjectMetaArgs(labels=self._labels(job.name)),
                    spec=core.PodSpecArgs(
                        restart_policy="OnFailure",
                        security_context=core.PodSecurityContextArgs(fs_group=job.uid)
                        if job.uid is not None
                        else None,
                        containers=[
                            core.ContainerArgs(
                                name=job.name,
                                image=job.image,
                                image_pull_policy="IfNotPresent",
                                command=list(job.command),
                                resources=_resources(job),
                                volume_mounts=mounts or None,
                            )
                        ],
                        volumes=volumes or None,
                    ),
                ),
            ),
            opts=self._opts(parent, *made, *depends_on),
        )
