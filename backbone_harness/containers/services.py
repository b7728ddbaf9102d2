"""How one service runs in a container: image, explicit command, mounted files, ports.

A :class:`ServiceContainer` is plain data. The images carry no entrypoint
logic and read no environment variables: the command here runs the binary
(``redis-server``, ``java ... kafka.Kafka``, ``postgres``) on config files
rendered by :mod:`backbone_harness.containers.configs` and mounted read-only. Whatever
starts it (testcontainers in the tests, podman in a compose stack) only
materialises the files and publishes the ports on 127.0.0.1.

Ports are published at the same number inside and outside the container, so a
service that advertises its address (Kafka's listeners) advertises the one a
client on the host dials.

TLS material is not content: the stack issues it once into its ``tls/``
directory (keys 0600), and each container names the files it mounts from there
(:attr:`ServiceContainer.tls_files`, see :func:`tls_volumes`).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from backbone.connections import HostPort
from backbone_harness.containers import configs
from backbone_harness.containers.images import image_ref, kafka_home
from backbone_infra.render.certificates import CA_FILE
from backbone_infra.render.exporters import (
    redis_exporter_args,
    redis_exporter_passwords,
    redis_exporter_uri,
)
from backbone_infra.render.kafka import (
    EXTERNAL_LISTENER_PORT,
    STORAGE_TOOL_MAIN,
    KafkaNodePorts,
    jmx_exporter_rules,
    jvm_command,
    log4j_config,
    storage_format_args,
)
from backbone_infra.render.patroni import etcd_args
from backbone_infra.render.postgres import INITDB_ARGS  # the local environment's initdb flags
from backbone_infra.spec import StackSpec
from backbone_infra.targets.local.secrets import StackSecrets

__all__ = [
    "ETCD",
    "ServiceContainer",
    "etcd_server",
    "kafka_broker",
    "materialise",
    "network_holder",
    "patroni_node",
    "postgres_server",
    "postgres_standby",
    "redis_exporter",
    "redis_server",
    "sentinel",
    "tls_volumes",
]

_KAFKA_CONF = "/etc/kafka"
_KAFKA_LIBS = "/opt/kafka/libs"
_PG_CONF = "/etc/backbone/postgres"
_PG_DATA = configs.POSTGRES_DATA
_PATRONI_CONF = "/etc/backbone/patroni/patroni.yml"
#: The etcd container's name: Patroni's store on the compose ha stack.
ETCD = "etcd-1"
_REDIS_CONF = "/etc/redis/redis.conf"


@dataclass(frozen=True)
class ServiceContainer:
    """Everything needed to run one service replica in a container."""

    name: str
    image: str
    #: The full command (no image entrypoint is involved).
    command: tuple[str, ...]
    #: Container path -> content; mounted read-only. Some hold credentials.
    files: Mapping[str, str] = field(default_factory=dict)
    #: Ports published on 127.0.0.1: the same number inside and outside, or
    #: (host port, container port).
    ports: tuple[int | tuple[int, int], ...] = ()
    #: The node whose network namespace it joins (a sidecar, as in a pod);
    #: that node's container publishes this one's ports.
    shares_network_of: str | None = None
    #: The signal that stops it, when the image's default would be ignored.
    stop_signal: str | None = None
    #: Files of the stack's TLS directory it mounts at ``configs.TLS_DIR``
    #: (none without TLS); see :func:`tls_volumes`.
    tls_files: tuple[str, ...] = ()


def _tls_names(spec: StackSpec, service: str, *, keystore: bool = False) -> tuple[str, ...]:
    """The CA, and ``service``'s certificate and key (or Kafka's PEM keystore)."""
    if not spec.tls:
        return ()
    if keystore:
        return (CA_FILE, f"{service}-keystore.pem")
    return (CA_FILE, f"{service}.crt", f"{service}.key")


def _private(name: str) -> bool:
    return name.endswith((".key", "-keystore.pem"))


def tls_volumes(container: ServiceContainer, tls_dir: Path) -> list[tuple[str, str, str]]:
    """``(host path, container path, options)`` of each TLS file the container
    mounts from the stack's ``tls_dir``, read-only.

    A key stays 0600 on the host; podman's ``U`` option hands it to the
    image's service user (each service's key goes to that service's
    containers only, all of one image), who could not read it otherwise.
    """
    return [
        (str(tls_dir / name), f"{configs.TLS_DIR}/{name}", "ro,U" if _private(name) else "ro")
        for name in container.tls_files
    ]


def materialise(container: ServiceContainer, directory: Path) -> dict[str, str]:
    """Write the container's files under ``directory``; returns host path -> container path.

    ``directory`` is made 0700 (the files hold credentials); the files are
    0444 so the image's unprivileged service user can read them once mounted.
    """
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    mounts: dict[str, str] = {}
    for index, (target, content) in enumerate(sorted(container.files.items())):
        host = directory / f"{index:02d}-{Path(target).name}"
        host.write_text(content)
        os.chmod(host, 0o444)
        mounts[str(host)] = target
    return mounts


def network_holder(name: str, *, image: str, ports: tuple[int, ...]) -> ServiceContainer:
    """A container that only holds a network namespace (a pod's infra container).

    The Redis servers and Sentinels of ``ha`` join it, so they reach each other
    at ``127.0.0.1:<port>`` — the address they announce, which is also the one
    the host publishes — and a killed server takes nobody's network with it.
    """
    # As PID 1, sleep ignores SIGTERM: it would hold up every `down` for the stop timeout.
    return ServiceContainer(
        name=name, image=image, command=("sleep", "infinity"), ports=ports, stop_signal="SIGKILL"
    )


def redis_server(
    spec: StackSpec,
    secrets: StackSecrets,
    *,
    port: int,
    name: str = "redis-1",
    primary: HostPort | None = None,
    shares_network_of: str | None = None,
) -> ServiceContainer:
    """A Redis server: standalone (minimal), or a primary/replica in a shared namespace."""
    return ServiceContainer(
        name=name,
        image=image_ref("redis"),
        command=("redis-server", _REDIS_CONF),
        files={_REDIS_CONF: configs.redis_conf(spec, secrets, port=port, primary=primary)},
        ports=() if shares_network_of else (port,),
        shares_network_of=shares_network_of,
        tls_files=_tls_names(spec, "redis"),
    )


def sentinel(
    spec: StackSpec,
    secrets: StackSecrets,
    *,
    name: str,
    port: int,
    primary: HostPort,
    shares_network_of: str,
) -> ServiceContainer:
    """A Sentinel: it rewrites its config, so it runs on a writable copy made once."""
    conf = "/etc/redis/sentinel.conf"
    copy = f"{configs.REDIS_DATA}/sentinel.conf"
    return ServiceContainer(
        name=name,
        image=image_ref("redis"),
        command=(
            "sh",
            "-c",
            f"[ -f {copy} ] || install -m 600 {conf} {copy}; exec redis-sentinel {copy}",
        ),
        files={conf: configs.sentinel_conf(spec, secrets, port=port, primary=primary)},
        shares_network_of=shares_network_of,
        tls_files=_tls_names(spec, "redis"),
    )


def redis_exporter(
    spec: StackSpec, secrets: StackSecrets, *, redis_port: int, port: int
) -> ServiceContainer:
    """Debian's redis_exporter beside ``redis-1``, as the local environment runs it
    (the same arguments, rendered once): the read-only ``exporter`` ACL user, its
    password from a mounted JSON file keyed by the address it scrapes. With TLS
    it scrapes ``rediss://`` and verifies the server with the stack's CA."""
    uri = redis_exporter_uri("127.0.0.1", redis_port, tls=spec.tls)
    passfile = "/etc/redis-exporter/passwords.json"
    args = redis_exporter_args(
        spec.redis,
        redis_uri=uri,
        listen=f"0.0.0.0:{port}",
        password_file=passfile,
        sentinel=False,
        ca_file=f"{configs.TLS_DIR}/{CA_FILE}" if spec.tls else None,
    )
    return ServiceContainer(
        name="redis-1-exporter",
        image=image_ref("redis-exporter"),
        command=("prometheus-redis-exporter", *args),
        files={passfile: redis_exporter_passwords(uri, secrets.redis_exporter_password)},
        shares_network_of="redis-1",
        tls_files=(CA_FILE,) if spec.tls else (),
    )


def _argfile(args: list[str]) -> str:
    # java @argfile syntax: double quotes group, backslash escapes.
    quoted = ('"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"' for a in args)
    return "\n".join(quoted) + "\n"


def kafka_broker(
    spec: StackSpec,
    secrets: StackSecrets,
    *,
    ports: KafkaNodePorts,
    cluster_id: str,
    node: int = 1,
    cluster: dict[int, KafkaNodePorts] | None = None,
    external_port: int | None = None,
) -> ServiceContainer:
    """A KRaft broker+controller: formats its storage once, then runs the broker.

    Alone (minimal) it publishes its client port. In a cluster (``cluster``:
    every node's ports) it publishes its ``EXTERNAL`` listener on host port
    ``external_port``, which it advertises as ``127.0.0.1:<external_port>``.
    The storage-format arguments hold the SCRAM credentials, so they travel in
    a mounted ``java @argfile``, never on the command line.
    """
    props = f"{_KAFKA_CONF}/server.properties"
    fmt = storage_format_args(
        spec.kafka,
        config=Path(props),
        cluster_id=cluster_id,
        client_password=secrets.kafka_password,
        admin_password=secrets.kafka_admin_password,
        monitor_password=secrets.kafka_monitor_password,
        extra_users=secrets.kafka_job_users(spec.kafka),
    )
    assert fmt[0] == STORAGE_TOOL_MAIN
    host_libs = kafka_home() / "libs"
    run = jvm_command(
        libs=host_libs,
        config=Path(props),
        metrics_port=ports.metrics,
        exporter_config=Path(f"{_KAFKA_CONF}/jmx-exporter.yml"),
        log4j_config=Path(f"{_KAFKA_CONF}/log4j2.properties"),
    )
    # The same command line, with the image's jar folder and the metrics
    # endpoint on every interface of the container (so it can be published).
    run = [a.replace(str(host_libs), _KAFKA_LIBS).replace("=127.0.0.1:", "=0.0.0.0:") for a in run]
    fmt_cmd = ["java", "-Xmx256m", "-cp", f"{_KAFKA_LIBS}/*", f"@{_KAFKA_CONF}/format.args"]
    script = (
        f"[ -f {configs.KAFKA_DATA}/meta.properties ] || {shlex.join(fmt_cmd)} >/dev/null"
        f" && exec {shlex.join(run)}"
    )
    external = None if external_port is None else HostPort(host="127.0.0.1", port=external_port)
    published: tuple[int | tuple[int, int], ...] = (
        (ports.client, ports.metrics)
        if external_port is None
        else ((external_port, EXTERNAL_LISTENER_PORT), ports.metrics)
    )
    return ServiceContainer(
        name=f"kafka-{node}",
        image=image_ref("kafka"),
        command=("sh", "-c", script),
        files={
            props: configs.kafka_server_properties(
                spec, secrets, ports=ports, node=node, cluster=cluster, external=external
            ),
            f"{_KAFKA_CONF}/format.args": _argfile(fmt),
            f"{_KAFKA_CONF}/log4j2.properties": log4j_config(),
            f"{_KAFKA_CONF}/jmx-exporter.yml": jmx_exporter_rules(),
        },
        ports=published,
        tls_files=_tls_names(spec, "kafka", keystore=True),
    )


def postgres_server(spec: StackSpec, secrets: StackSecrets, *, port: int) -> ServiceContainer:
    """A PostgreSQL 15 primary: ``initdb`` once (superuser password from a mounted
    file), the rendered settings appended as the local environment does, then ``postgres``
    (with TLS on a 0600 copy of the mounted key, see :func:`_own_key`)."""
    pwfile = f"{_PG_CONF}/superuser-password"
    script = (
        _own_key(spec) + f"if [ ! -f {_PG_DATA}/PG_VERSION ]; then "
        f"initdb -D {_PG_DATA} {shlex.join(INITDB_ARGS)} --pwfile={pwfile} >/dev/null"
        f" && cat {_PG_CONF}/postgresql.conf >> {_PG_DATA}/postgresql.conf"
        f" && cp {_PG_CONF}/pg_hba.conf {_PG_DATA}/pg_hba.conf; fi"
        f" && exec postgres -D {_PG_DATA}"
    )
    return ServiceContainer(
        name="postgres-1",
        image=image_ref("postgres"),
        command=("sh", "-c", script),
        files={
            pwfile: secrets.postgres_superuser_password + "\n",
            f"{_PG_CONF}/postgresql.conf": configs.postgresql_conf(spec, secrets, port=port),
            f"{_PG_CONF}/pg_hba.conf": configs.postgres_hba(spec, secrets),
        },
        ports=(port,),
        tls_files=_tls_names(spec, "postgres"),
    )


def _own_key(spec: StackSpec) -> str:
    """Shell that copies the mounted key to one the postgres user owns, 0600
    (PostgreSQL refuses any other), at every start; empty without TLS."""
    if not spec.tls:
        return ""
    mounted = f"{configs.TLS_DIR}/postgres.key"
    home = str(Path(configs.POSTGRES_KEY).parent)
    return f"install -d -m 700 {home} && install -m 600 {mounted} {configs.POSTGRES_KEY} && "


def postgres_standby(
    spec: StackSpec, secrets: StackSecrets, *, name: str, port: int, primary: HostPort
) -> ServiceContainer:
    """A streaming standby: cloned once with ``pg_basebackup -R`` from ``primary``
    (reached by container name; the replication password from a mounted
    passfile), then ``postgres`` on the clone with its own port. With TLS the
    clone and the streaming connection (``-R`` keeps the conninfo) verify the
    primary's certificate and its name (``sslmode=verify-full``)."""
    passfile = f"{_PG_CONF}/replication.pgpass"
    p = spec.postgres
    ssl = (
        f"sslmode=verify-full sslrootcert={configs.TLS_DIR}/{CA_FILE}"
        if spec.tls
        else "sslmode=disable"
    )
    conninfo = (
        f"host={primary.host} port={primary.port} user={p.replication_user} "
        f"application_name={name} passfile=/tmp/pgpass {ssl}"
    )
    clone = [
        "pg_basebackup", "-d", conninfo, "-D", _PG_DATA, "-R", "-X", "stream",
        "--checkpoint=fast", "--no-sync",
    ]  # fmt: skip
    script = (
        _own_key(spec)
        # libpq refuses a passfile others may read: a 0600 copy of the mounted one.
        + f"install -m 600 {passfile} /tmp/pgpass"
        f" && if [ ! -f {_PG_DATA}/PG_VERSION ]; then chmod 700 {_PG_DATA}"
        f" && {shlex.join(clone)}; fi"
        # The clone carries the primary's port setting; its own comes first.
        f" && exec postgres -D {_PG_DATA} -p {port}"
    )
    return ServiceContainer(
        name=name,
        image=image_ref("postgres"),
        command=("sh", "-c", script),
        files={passfile: f"*:*:*:{p.replication_user}:{secrets.replication_password}\n"},
        ports=(port,),
        tls_files=_tls_names(spec, "postgres"),
    )


def etcd_server(spec: StackSpec) -> ServiceContainer:
    """A one-member etcd for Patroni (:func:`~backbone_infra.render.patroni.etcd_args`,
    as locally), reached by container name on the stack network; it publishes
    nothing (only the Patroni nodes use it)."""
    patroni = spec.postgres.patroni
    if patroni is None:
        raise ValueError("etcd is Patroni's store; this PostgreSQL spec runs no Patroni")
    client, peer = patroni.etcd_client_port, patroni.etcd_peer_port
    args = etcd_args(
        ETCD,
        data_dir="/var/lib/etcd/data",
        client_url=f"http://{ETCD}:{client}",
        peer_url=f"http://{ETCD}:{peer}",
        listen_client_url=f"http://0.0.0.0:{client}",
        listen_peer_url=f"http://0.0.0.0:{peer}",
    )
    return ServiceContainer(name=ETCD, image=image_ref("etcd"), command=("etcd", *args))


def patroni_node(
    spec: StackSpec, secrets: StackSecrets, *, name: str, port: int, rest_port: int
) -> ServiceContainer:
    """A PostgreSQL node under Patroni (the ``patroni`` image): Patroni is the
    container's main process and runs postgres itself (``initdb`` on the node
    that wins the leader key, a clone of the leader on the others, pg_rewind
    when a former primary rejoins). It publishes the PostgreSQL port and its
    REST API (roles, switchover) at the same numbers inside and out."""
    patroni = spec.postgres.patroni
    if patroni is None:
        raise ValueError("this PostgreSQL spec runs no Patroni; use postgres_server")
    member = configs.patroni_member(name, port=port, rest_port=rest_port)
    yml = configs.patroni_yml(
        spec, secrets, member, etcd_hosts=[f"{ETCD}:{patroni.etcd_client_port}"]
    )
    # PostgreSQL refuses a data directory others may enter (the image's is 0755).
    script = _own_key(spec) + f"chmod 700 {_PG_DATA} && exec patroni {_PATRONI_CONF}"
    return ServiceContainer(
        name=name,
        image=image_ref("patroni"),
        command=("sh", "-c", script),
        files={_PATRONI_CONF: yml},
        ports=(port, rest_port),
        tls_files=_tls_names(spec, "postgres"),
    )
