"""The ``compose`` environment: a stack of the project's images on podman.

``harness up --env compose`` builds (or reuses) the images, starts one
container per node on a stack network with :mod:`backbone_harness.containers.services`
(explicit commands, mounted rendered configs, ports published on 127.0.0.1
at the same number inside and out), bootstraps the database and the topics as
the local environment does, and writes the same ``backbone.connections/v1``
document. ``harness down`` removes every container and the network; node
control maps to ``podman kill|stop|pause|unpause|restart``, and
``disconnect|reconnect`` take a container off its network and back (a real
partition, which processes on loopback cannot have).

The stack's state is ``containers.json`` in its directory (no ``state.json``,
so the local provisioner never mistakes it for a process stack).

PostgreSQL on ``ha`` runs under Patroni with an etcd container as its store,
as in the local and Pulumi environments (one rendering,
:mod:`backbone_infra.render.patroni`): Patroni bootstraps the cluster and
clones the standbys, commits wait for a quorum standby, and a crashed primary
fails over by itself (:mod:`backbone_harness.containers.patroni`). On
``minimal`` it is one plain server, as before.

TLS (``spec.tls``, the default) as in every environment: ``up`` issues the
stack's CA and one server certificate per service into ``tls/`` (the local
environment's code and file modes, :func:`certificate_hosts` for the names),
the containers mount them read-only, and every client here and in the outputs
document verifies the chain and the host name it dialled.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
from kafka import KafkaAdminClient
from kafka import errors as kafka_errors
from kafka.admin import NewTopic
from psycopg import sql
from pydantic import SecretStr

from backbone.connections import (
    ConnectionsDocument,
    HostPort,
    KafkaConnection,
    RedisConnection,
    TimescaleConnection,
    TopicInfo,
    load_document,
    write_document,
)
from backbone_harness.containers import patroni
from backbone_harness.containers.engine import EngineError, no_engine_reason, podman
from backbone_harness.containers.images import build_all, image_ref
from backbone_harness.containers.rotation import keep_redis_acl, rewrite_mounted_passwords
from backbone_harness.containers.services import (
    ETCD,
    ServiceContainer,
    etcd_server,
    kafka_broker,
    materialise,
    network_holder,
    patroni_node,
    postgres_server,
    postgres_standby,
    redis_server,
    sentinel,
    tls_volumes,
)
from backbone_harness.errors import HarnessError, StackExistsError, UsageError
from backbone_infra.errors import NotApplicableError
from backbone_infra.render.kafka import (
    KafkaNodePorts,
    new_cluster_id,
    node_id,
    node_name,
    security_protocol,
)
from backbone_infra.render.postgres import SUPERUSER, synchronous_standby_names
from backbone_infra.render.redis import ADMIN_USER
from backbone_infra.spec import StackSpec, build_spec
from backbone_infra.targets.job_principals import job_principals
from backbone_infra.targets.kafka_acls import grant_stack_acls
from backbone_infra.targets.local.kafka import tls_handshakes
from backbone_infra.targets.local.ports import LOOPBACK, PortAllocator
from backbone_infra.targets.local.secrets import StackSecrets
from backbone_infra.targets.local.state import OUTPUTS_FILE, stacks_root
from backbone_infra.targets.local.tls import LOCAL_HOSTS, ca_file, issue_local_certificates
from backbone_infra.targets.postgres_roles import bootstrap_roles_and_schema

__all__ = ["STATE_FILE", "ContainerStack", "certificate_hosts", "is_container_stack", "up"]

STATE_FILE = "containers.json"
LABEL = "backbone.stack"
#: How long a node may take to answer after its container started (seconds).
READY_TIMEOUT_S = 120.0
Echo = Callable[[str], None]
#: The container holding the network namespace of the Redis servers and Sentinels (ha).
REDIS_NET = "redis-net"
#: A Patroni standby that streams and counts in the commit quorum.
QUORUM_STANDBY = "standby (quorum)"


@dataclass
class ContainerState:
    """What ``down`` and node control need: names, ports, the node -> container map."""

    name: str
    size: str
    network: str
    nodes: dict[str, str] = field(default_factory=dict)
    ports: dict[str, dict[str, int]] = field(default_factory=dict)
    status: str = "starting"
    #: Containers that are no node (the Redis network namespace's holder).
    infra: list[str] = field(default_factory=list)
    #: Fixed addresses on the stack network, by container host name.
    addresses: dict[str, str] = field(default_factory=dict)
    #: Seconds from the first container's start until each node answered (``up``).
    timings: dict[str, float] = field(default_factory=dict)
    #: Whether the services serve TLS (``up`` records ``spec.tls``: False only
    #: with ``--no-tls``). A state file without it predates TLS on compose,
    #: whose stacks served plain text.
    tls: bool = False


def _dir(name: str) -> Path:
    return stacks_root() / name


def is_container_stack(name: str) -> bool:
    """Whether ``name`` is a compose-environment stack (it has ``containers.json``)."""
    return (_dir(name) / STATE_FILE).is_file()


def _save(directory: Path, state: ContainerState) -> None:
    (directory / STATE_FILE).write_text(json.dumps(asdict(state), indent=2) + "\n")


def _running(container: str) -> bool:
    done = podman("inspect", "--format", "{{.State.Running}}", container, check=False)
    return done.returncode == 0 and done.stdout.strip() == "true"


def _wait(what: str, container: str, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        with contextlib.suppress(Exception):
            if ready():
                return
        if not _running(container) or time.monotonic() > deadline:
            logs = podman("logs", "--tail", "15", container, check=False)
            tail = (logs.stdout + logs.stderr).strip()
            raise EngineError(
                f"{what} in container {container} did not become ready "
                f"({'it exited' if not _running(container) else f'{READY_TIMEOUT_S:.0f} s'}); "
                f"last log lines:\n{tail}"
            )
        time.sleep(0.5)


def _run(
    service: ServiceContainer,
    *,
    stack: str,
    network: str,
    files: Path,
    addresses: dict[str, str] | None = None,
    tls_dir: Path | None = None,
) -> str:
    """Start one container. ``addresses``: every node's fixed address on the
    stack network; each container gets its own and ``/etc/hosts`` entries for
    the others (podman's CNI backend here has no DNS for container names).
    ``tls_dir``: the stack's certificates, of which it mounts its own."""
    container = f"backbone-{stack}-{service.name}"
    args = ["run", "--detach", "--name", container, "--label", f"{LABEL}={stack}"]
    if service.shares_network_of is not None:
        args += ["--network", f"container:backbone-{stack}-{service.shares_network_of}"]
    else:
        args += ["--hostname", service.name, "--network", network]
        args += ["--network-alias", service.name]
        if addresses:
            args += _fixed(addresses[service.name])
            for name, address in sorted(addresses.items()):
                if name != service.name:
                    args += ["--add-host", f"{name}:{address}"]
    if service.stop_signal is not None:
        args += ["--stop-signal", service.stop_signal]
    for port in service.ports:
        host, inside = port if isinstance(port, tuple) else (port, port)
        args += ["--publish", f"{LOOPBACK}:{host}:{inside}"]
    for host_path, target in materialise(service, files / service.name).items():
        args += ["--volume", f"{host_path}:{target}:ro"]
    if tls_dir is not None:
        for host_path, target, options in tls_volumes(service, tls_dir):
            args += ["--volume", f"{host_path}:{target}:{options}"]
    podman(*args, service.image, *service.command)
    return container


def _redis_client(port: int, *, username: str | None, password: str, ca: str | None) -> redis.Redis:
    """A client of a published Redis or Sentinel port; with ``ca`` (the stack's
    CA) over TLS, chain and host name verified like any client."""
    tls: dict[str, Any] = (
        {} if ca is None else {"ssl": True, "ssl_ca_certs": ca, "ssl_check_hostname": True}
    )
    return redis.Redis(
        host=LOOPBACK,
        port=port,
        username=username,
        password=password,
        socket_timeout=3,
        socket_connect_timeout=3,
        **tls,
    )


def _redis_ready(
    spec: StackSpec, secrets: StackSecrets, port: int, ca: str | None
) -> Callable[[], bool]:
    def ping() -> bool:
        client = _redis_client(
            port, username=spec.redis.username, password=secrets.redis_password, ca=ca
        )
        try:
            return bool(client.ping())
        finally:
            client.close()

    return ping


def _sentinel_ready(secrets: StackSecrets, port: int, ca: str | None) -> Callable[[], bool]:
    def ping() -> bool:
        client = _redis_client(port, username=None, password=secrets.sentinel_password, ca=ca)
        try:
            return bool(client.ping())
        finally:
            client.close()

    return ping


def _kafka_admin(
    spec: StackSpec,
    secrets: StackSecrets,
    servers: list[str],
    ca: str | None,
    *,
    timeout_ms: int = 10000,
) -> KafkaAdminClient:
    """An admin client (the admin user); with ``ca`` over ``SASL_SSL``, offered
    only the servers that finish a verified TLS handshake within the timeout
    (kafka-python would wait for one without a deadline)."""
    tls: dict[str, Any] = {}
    if ca is not None:
        servers = [s for s in servers if tls_handshakes(s, ca, timeout_ms / 1000)]
        if not servers:
            raise kafka_errors.NoBrokersAvailable("no broker completed a TLS handshake in time")
        tls = {"ssl_cafile": ca, "ssl_check_hostname": True}
    return KafkaAdminClient(
        bootstrap_servers=servers,
        security_protocol=security_protocol(ca is not None),
        sasl_mechanism=spec.kafka.sasl_mechanism,
        sasl_plain_username=spec.kafka.admin_username,
        sasl_plain_password=secrets.kafka_admin_password,
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
        **tls,
    )


def _create_topics(
    spec: StackSpec, secrets: StackSecrets, servers: list[str], ca: str | None
) -> None:
    admin = _kafka_admin(spec, secrets, servers, ca)
    try:
        topics = [
            NewTopic(
                t.name,
                num_partitions=t.partitions,
                replication_factor=t.replication_factor,
                topic_configs={
                    "min.insync.replicas": str(t.min_insync_replicas),
                    "retention.ms": str(t.retention_ms),
                    "cleanup.policy": t.cleanup_policy,
                },
            )
            for t in spec.kafka.topics
        ]
        with contextlib.suppress(kafka_errors.TopicAlreadyExistsError):
            admin.create_topics(topics)
        grant_stack_acls(admin, spec.kafka)
    finally:
        admin.close()


def _pg_ssl(ca: str | None) -> dict[str, Any]:
    """libpq's TLS settings: the stack's CA and host name verified (``hostssl`` only)."""
    return {"sslmode": "disable"} if ca is None else {"sslmode": "verify-full", "sslrootcert": ca}


def _superuser(
    secrets: StackSecrets, port: int, ca: str | None, *, connect_timeout: int = 10
) -> psycopg.Connection:
    return psycopg.connect(
        host=LOOPBACK,
        port=port,
        user="postgres",
        password=secrets.postgres_superuser_password,
        dbname="postgres",
        autocommit=True,
        connect_timeout=connect_timeout,
        **_pg_ssl(ca),
    )


def _existing_role_is_fine(conn: psycopg.Connection, statement: str) -> None:
    # Under Patroni the replication role exists (Patroni created it, with its
    # password, while bootstrapping): the rendered statement for it finds it there.
    with contextlib.suppress(psycopg.errors.DuplicateObject):
        conn.execute(statement)


def _bootstrap_postgres(spec: StackSpec, secrets: StackSecrets, port: int, ca: str | None) -> None:
    """Roles (the replication role among them), database, schema and grants,
    rendered once and run as the local environment runs them
    (backbone_infra.targets.postgres_roles), on the primary at ``port``."""
    p = spec.postgres

    def connect(dbname: str, autocommit: bool) -> psycopg.Connection:
        return psycopg.connect(
            host=LOOPBACK,
            port=port,
            user=SUPERUSER,
            password=secrets.postgres_superuser_password,
            dbname=dbname,
            autocommit=autocommit,
            connect_timeout=10,
            **_pg_ssl(ca),
        )

    with connect("postgres", True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (p.user,)).fetchone()
    if exists is None:
        if p.patroni is not None:
            bootstrap_roles_and_schema(connect, p, secrets, _existing_role_is_fine)
        else:
            bootstrap_roles_and_schema(connect, p, secrets)


def _make_synchronous(spec: StackSpec, secrets: StackSecrets, port: int, ca: str | None) -> None:
    """Once a standby streams, the primary's commits wait for one (as locally)."""
    names = synchronous_standby_names(spec.postgres)
    if names is None:
        return
    with _superuser(secrets, port, ca) as admin:
        admin.execute(
            sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(sql.Literal(names))
        )
        admin.execute("SELECT pg_reload_conf()")


def _streaming(
    secrets: StackSecrets, port: int, standbys: list[str], ca: str | None
) -> Callable[[], bool]:
    """Whether every standby streams, over TLS when the stack has it (a standby
    that fell back to plain text would match no ``hostssl`` rule and not stream)."""

    def check() -> bool:
        with _superuser(secrets, port, ca, connect_timeout=3) as admin:
            rows = admin.execute(
                "SELECT r.application_name, coalesce(s.ssl, false) FROM pg_stat_replication r"
                " LEFT JOIN pg_stat_ssl s ON s.pid = r.pid WHERE r.state = 'streaming'"
            ).fetchall()
        return set(standbys) <= {name for name, ssl in rows if ssl or ca is None}

    return check


def _timescale(
    spec: StackSpec, secrets: StackSecrets, ports: list[int], ca: str | None
) -> TimescaleConnection:
    return TimescaleConnection(
        hosts=[HostPort(host=LOOPBACK, port=port) for port in ports],
        dbname=spec.postgres.dbname,
        user=spec.postgres.user,
        password=SecretStr(secrets.postgres_password),
        sslmode="verify-full" if ca is not None else "disable",
        sslrootcert=ca,
        timescaledb=False,
    )


def _names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(1, count + 1)]


def _kafka_servers(ports: dict[str, dict[str, int]]) -> list[str]:
    """Where clients on the host bootstrap: each broker's external (or, alone, client) port."""
    return [
        f"{LOOPBACK}:{p.get('external', p['client'])}"
        for node, p in sorted(ports.items())
        if node.startswith("kafka-")
    ]


def _document(
    spec: StackSpec, secrets: StackSecrets, ports: dict[str, dict[str, int]], ca: str | None
) -> Any:
    """The outputs document: published loopback ports and, with TLS, the CA
    bundle's path in each section (never a key), as the local environment writes it."""
    kafka = spec.kafka
    r = spec.redis
    if r.sentinels:
        cache = RedisConnection(
            mode="sentinel",
            sentinels=[
                HostPort(host=LOOPBACK, port=ports[n]["client"])
                for n in _names("sentinel", r.sentinels)
            ],
            master_name=r.master_name,
            username=r.username,
            password=SecretStr(secrets.redis_password),
            sentinel_password=SecretStr(secrets.sentinel_password),
            tls=ca is not None,
            ssl_cafile=ca,
        )
    else:
        cache = RedisConnection(
            mode="standalone",
            host=LOOPBACK,
            port=ports["redis-1"]["client"],
            username=r.username,
            password=SecretStr(secrets.redis_password),
            tls=ca is not None,
            ssl_cafile=ca,
        )
    pg_nodes = _names("postgres", 1 + spec.postgres.standbys)
    return ConnectionsDocument.model_validate(
        {
            "schema": "backbone.connections/v1",
            "stack": spec.name,
            # The Docker workload, on a Docker-API engine: the document's "docker" environment.
            "environment": "docker",
            "tier": spec.tier,
            "size": spec.size,
            "redis": cache,
            "kafka": KafkaConnection(
                bootstrap_servers=_kafka_servers(ports),
                security_protocol=security_protocol(ca is not None),
                ssl_cafile=ca,
                sasl_mechanism=kafka.sasl_mechanism,
                username=kafka.username,
                password=SecretStr(secrets.kafka_password),
                group_prefix=kafka.group_prefix,
                topics={
                    t.logical: TopicInfo(
                        name=t.name,
                        partitions=t.partitions,
                        replication_factor=t.replication_factor,
                    )
                    for t in kafka.topics
                },
            ),
            "timescale": _timescale(spec, secrets, [ports[n]["client"] for n in pg_nodes], ca),
            "principals": job_principals(spec, secrets),
        }
    )


def _allocate(spec: StackSpec) -> dict[str, dict[str, int]]:
    """Every node's host ports (free loopback ports, chosen now)."""
    alloc = PortAllocator()
    ports: dict[str, dict[str, int]] = {}
    for node in _names("redis", 1 + spec.redis.replicas) + _names("sentinel", spec.redis.sentinels):
        ports[node] = {"client": alloc.allocate()}
    for node in _names("kafka", spec.kafka.brokers):
        ports[node] = KafkaNodePorts(
            client=alloc.allocate(),
            internal=alloc.allocate(),
            controller=alloc.allocate(),
            metrics=alloc.allocate(),
        ).as_dict()
        if spec.kafka.brokers > 1:
            ports[node]["external"] = alloc.allocate()
    for node in _names("postgres", 1 + spec.postgres.standbys):
        ports[node] = {"client": alloc.allocate()}
        if spec.postgres.patroni is not None:
            ports[node]["rest"] = alloc.allocate()
    return ports


def _services(
    spec: StackSpec, secrets: StackSecrets, ports: dict[str, dict[str, int]]
) -> list[ServiceContainer]:
    """Every container of the stack except the standbys (cloned once the primary is up)."""
    r = spec.redis
    servers = _names("redis", 1 + r.replicas)
    out: list[ServiceContainer] = []
    if r.sentinels:
        # One network namespace for the servers and Sentinels (see network_holder).
        first = HostPort(host=LOOPBACK, port=ports["redis-1"]["client"])
        group = servers + _names("sentinel", r.sentinels)
        out.append(
            network_holder(
                REDIS_NET, image=image_ref("redis"), ports=tuple(ports[n]["client"] for n in group)
            )
        )
        for node in servers:
            out.append(
                redis_server(
                    spec,
                    secrets,
                    port=ports[node]["client"],
                    name=node,
                    primary=None if node == "redis-1" else first,
                    shares_network_of=REDIS_NET,
                )
            )
        for node in _names("sentinel", r.sentinels):
            out.append(
                sentinel(
                    spec,
                    secrets,
                    name=node,
                    port=ports[node]["client"],
                    primary=first,
                    shares_network_of=REDIS_NET,
                )
            )
    else:
        out.append(redis_server(spec, secrets, port=ports["redis-1"]["client"]))
    brokers = _names("kafka", spec.kafka.brokers)
    cluster_id = new_cluster_id()
    if len(brokers) == 1:
        kp = KafkaNodePorts.from_dict(ports["kafka-1"])
        out.append(kafka_broker(spec, secrets, ports=kp, cluster_id=cluster_id))
    else:
        cluster = {i: KafkaNodePorts.from_dict(ports[n]) for i, n in enumerate(brokers, 1)}
        for i, node in enumerate(brokers, 1):
            out.append(
                kafka_broker(
                    spec,
                    secrets,
                    ports=cluster[i],
                    cluster_id=cluster_id,
                    node=i,
                    cluster=cluster,
                    external_port=ports[node]["external"],
                )
            )
    if spec.postgres.patroni is not None:
        # Patroni's store first; postgres-1 then bootstraps the cluster.
        out += [etcd_server(spec), _patroni_node(spec, secrets, ports, "postgres-1")]
    else:
        out.append(postgres_server(spec, secrets, port=ports["postgres-1"]["client"]))
    return out


def _patroni_node(
    spec: StackSpec, secrets: StackSecrets, ports: dict[str, dict[str, int]], node: str
) -> ServiceContainer:
    return patroni_node(
        spec, secrets, name=node, port=ports[node]["client"], rest_port=ports[node]["rest"]
    )


def _standbys(
    spec: StackSpec, secrets: StackSecrets, ports: dict[str, dict[str, int]]
) -> list[ServiceContainer]:
    """The other PostgreSQL nodes: Patroni nodes that clone the leader
    themselves, or plain standbys cloned from postgres-1 once."""
    if spec.postgres.patroni is not None:
        return [
            _patroni_node(spec, secrets, ports, node)
            for node in _names("postgres", 1 + spec.postgres.standbys)[1:]
        ]
    primary = HostPort(host="postgres-1", port=ports["postgres-1"]["client"])
    return [
        postgres_standby(spec, secrets, name=node, port=ports[node]["client"], primary=primary)
        for node in _names("postgres", 1 + spec.postgres.standbys)[1:]
    ]


def _fixed(address: str) -> list[str]:
    """podman options for a fixed address and a MAC derived from it (as Docker
    derives its own). The same MAC after a reconnect keeps the host's neighbour
    entry valid: with a new one, the host sent to the old MAC until its entry
    expired and the published ports stayed silent ~30 s after the partition healed."""
    mac = "02:42:" + ":".join(f"{int(octet):02x}" for octet in address.split("."))
    return ["--ip", address, "--mac-address", mac]


def _addresses(network: str, names: list[str]) -> dict[str, str]:
    """A fixed address per container on ``network`` (from .10 of its subnet), so a
    container keeps its address when it is reconnected and peers find it by name."""
    done = podman(
        "network", "inspect", "--format", "{{range .Subnets}}{{.Subnet}} {{end}}", network
    )
    subnet = ipaddress.ip_network(done.stdout.split()[0])
    hosts = list(subnet.hosts())[9 : 9 + len(names)]
    return {name: str(address) for name, address in zip(names, hosts, strict=True)}


def certificate_hosts(spec: StackSpec) -> dict[str, list[str]]:
    """The names each service's certificate carries: what clients on the host
    dial (``127.0.0.1``, ``localhost``: published ports), and the container
    host names peers dial on the stack network (a standby's ``postgres-1``,
    the brokers' ``kafka-N`` for ``INTERNAL`` and ``CONTROLLER``). The Redis
    servers and Sentinels of ``ha`` share one network namespace and dial each
    other at ``127.0.0.1``; their names are there for completeness."""
    redis_names = _names("redis", 1 + spec.redis.replicas) + _names(
        "sentinel", spec.redis.sentinels
    )
    return {
        "redis": [*LOCAL_HOSTS, *redis_names],
        "kafka": [*LOCAL_HOSTS, *_names("kafka", spec.kafka.brokers)],
        "postgres": [*LOCAL_HOSTS, *_names("postgres", 1 + spec.postgres.standbys)],
    }


def up(spec: StackSpec, *, echo: Echo) -> Path:
    """Start the stack's containers, wait until each answers, write the outputs document.

    On any failure every container already started is removed before the error is raised.
    """
    reason = no_engine_reason()
    if reason is not None:
        raise EngineError(reason)
    if spec.tier != "institutional":
        raise UsageError(
            "--env compose runs --tier institutional (the bootstrap tier has no services)"
        )
    directory = _dir(spec.name)
    if (directory / "state.json").exists():
        raise UsageError(
            f"{directory} holds a local stack; pick another --name for the compose environment"
        )
    if is_container_stack(spec.name) and ContainerStack(spec.name).containers():
        raise StackExistsError(spec.name)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    images = ["redis", "kafka", "postgres"]
    if spec.postgres.patroni is not None:
        images += ["etcd", "patroni"]
    echo(f"building or reusing the images ({', '.join(images)})")
    build_all(images, echo)
    secrets = StackSecrets.load_or_create(directory)
    # The stack's own CA and server certificates, as a local stack issues them.
    tls_dir = issue_local_certificates(spec, directory, certificate_hosts(spec))
    ca = ca_file(spec, directory)
    ports = _allocate(spec)
    state = ContainerState(
        name=spec.name, size=spec.size, network=f"backbone-{spec.name}", tls=spec.tls
    )
    state.ports = ports
    _save(directory, state)
    stack = ContainerStack(spec.name)
    stack.state = state  # one state: what starts here is what readiness and down see
    files = directory / "files"
    began = time.monotonic()

    def start(services: list[ServiceContainer]) -> None:
        for service in services:
            container = _run(
                service,
                stack=spec.name,
                network=state.network,
                files=files,
                addresses=state.addresses,
                tls_dir=tls_dir,
            )
            if service.name == REDIS_NET:
                state.infra.append(container)
            else:
                state.nodes[service.name] = container
            _save(directory, state)

    def wait(nodes: list[str]) -> None:
        checks = stack.readiness(spec, secrets)
        for node in nodes:
            _wait(node, state.nodes[node], checks[node])
            state.timings[node] = round(time.monotonic() - began, 2)
            echo(f"{node}: ready ({state.timings[node]:.1f} s after start)")

    try:
        podman("network", "create", "--label", f"{LABEL}={spec.name}", state.network)
        services = _services(spec, secrets, ports)
        standbys = _standbys(spec, secrets, ports)
        state.addresses = _addresses(
            state.network, [s.name for s in services + standbys if s.shares_network_of is None]
        )
        start(services)
        wait(list(state.nodes))
        _create_topics(spec, secrets, _kafka_servers(ports), ca)
        if spec.postgres.patroni is not None:
            # postgres-1 started alone, so it bootstraps the cluster and leads.
            _wait(
                "Patroni's leader",
                state.nodes["postgres-1"],
                patroni.node_answers(ports["postgres-1"]["rest"], "primary"),
            )
        _bootstrap_postgres(spec, secrets, ports["postgres-1"]["client"], ca)
        if standbys:
            start(standbys)
            names = [s.name for s in standbys]
            wait(names)
            _wait(
                "streaming",
                state.nodes[names[0]],
                _streaming(secrets, ports["postgres-1"]["client"], names, ca),
            )
            if spec.postgres.patroni is None:
                _make_synchronous(spec, secrets, ports["postgres-1"]["client"], ca)
            else:
                # Patroni records the quorum in etcd a loop after PostgreSQL has
                # it: the stack is up once the roles say what they will from now on.
                _wait(
                    "the commit quorum",
                    state.nodes[names[0]],
                    lambda: all(
                        patroni.node_role(ports[n]["rest"], n) == QUORUM_STANDBY for n in names
                    ),
                )
            state.timings["standbys streaming"] = round(time.monotonic() - began, 2)
            echo(f"{', '.join(names)}: streaming ({time.monotonic() - began:.1f} s after start)")
        path = write_document(_document(spec, secrets, ports, ca), directory / OUTPUTS_FILE)
        state.timings["total"] = round(time.monotonic() - began, 2)
    except BaseException as exc:
        echo(f"up failed ({type(exc).__name__}: {str(exc)[:300]}); removing what was started")
        stack.save_logs()
        echo(f"each container's log is in {directory / 'logs'}")
        try:
            stack.down()
        except EngineError as cleanup:  # the first error is the one to report
            echo(f"cleaning up failed too: {cleanup}")
        raise
    state.status = "running"
    _save(directory, state)
    return path


class ContainerStack:
    """A compose-environment stack: its containers, roles and node control.

    A :class:`backbone_harness.stacks.Stack`, as the local process stack is:
    the drills run on either.
    """

    #: The harness's name for this environment.
    environment = "compose"

    def __init__(self, name: str) -> None:
        self.name = name
        self.dir = _dir(name)
        raw = json.loads((self.dir / STATE_FILE).read_text())
        self.state = ContainerState(**raw)
        self.spec: StackSpec = build_spec(
            name,
            size=self.state.size,  # type: ignore[arg-type]
            tls=self.state.tls,
        )

    @property
    def status(self) -> str:
        return self.state.status

    @property
    def outputs_path(self) -> Path:
        return self.dir / OUTPUTS_FILE

    @property
    def document(self) -> ConnectionsDocument:
        return load_document(self.outputs_path)

    @property
    def secrets(self) -> StackSecrets:
        return StackSecrets.load(self.dir)

    @property
    def ca_file(self) -> str | None:
        """The CA bundle the stack's servers are verified with (None without TLS)."""
        return ca_file(self.spec, self.dir)

    def containers(self) -> list[str]:
        """Names of every container of the stack, running or not."""
        label = f"label={LABEL}={self.name}"
        done = podman("ps", "-a", "--filter", label, "--format", "{{.Names}}")
        return [line for line in done.stdout.split() if line]

    def readiness(self, spec: StackSpec, secrets: StackSecrets) -> dict[str, Callable[[], bool]]:
        """Per node: a check that it answers, from the host, at its published port."""
        ports = self.state.ports
        ca = ca_file(spec, self.dir)
        checks: dict[str, Callable[[], bool]] = {}

        def kafka(node: str) -> Callable[[], bool]:
            me = node_id(node)
            server = f"{LOOPBACK}:{ports[node].get('external', ports[node]['client'])}"

            def registered() -> bool:
                admin = _kafka_admin(spec, secrets, [server], ca, timeout_ms=5000)
                try:
                    brokers = admin.describe_cluster()["brokers"]
                finally:
                    admin.close()
                return any(b["broker_id"] == me for b in brokers)

            return registered

        def postgres(node: str) -> Callable[[], bool]:
            if "rest" in ports[node]:  # under Patroni: postgres runs, in any role
                return patroni.node_answers(ports[node]["rest"])

            def answers() -> bool:
                with _superuser(secrets, ports[node]["client"], ca, connect_timeout=3) as conn:
                    return conn.execute("SELECT 1").fetchone() == (1,)

            return answers

        for node in self.state.nodes:
            if node.startswith("redis-"):
                checks[node] = _redis_ready(spec, secrets, ports[node]["client"], ca)
            elif node.startswith("sentinel-"):
                checks[node] = _sentinel_ready(secrets, ports[node]["client"], ca)
            elif node.startswith("kafka-"):
                checks[node] = kafka(node)
            elif node.startswith("postgres-"):
                checks[node] = postgres(node)
            elif node == ETCD and spec.postgres.patroni is not None:
                checks[node] = patroni.etcd_answers(
                    self.state.nodes[node], spec.postgres.patroni.etcd_client_port
                )
        return checks

    def status_rows(self) -> list[tuple[str, str, str, str]]:
        """(node, container, ports, state) per node."""
        rows = []
        for node, container in self.state.nodes.items():
            done = podman("inspect", "--format", "{{.State.Status}}", container, check=False)
            state = done.stdout.strip() if done.returncode == 0 else "absent"
            ports = " ".join(f"{k}={v}" for k, v in self.state.ports.get(node, {}).items())
            rows.append((node, container, ports, state))
        return rows

    # -- nodes -----------------------------------------------------------------------
    def node_names(self) -> list[str]:
        return list(self.state.nodes)

    def _container(self, node: str) -> str:
        if node not in self.state.nodes:
            raise HarnessError(
                f"no node {node!r} in stack {self.name}; nodes: {', '.join(self.state.nodes)}"
            )
        return self.state.nodes[node]

    def node_running(self, name: str) -> bool:
        """Whether the node's container runs (a paused one counts as running)."""
        done = podman(
            "inspect", "--format", "{{.State.Status}}", self._container(name), check=False
        )
        return done.returncode == 0 and done.stdout.strip() in ("running", "paused")

    def node_ports(self, name: str) -> dict[str, int]:
        """The node's ports; ``client`` is where a client on the host dials it
        (a Kafka broker's ``external`` port on ``ha``)."""
        self._container(name)
        ports = dict(self.state.ports.get(name, {}))
        if "external" in ports:
            ports["client"] = ports["external"]
        return ports

    # -- node control ------------------------------------------------------------------
    def kill_node(self, node: str) -> None:
        podman("kill", self._container(node))

    def stop_node(self, node: str) -> None:
        podman("stop", "--time", "10", self._container(node))

    def pause_node(self, node: str) -> None:
        podman("pause", self._container(node))

    def resume_node(self, node: str) -> None:
        podman("unpause", self._container(node))

    def _shares_network(self, node: str) -> bool:
        return node.startswith(("redis-", "sentinel-")) and bool(self.spec.redis.sentinels)

    def disconnect_node(self, node: str) -> None:
        """Cut the node's container off its network: a real partition. Its published
        ports stop answering (connections time out; nothing is refused)."""
        if self._shares_network(node):
            raise NotApplicableError(
                "compose",
                f"disconnecting {node} alone",
                "on ha the Redis servers and Sentinels share one network namespace "
                "(their announced 127.0.0.1 addresses must work for the host and for "
                "each other); partition a Kafka broker or a PostgreSQL node instead",
            )
        podman("network", "disconnect", self.state.network, self._container(node))

    def reconnect_node(self, node: str) -> None:
        """Join the node's container to its network again, under its node name."""
        fixed = self.state.addresses.get(node)
        args = _fixed(fixed) if fixed else []
        podman(
            "network", "connect", "--alias", node, *args, self.state.network, self._container(node)
        )

    def restart_node(self, node: str) -> float:
        """Start the node's container again (it keeps its data); seconds until it answers."""
        container = self._container(node)
        began = time.monotonic()
        podman("restart", "--time", "10", container)
        _wait(node, container, self.readiness(self.spec, self.secrets)[node])
        return time.monotonic() - began

    # -- credentials (backbone_infra.rotation; see containers/rotation.py) ---------------
    def keep_redis_acl(self, node: str, admin: redis.Redis) -> None:
        keep_redis_acl(self._container(node), admin)

    def keep_credentials(self, old: StackSecrets, new: StackSecrets) -> None:
        rewrite_mounted_passwords(self.dir / "files", old, new)

    # -- roles ---------------------------------------------------------------------------
    def roles(self, prefix: str = "") -> dict[str, str]:
        """Every node's role (or those whose names start with ``prefix``), asked
        of the services through their published ports."""
        secrets = self.secrets
        out: dict[str, str] = {}
        for node in (n for n in self.state.nodes if n.startswith(prefix)):
            if not self.node_running(node):
                out[node] = "down"
                continue
            try:
                out[node] = self._role(node, secrets)
            except Exception as exc:  # a partitioned or paused node cannot say
                out[node] = f"unknown ({type(exc).__name__})"
        return out

    def _role(self, node: str, secrets: StackSecrets) -> str:
        port = self.node_ports(node).get("client", 0)
        if node.startswith("sentinel-"):
            return "sentinel"
        if node.startswith("redis-"):
            client = _redis_client(
                port, username=ADMIN_USER, password=secrets.redis_admin_password, ca=self.ca_file
            )
            try:
                role = client.info("replication").get("role")
            finally:
                client.close()
            return "primary" if role == "master" else "replica"
        if node == ETCD:
            return "dcs (Patroni's store)"
        if node.startswith("postgres-") and "rest" in self.state.ports[node]:
            return patroni.node_role(self.state.ports[node]["rest"], node)
        if node.startswith("postgres-"):
            with _superuser(secrets, port, self.ca_file, connect_timeout=3) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            return "standby" if row and row[0] else "primary"
        if node.startswith("kafka-"):
            with self.kafka_admin() as admin:
                brokers = {b["broker_id"]: b for b in admin.describe_cluster()["brokers"]}
                quorum = admin.describe_metadata_quorum()
            me = node_id(node)
            leader = quorum["topics"][0]["partitions"][0]["leader_id"]
            if me not in brokers or brokers[me].get("is_fenced"):
                return "fenced"
            return "broker+controller (active)" if me == leader else "broker+controller"
        return "unknown"

    def redis_primary(self) -> str:
        """The server the Sentinels name as primary (the only one when standalone)."""
        if not self.spec.redis.sentinels:
            return "redis-1"
        secrets = self.secrets
        servers = _names("redis", 1 + self.spec.redis.replicas)
        by_port = {self.state.ports[n]["client"]: n for n in servers}
        errors: list[str] = []
        for node in _names("sentinel", self.spec.redis.sentinels):
            client = _redis_client(
                self.state.ports[node]["client"],
                username=None,
                password=secrets.sentinel_password,
                ca=self.ca_file,
            )
            try:
                addr: Any = client.sentinel_get_master_addr_by_name(self.spec.redis.master_name)
                if addr:
                    return by_port[int(addr[1])]
            except (redis.RedisError, KeyError) as exc:
                errors.append(f"{node}: {exc}")
            finally:
                client.close()
        raise HarnessError(
            f"no Sentinel names a Redis primary ({'; '.join(errors) or 'none answered'}); "
            f"check `podman logs backbone-{self.name}-sentinel-1`"
        )

    def postgres_primary(self) -> str:
        # Only the PostgreSQL nodes are asked: a drill polls this during a failover.
        roles = self.roles("postgres-")
        # Only a primary in Patroni's "running" state counts (not "primary (starting)").
        primaries = [n for n, r in roles.items() if r == "primary"]
        if len(primaries) != 1:
            raise HarnessError(
                f"expected one PostgreSQL primary, found {primaries or 'none'} (roles: {roles}); "
                f"check `podman logs backbone-{self.name}-postgres-1`"
            )
        return primaries[0]

    # -- PostgreSQL under Patroni (ha) -------------------------------------------------
    def _patroni_rest(self, node: str) -> int:
        self._container(node)
        port = self.state.ports.get(node, {}).get("rest")
        if port is None:
            raise NotApplicableError(
                "compose",
                f"asking Patroni on {node}",
                f"stack {self.name!r} runs PostgreSQL without Patroni; use an ha stack",
            )
        return port

    def crash_postgres(self, node: str) -> None:
        """SIGKILL the PostgreSQL server of Patroni node ``node`` and leave Patroni
        (the container's main process) running: a crashed database on a live
        machine; :meth:`kill_node` is the machine."""
        self._patroni_rest(node)
        if not self.node_running(node):
            raise HarnessError(f"{node} of stack {self.name!r} is not running; start it first")
        patroni.crash_server(self._container(node))

    def postgres_switchover(self, candidate: str) -> float:
        """Make ``candidate`` the PostgreSQL primary through Patroni; seconds it took."""
        self._patroni_rest(candidate)
        return patroni.switchover(
            candidate, rest_port=self._patroni_rest, primary=self.postgres_primary
        )

    def node_log(self, node: str) -> str:
        """The node's container log so far (Patroni's and PostgreSQL's lines)."""
        done = podman("logs", self._container(node), check=False)
        return done.stdout + done.stderr

    @contextlib.contextmanager
    def kafka_admin(self) -> Iterator[KafkaAdminClient]:
        """An admin client bootstrapped from every running, unpaused broker."""
        servers = [
            f"{LOOPBACK}:{self.node_ports(n)['client']}"
            for n in self.state.nodes
            if n.startswith("kafka-") and self._answering(n)
        ] or _kafka_servers(self.state.ports)
        admin = _kafka_admin(self.spec, self.secrets, servers, self.ca_file)
        try:
            yield admin
        finally:
            admin.close()

    def _answering(self, node: str) -> bool:
        done = podman(
            "inspect", "--format", "{{.State.Status}}", self._container(node), check=False
        )
        return done.returncode == 0 and done.stdout.strip() == "running"

    def kafka_partition_leader(self, topic: str, partition: int) -> str:
        with self.kafka_admin() as admin:
            described = admin.describe_topics([topic])
        for info in described:
            for p in info["partitions"]:
                if p["partition_index"] == partition and p["leader_id"] >= 0:
                    return node_name(p["leader_id"])
        raise HarnessError(f"{topic}/{partition} has no leader right now")

    def kafka_active_controller(self) -> str:
        with self.kafka_admin() as admin:
            quorum = admin.describe_metadata_quorum()
        leader = quorum["topics"][0]["partitions"][0]["leader_id"]
        if leader < 0:
            raise HarnessError("the KRaft quorum has no leader right now")
        return node_name(leader)

    def save_logs(self) -> None:
        """Keep each node's container log in ``logs/<node>.log`` (before removal)."""
        logs = self.dir / "logs"
        logs.mkdir(exist_ok=True)
        for node, container in self.state.nodes.items():
            done = podman("logs", container, check=False)
            (logs / f"{node}.log").write_text(done.stdout + done.stderr)

    def down(self) -> None:
        """Remove every container and the network of the stack (idempotent)."""
        names = self.containers()
        # Containers that join another's network namespace go first (podman
        # refuses to remove a namespace's holder while they exist).
        holders = [n for n in names if n in self.state.infra]
        for batch in ([n for n in names if n not in holders], holders):
            if batch:
                podman("rm", "--force", "--time", "10", *batch)
        podman("network", "rm", "--force", self.state.network, check=False)
        self.state.status = "stopped"
        _save(self.dir, self.state)

    def __repr__(self) -> str:
        return f"ContainerStack({self.name!r}, {self.state.size}, {self.status}, dir={self.dir})"
