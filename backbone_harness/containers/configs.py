"""Service configs for containers: the one rendering of each file, with container arguments.

A container runs the same binaries as the local processes (the images pin the
same Debian packages), so it takes the same rendered config files: redis.conf,
server.properties, postgresql.conf and pg_hba.conf come from ``backbone_infra.render``
(the functions the local processes and the Pulumi targets use), with the port
the host publishes the service on. Only what differs between a host process
and a container is an argument here:

- a service listens on every interface of its container (published ports are
  forwarded to the container's address, not to its loopback), while what it
  *advertises* to clients stays the host's loopback and published port;
- paths point into the image (data under ``/data``);
- PostgreSQL admits password logins from the container network (the host's
  forwarded connections arrive from the network's gateway);
- TLS files (with ``spec.tls``, the default) are the stack's, mounted read-only
  at :data:`TLS_DIR` (:func:`service_tls`); PostgreSQL reads a 0600 copy of
  its key that it owns (:data:`POSTGRES_KEY`), as in the Pulumi containers;
- under Patroni (``ha``) the nodes reach each other and etcd by container name
  (``postgres-2:<port>``, ``etcd:2379``), which their certificates carry.

"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import PurePath

from backbone.connections import HostPort
from backbone_infra.render.certificates import TLSFiles, tls_files
from backbone_infra.render.kafka import KafkaNodePorts, render_server_properties
from backbone_infra.render.patroni import PatroniMember, patroni_config, patroni_yaml
from backbone_infra.render.postgres import pg_hba_conf
from backbone_infra.render.postgres import postgresql_conf as render_postgresql_conf
from backbone_infra.render.redis import redis_conf as render_redis_conf
from backbone_infra.render.redis import sentinel_conf as render_sentinel_conf
from backbone_infra.spec import StackSpec
from backbone_infra.targets.local.secrets import StackSecrets

__all__ = [
    "KAFKA_DATA",
    "POSTGRES_KEY",
    "REDIS_DATA",
    "TLS_DIR",
    "kafka_server_properties",
    "patroni_member",
    "patroni_yml",
    "postgres_hba",
    "postgresql_conf",
    "redis_conf",
    "sentinel_conf",
    "service_tls",
]

REDIS_DATA = "/data"
POSTGRES_DATA = "/var/lib/postgresql/data"
#: The image's PostgreSQL programs (Debian's postgresql-15, as locally).
POSTGRES_BIN = "/usr/lib/postgresql/15/bin"
#: Where Patroni writes the replication password for pg_basebackup/pg_rewind
#: (the postgres user's home, outside the data directory).
PATRONI_PGPASS = "/var/lib/postgresql/.pgpass.patroni"
KAFKA_DATA = "/var/lib/kafka/data"
_LOOPBACK = "127.0.0.1"
#: Where a container finds the stack's CA and its service's certificate and key
#: (the Pulumi containers' mount point too).
TLS_DIR = "/run/secrets/tls"
#: PostgreSQL refuses a key it does not own or others may read: its start
#: script copies the mounted key here, 0600 (see ``services.postgres_server``).
POSTGRES_KEY = "/var/lib/postgresql/tls/server.key"


def service_tls(spec: StackSpec, service: str) -> TLSFiles | None:
    """Where ``service``'s TLS files are mounted in its containers; ``None``
    when the stack runs without TLS (``--no-tls``)."""
    return tls_files(TLS_DIR, service) if spec.tls else None


def redis_conf(
    spec: StackSpec, secrets: StackSecrets, *, port: int, primary: HostPort | None = None
) -> str:
    """redis.conf of a server in a container, reached on host port ``port``.

    On ``ha`` the servers and Sentinels share one network namespace (see
    :func:`backbone_harness.containers.services.network_holder`), so the
    address they announce to each other, ``127.0.0.1:<port>``, is also the one
    a client on the host dials; ``primary`` is where a replica first syncs from.
    """
    return render_redis_conf(
        spec.redis,
        bind="* -::*",
        port=port,
        announce_host=_LOOPBACK,
        data_dir=REDIS_DATA,
        primary=primary,
        password=secrets.redis_password,
        admin_password=secrets.redis_admin_password,
        exporter_password=secrets.redis_exporter_password,
        tls=service_tls(spec, "redis"),
        consumer_password=secrets.redis_consumer_password,
        reader_password=secrets.redis_reader_password,
    )


def sentinel_conf(spec: StackSpec, secrets: StackSecrets, *, port: int, primary: HostPort) -> str:
    """sentinel.conf of a Sentinel in the Redis servers' network namespace
    (TLS with the servers' certificate, as locally)."""
    return render_sentinel_conf(
        spec.redis,
        bind="* -::*",
        port=port,
        announce_host=_LOOPBACK,
        data_dir=REDIS_DATA,
        primary=primary,
        password=secrets.sentinel_password,
        admin_password=secrets.redis_admin_password,
        tls=service_tls(spec, "redis"),
    )


def kafka_server_properties(
    spec: StackSpec,
    secrets: StackSecrets,
    *,
    ports: KafkaNodePorts,
    node: int = 1,
    cluster: Mapping[int, KafkaNodePorts] | None = None,
    external: HostPort | None = None,
) -> str:
    """server.properties of one KRaft node in a container.

    Listeners bind every interface. One node alone (``cluster`` None) publishes
    its client port at the same number, so the advertised ``127.0.0.1:<client>``
    is right for clients on the host. In a cluster the nodes reach each other by
    container name (``kafka-2:<internal>``, the voters at ``kafka-N:<controller>``)
    and clients on the host use the ``EXTERNAL`` listener, which advertises
    ``external``: 127.0.0.1 and the port the host publishes it on. With TLS
    every listener (``INTERNAL`` and ``CONTROLLER`` between brokers included)
    is ``SASL_SSL``, and brokers verify each other's host names.
    """
    every = dict(cluster) if cluster is not None else {node: ports}
    hosts = {n: f"kafka-{n}" for n in every} if cluster is not None else None
    return render_server_properties(
        spec.kafka,
        node=node,
        ports=every,
        data_dir=PurePath(KAFKA_DATA),
        client_password=secrets.kafka_password,
        admin_password=secrets.kafka_admin_password,
        hosts=hosts,
        bind_host="0.0.0.0",
        external=external,
        tls=service_tls(spec, "kafka"),
        extra_users=secrets.kafka_job_users(spec.kafka),
    )


def postgresql_conf(spec: StackSpec, secrets: StackSecrets, *, port: int) -> str:
    """The settings appended to ``postgresql.conf`` of a container's cluster
    (Debian's PostgreSQL, without TimescaleDB).

    Without ``synchronous_standby_names``: as the local provisioner does, the
    stack sets it with ``ALTER SYSTEM`` once a standby streams (before that, the
    bootstrap's own commits would wait for a standby that does not exist yet).
    """
    del secrets  # the settings carry none; kept for a uniform signature
    mounted = service_tls(spec, "postgres")
    tls = None if mounted is None else replace(mounted, key=POSTGRES_KEY)
    conf = render_postgresql_conf(
        spec.postgres, listen="*", timescaledb=False, synchronous=False, tls=tls
    )
    return conf + f"port = {port}\n"


def postgres_hba(spec: StackSpec, secrets: StackSecrets) -> str:
    """pg_hba.conf of a container's cluster: SCRAM logins from any address it is reached on."""
    del secrets
    return pg_hba_conf(spec.postgres, network="0.0.0.0/0", tls=spec.tls)


def patroni_member(name: str, *, port: int, rest_port: int) -> PatroniMember:
    """Node ``name`` of the compose ha stack: it listens on every interface of its
    container at the port the host publishes, and peers dial it by container name."""
    return PatroniMember(
        name=name,
        listen=f"0.0.0.0:{port}",
        connect_address=f"{name}:{port}",
        rest_listen=f"0.0.0.0:{rest_port}",
        rest_connect_address=f"{name}:{rest_port}",
        data_dir=POSTGRES_DATA,
        bin_dir=POSTGRES_BIN,
        pgpass=PATRONI_PGPASS,
    )


def patroni_yml(
    spec: StackSpec, secrets: StackSecrets, member: PatroniMember, *, etcd_hosts: list[str]
) -> str:
    """``patroni.yml`` of one node: the shared rendering (the local and Pulumi
    targets' too), with the container's places. With TLS the server reads its
    own 0600 key copy, ``pg_hba`` admits ``hostssl`` only, and Patroni's own
    connections (superuser, replication clones, pg_rewind) verify the peer's
    certificate and the container name they dialled (``verify-full``)."""
    mounted = service_tls(spec, "postgres")
    tls = None if mounted is None else replace(mounted, key=POSTGRES_KEY)
    config = patroni_config(
        spec.postgres,
        member,
        etcd_hosts=etcd_hosts,
        network="0.0.0.0/0",
        superuser_password=secrets.postgres_superuser_password,
        replication_password=secrets.replication_password,
        timescaledb=False,
        tls=tls,
        client_ssl=None if tls is None else {"sslmode": "verify-full", "sslrootcert": tls.ca},
    )
    return patroni_yaml(config)
