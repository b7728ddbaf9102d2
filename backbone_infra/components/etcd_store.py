"""The etcd Patroni keeps its leader key in, on the Docker and Kubernetes targets.

Rendered only for a spec whose PostgreSQL runs under Patroni (the ``ha``
size), as the local environment does (:mod:`backbone_infra.targets.local.etcd`),
and from the same command line (:func:`~backbone_infra.render.patroni.etcd_args`).

One member, as locally: a lost etcd stops failover (Patroni keeps the primary
running while it cannot reach its store, and promotes no one), it loses no
data. Three members on three machines would survive one; that is a change of
:data:`ETCD_MEMBERS` plus ``--initial-cluster`` listing them.

Kubernetes offers Patroni a store of its own (its API server, ``kubernetes:``
in ``patroni.yml``); etcd is used there too, so one ``patroni.yml`` rendering
serves every target (docs/storage.md).

etcd serves plain HTTP on the stack network, as locally: only the PostgreSQL
pods are its peers (Kubernetes network policy); its data is the cluster's
membership and leader key, no application data and no password.
"""

from __future__ import annotations

from backbone_infra.render.patroni import etcd_args
from backbone_infra.spec import PatroniSpec, Resources, StackSpec
from backbone_infra.targets.workload import (
    FIRST_ORDINAL,
    Backend,
    Container,
    Probe,
    StatefulService,
    ordinals,
)

__all__ = ["ETCD_MEMBERS", "ETCD_SERVICE", "etcd_hosts", "etcd_service"]

ETCD_SERVICE = "etcd"
#: Members of the store (see the module doc for why one).
ETCD_MEMBERS = 1
#: The image's etcd user and group (``images/etcd/Containerfile``).
ETCD_UID = 2379
#: The volume; etcd's data directory is a folder in it, which etcd creates
#: 0700 itself (it refuses a group-readable one, as a volume root may be).
DATA_MOUNT = "/var/lib/etcd/data"
#: Scrape job name of etcd's own ``/metrics`` (on the client port). Not scraped
#: yet: the monitoring stack gets only the services the local one scrapes.
METRICS_JOB = "etcd"
RESOURCES = Resources(
    cpu_request="100m", cpu_limit="500m", memory_request="64Mi", memory_limit="256Mi", storage="1Gi"
)


def _patroni(spec: StackSpec) -> PatroniSpec:
    if spec.postgres.patroni is None:
        raise ValueError(
            "etcd is rendered only for PostgreSQL under Patroni (spec.postgres.patroni)"
        )
    return spec.postgres.patroni


def etcd_hosts(spec: StackSpec, backend: Backend) -> list[str]:
    """``host:port`` of every member, as ``patroni.yml``'s ``etcd3.hosts`` lists them."""
    port = _patroni(spec).etcd_client_port
    return [f"{backend.replica_host(ETCD_SERVICE, i)}:{port}" for i in ordinals(ETCD_MEMBERS)]


def etcd_service(spec: StackSpec, backend: Backend, *, client: str) -> StatefulService:
    """The store as a stateful service the backends render like any other;
    ``client``: the service whose Patroni uses it (its only peer)."""
    patroni = _patroni(spec)
    port, peer = patroni.etcd_client_port, patroni.etcd_peer_port
    host = backend.replica_host(ETCD_SERVICE, FIRST_ORDINAL)
    args = etcd_args(
        # The local member's name too: one numbering in every environment.
        f"{ETCD_SERVICE}-{FIRST_ORDINAL}",
        data_dir=f"{DATA_MOUNT}/etcd",
        client_url=f"http://{host}:{port}",
        peer_url=f"http://{host}:{peer}",
        listen_client_url=f"http://0.0.0.0:{port}",
        listen_peer_url=f"http://0.0.0.0:{peer}",
    )
    return StatefulService(
        name=ETCD_SERVICE,
        replicas=ETCD_MEMBERS,
        client_ports={"client": port},
        metrics_port=port,
        metrics_job=METRICS_JOB,
        storage=RESOURCES.storage,
        # Patroni on the PostgreSQL replicas is etcd's only client.
        peers=(client,),
        fs_group=ETCD_UID,
        containers=(
            Container(
                name="etcd",
                image=spec.images.etcd,
                ports={"client": port, "peer": peer},
                command=("etcd",),
                args=tuple(args),
                probe=Probe(http_port=port, http_path="/health", initial_delay_s=5),
                resources=RESOURCES,
                data_dir=DATA_MOUNT,
                has_wget=True,
                uid=ETCD_UID,
            ),
        ),
    )
