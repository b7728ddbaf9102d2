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
- TLS files are mounted under :data:`TLS_DIR` (PostgreSQL's key is copied
  into its data directory at start: it refuses a key others can read).

"""

from __future__ import annotations

from pathlib import PurePath

from backbone_infra.render.certificates import TLSFiles, tls_files
from backbone_infra.render.kafka import KafkaNodePorts, render_server_properties
from backbone_infra.render.postgres import pg_hba_conf
from backbone_infra.render.postgres import postgresql_conf as render_postgresql_conf
from backbone_infra.render.redis import redis_conf as render_redis_conf
from backbone_infra.spec import StackSpec
from backbone_infra.targets.local.secrets import StackSecrets

__all__ = [
    "KAFKA_DATA",
    "PG_DATA",
    "REDIS_DATA",
    "TLS_DIR",
    "container_tls",
    "kafka_server_properties",
    "postgres_hba",
    "postgresql_conf",
    "redis_conf",
]

REDIS_DATA = "/data"
KAFKA_DATA = "/var/lib/kafka/data"
PG_DATA = "/var/lib/postgresql/data"
_LOOPBACK = "127.0.0.1"
#: Where a container finds the stack's CA and its service's certificate and key.
TLS_DIR = "/etc/backbone/tls"


def container_tls(spec: StackSpec, service: str) -> TLSFiles | None:
    """The TLS files of ``service`` as its container sees them (``None`` without TLS)."""
    if not spec.tls:
        return None
    files = tls_files(TLS_DIR, service)
    if service == "postgres":
        # The start script copies the key here, 0600 and owned by postgres.
        return TLSFiles(ca=files.ca, cert=files.cert, key=f"{PG_DATA}/server.key",
                        keystore=files.keystore)  # fmt: skip
    return files


def redis_conf(spec: StackSpec, secrets: StackSecrets, *, port: int) -> str:
    """redis.conf of a standalone server in a container, reached on host port ``port``."""
    return render_redis_conf(
        spec.redis,
        bind="* -::*",
        port=port,
        announce_host=_LOOPBACK,
        data_dir=REDIS_DATA,
        primary=None,
        password=secrets.redis_password,
        admin_password=secrets.redis_admin_password,
        tls=container_tls(spec, "redis"),
    )


def kafka_server_properties(
    spec: StackSpec, secrets: StackSecrets, *, ports: KafkaNodePorts
) -> str:
    """server.properties of a one-node KRaft cluster in a container.

    Listeners bind every interface at the same port numbers the host publishes,
    so the advertised ``127.0.0.1:<client>`` is right for clients on the host.
    """
    return render_server_properties(
        spec.kafka,
        node=1,
        ports={1: ports},
        data_dir=PurePath(KAFKA_DATA),
        client_password=secrets.kafka_password,
        admin_password=secrets.kafka_admin_password,
        bind_host="0.0.0.0",
        tls=container_tls(spec, "kafka"),
    )


def postgresql_conf(spec: StackSpec, secrets: StackSecrets, *, port: int) -> str:
    """The settings appended to ``postgresql.conf`` of a container's cluster
    (Debian's PostgreSQL, without TimescaleDB)."""
    del secrets  # the settings carry none; kept for a uniform signature
    conf = render_postgresql_conf(
        spec.postgres, listen="*", timescaledb=False, tls=container_tls(spec, "postgres")
    )
    return conf + f"port = {port}\n"


def postgres_hba(spec: StackSpec, secrets: StackSecrets) -> str:
    """pg_hba.conf of a container's cluster: SCRAM logins from any address it is reached on."""
    del secrets
    return pg_hba_conf(spec.postgres, network="0.0.0.0/0", tls=spec.tls)
