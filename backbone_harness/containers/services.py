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
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from backbone_harness.containers import configs
from backbone_harness.containers.images import image_ref, kafka_home
from backbone_infra.render.certificates import CA_FILE
from backbone_infra.render.exporters import redis_exporter_args, redis_exporter_uri
from backbone_infra.render.kafka import (
    STORAGE_TOOL_MAIN,
    KafkaNodePorts,
    jmx_exporter_rules,
    jvm_command,
    log4j_config,
    storage_format_args,
)
from backbone_infra.render.postgres import INITDB_ARGS  # the local environment's initdb flags
from backbone_infra.spec import StackSpec
from backbone_infra.targets.local.secrets import StackSecrets

__all__ = [
    "ServiceContainer",
    "kafka_broker",
    "materialise",
    "postgres_server",
    "redis_exporter",
    "redis_server",
    "tls_mounts",
]

_KAFKA_CONF = "/etc/kafka"
_KAFKA_LIBS = "/opt/kafka/libs"
_PG_CONF = "/etc/backbone/postgres"
_PG_DATA = configs.PG_DATA
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
    #: Ports published on 127.0.0.1, the same number inside and outside.
    ports: tuple[int, ...] = ()
    #: The node whose network namespace it joins (a sidecar, as in a pod);
    #: that node's container publishes this one's ports.
    shares_network_of: str | None = None


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


def tls_mounts(certs: Path | None, service: str) -> dict[str, str]:
    """The stack's CA and ``service``'s certificate, key and keystore from the
    stack's ``tls/`` directory ``certs``, mounted at :data:`configs.TLS_DIR`
    (nothing without TLS)."""
    if certs is None:
        return {}
    names = (CA_FILE, f"{service}.crt", f"{service}.key", f"{service}-keystore.pem")
    return {f"{configs.TLS_DIR}/{n}": (certs / n).read_text() for n in names}


def redis_server(
    spec: StackSpec, secrets: StackSecrets, *, port: int, certs: Path | None = None
) -> ServiceContainer:
    """A standalone Redis server (the minimal size's cache); ``certs``: the
    stack's TLS directory (TLS on its port when given)."""
    return ServiceContainer(
        name="redis-1",
        image=image_ref("redis"),
        command=("redis-server", _REDIS_CONF),
        files={
            _REDIS_CONF: configs.redis_conf(spec, secrets, port=port),
            **tls_mounts(certs, "redis"),
        },
        ports=(port,),
    )


def redis_exporter(
    spec: StackSpec,
    secrets: StackSecrets,
    *,
    redis_port: int,
    port: int,
    certs: Path | None = None,
) -> ServiceContainer:
    """Debian's redis_exporter beside ``redis-1``, as the local environment runs it
    (the same rendered arguments): the password from a mounted JSON file keyed
    by the address it scrapes, the server verified with the stack's CA."""
    uri = redis_exporter_uri("127.0.0.1", redis_port, tls=certs is not None)
    passfile = "/etc/redis-exporter/passwords.json"
    ca = f"{configs.TLS_DIR}/{CA_FILE}"
    return ServiceContainer(
        name="redis-1-exporter",
        image=image_ref("redis-exporter"),
        command=(
            "prometheus-redis-exporter",
            *redis_exporter_args(
                spec.redis,
                redis_uri=uri,
                listen=f"0.0.0.0:{port}",
                password_file=passfile,
                sentinel=False,
                ca_file=ca if certs is not None else None,
            ),
        ),
        files={
            passfile: json.dumps({uri: secrets.redis_password}),
            **({ca: (certs / CA_FILE).read_text()} if certs is not None else {}),
        },
        shares_network_of="redis-1",
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
    certs: Path | None = None,
) -> ServiceContainer:
    """A one-node KRaft broker+controller: formats its storage once, then runs the broker.

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
    return ServiceContainer(
        name="kafka-1",
        image=image_ref("kafka"),
        command=("sh", "-c", script),
        files={
            props: configs.kafka_server_properties(spec, secrets, ports=ports),
            f"{_KAFKA_CONF}/format.args": _argfile(fmt),
            f"{_KAFKA_CONF}/log4j2.properties": log4j_config(),
            f"{_KAFKA_CONF}/jmx-exporter.yml": jmx_exporter_rules(),
            **tls_mounts(certs, "kafka"),
        },
        ports=(ports.client, ports.metrics),
    )


def postgres_server(
    spec: StackSpec, secrets: StackSecrets, *, port: int, certs: Path | None = None
) -> ServiceContainer:
    """A PostgreSQL 15 primary: ``initdb`` once (superuser password from a mounted
    file), the rendered settings appended as the local environment does, then ``postgres``.
    With TLS, the mounted key is copied into the data directory 0600 at each
    start (PostgreSQL refuses a key file others can read)."""
    pwfile = f"{_PG_CONF}/superuser-password"
    tls = configs.container_tls(spec, "postgres") if certs is not None else None
    key = f" && install -m 0600 {configs.TLS_DIR}/postgres.key {tls.key}" if tls else ""
    script = (
        f"if [ ! -f {_PG_DATA}/PG_VERSION ]; then "
        f"initdb -D {_PG_DATA} {shlex.join(INITDB_ARGS)} --pwfile={pwfile} >/dev/null"
        f" && cat {_PG_CONF}/postgresql.conf >> {_PG_DATA}/postgresql.conf"
        f" && cp {_PG_CONF}/pg_hba.conf {_PG_DATA}/pg_hba.conf; fi"
        f"{key} && exec postgres -D {_PG_DATA}"
    )
    return ServiceContainer(
        name="postgres-1",
        image=image_ref("postgres"),
        command=("sh", "-c", script),
        files={
            pwfile: secrets.postgres_superuser_password + "\n",
            f"{_PG_CONF}/postgresql.conf": configs.postgresql_conf(spec, secrets, port=port),
            f"{_PG_CONF}/pg_hba.conf": configs.postgres_hba(spec, secrets),
            **tls_mounts(certs, "postgres"),
        },
        ports=(port,),
    )
