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
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
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
    write_document,
)
from backbone.settings import TimescaleConnectionSettings
from backbone.store.timescale import TimescaleStore
from backbone_harness.containers.engine import EngineError, no_engine_reason, podman
from backbone_harness.containers.images import build_all
from backbone_harness.containers.services import (
    ServiceContainer,
    kafka_broker,
    materialise,
    postgres_server,
    redis_server,
)
from backbone_harness.errors import HarnessError, StackExistsError, UsageError
from backbone_infra.render.kafka import KafkaNodePorts, new_cluster_id, security_protocol
from backbone_infra.spec import StackSpec
from backbone_infra.targets.local.ports import LOOPBACK, PortAllocator
from backbone_infra.targets.local.secrets import StackSecrets
from backbone_infra.targets.local.state import OUTPUTS_FILE, stacks_root
from backbone_infra.targets.local.tls import LOCAL_HOSTS, ca_file, issue_local_certificates

__all__ = ["STATE_FILE", "ContainerStack", "is_container_stack", "up"]

STATE_FILE = "containers.json"
LABEL = "backbone.stack"
#: How long a node may take to answer after its container started (seconds).
READY_TIMEOUT_S = 120.0
Echo = Callable[[str], None]


@dataclass
class ContainerState:
    """What ``down`` and node control need: names, ports, the node -> container map."""

    name: str
    size: str
    network: str
    nodes: dict[str, str] = field(default_factory=dict)
    ports: dict[str, dict[str, int]] = field(default_factory=dict)
    status: str = "starting"
    #: Off only for a stack brought up with ``--no-tls`` (measuring).
    tls: bool = True


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


def _run(service: ServiceContainer, *, stack: str, network: str, files: Path) -> str:
    container = f"backbone-{stack}-{service.name}"
    args = [
        "run",
        "--detach",
        "--name",
        container,
        "--hostname",
        service.name,
        "--network",
        network,
        "--network-alias",
        service.name,
        "--label",
        f"{LABEL}={stack}",
    ]
    for port in service.ports:
        args += ["--publish", f"{LOOPBACK}:{port}:{port}"]
    for host, target in materialise(service, files / service.name).items():
        args += ["--volume", f"{host}:{target}:ro"]
    podman(*args, service.image, *service.command)
    return container


@dataclass
class _Started:
    state: ContainerState
    secrets: StackSecrets
    spec: StackSpec


def _ca(spec: StackSpec) -> str | None:
    """The stack's CA bundle (``None`` without TLS): every client here verifies with it."""
    return ca_file(spec, _dir(spec.name))


def _hosts(node: str, service: str) -> list[str]:
    """What a node's certificate names: the published loopback address (clients
    on the host) and its container and service names (peers on the network)."""
    return [*LOCAL_HOSTS, node, service]


def _redis_ready(spec: StackSpec, secrets: StackSecrets, port: int) -> Callable[[], bool]:
    ca = _ca(spec)
    tls: dict[str, Any] = (
        {"ssl": True, "ssl_ca_certs": ca, "ssl_check_hostname": True} if ca else {}
    )

    def ping() -> bool:
        client = redis.Redis(
            host=LOOPBACK,
            port=port,
            username=spec.redis.username,
            password=secrets.redis_password,
            socket_timeout=3,
            **tls,
        )
        try:
            return bool(client.ping())
        finally:
            client.close()

    return ping


def _kafka_admin(spec: StackSpec, secrets: StackSecrets, port: int) -> KafkaAdminClient:
    ca = _ca(spec)
    return KafkaAdminClient(
        bootstrap_servers=f"{LOOPBACK}:{port}",
        security_protocol=security_protocol(ca is not None),
        sasl_mechanism=spec.kafka.sasl_mechanism,
        sasl_plain_username=spec.kafka.admin_username,
        sasl_plain_password=secrets.kafka_admin_password,
        request_timeout_ms=10000,
        **({"ssl_cafile": ca, "ssl_check_hostname": True} if ca else {}),
    )


def _pg_ssl(spec: StackSpec) -> dict[str, Any]:
    ca = _ca(spec)
    return {"sslmode": "verify-full", "sslrootcert": ca} if ca else {"sslmode": "disable"}


def _create_topics(spec: StackSpec, secrets: StackSecrets, port: int) -> None:
    admin = _kafka_admin(spec, secrets, port)
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
    finally:
        admin.close()


def _bootstrap_postgres(spec: StackSpec, secrets: StackSecrets, port: int) -> None:
    """The application role, database and bars schema, as the local environment makes them."""
    p = spec.postgres
    with psycopg.connect(
        host=LOOPBACK,
        port=port,
        user="postgres",
        password=secrets.postgres_superuser_password,
        dbname="postgres",
        autocommit=True,
        **_pg_ssl(spec),
        connect_timeout=10,
    ) as admin:
        exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (p.user,)).fetchone()
        if exists is None:
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(p.user), sql.Literal(secrets.postgres_password)
                )
            )
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(p.dbname), sql.Identifier(p.user)
                )
            )
    store = TimescaleStore(
        TimescaleConnectionSettings.from_section(_timescale(spec, secrets, port)),
        create_schema=False,
    )
    try:
        store.apply_schema()
    finally:
        store.close()


def _timescale(spec: StackSpec, secrets: StackSecrets, port: int) -> TimescaleConnection:
    return TimescaleConnection(
        hosts=[HostPort(host=LOOPBACK, port=port)],
        dbname=spec.postgres.dbname,
        user=spec.postgres.user,
        password=SecretStr(secrets.postgres_password),
        timescaledb=False,
        **_pg_ssl(spec),
    )


def _document(spec: StackSpec, secrets: StackSecrets, ports: dict[str, dict[str, int]]) -> Any:
    kafka = spec.kafka
    return ConnectionsDocument.model_validate(
        {
            "schema": "backbone.connections/v1",
            "stack": spec.name,
            # The Docker workload, on a Docker-API engine: the document's "docker" environment.
            "environment": "docker",
            "tier": spec.tier,
            "size": spec.size,
            "redis": RedisConnection(
                mode="standalone",
                host=LOOPBACK,
                port=ports["redis-1"]["client"],
                username=spec.redis.username,
                password=SecretStr(secrets.redis_password),
                tls=spec.tls,
                ssl_cafile=_ca(spec),
            ),
            "kafka": KafkaConnection(
                bootstrap_servers=[f"{LOOPBACK}:{ports['kafka-1']['client']}"],
                security_protocol=security_protocol(spec.tls),
                ssl_cafile=_ca(spec),
                sasl_mechanism=kafka.sasl_mechanism,
                username=kafka.username,
                password=SecretStr(secrets.kafka_password),
                topics={
                    t.logical: TopicInfo(
                        name=t.name,
                        partitions=t.partitions,
                        replication_factor=t.replication_factor,
                    )
                    for t in kafka.topics
                },
            ),
            "timescale": _timescale(spec, secrets, ports["postgres-1"]["client"]),
        }
    )


def up(spec: StackSpec, *, echo: Echo) -> Path:
    """Start the stack's containers, wait until each answers, write the outputs document.

    On any failure every container already started is removed before the error is raised.
    """
    reason = no_engine_reason()
    if reason is not None:
        raise EngineError(reason)
    if spec.size != "minimal" or spec.tier != "institutional":
        raise UsageError(
            "--env compose runs --size minimal --tier institutional so far; "
            "use --env local for ha stacks"
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
    echo("building or reusing the images (redis, kafka, postgres)")
    build_all(["redis", "kafka", "postgres"], echo)
    secrets = StackSecrets.load_or_create(directory)
    alloc = PortAllocator()
    kafka_ports = KafkaNodePorts(
        client=alloc.allocate(),
        internal=alloc.allocate(),
        controller=alloc.allocate(),
        metrics=alloc.allocate(),
    )
    ports = {
        "redis-1": {"client": alloc.allocate()},
        "kafka-1": kafka_ports.as_dict(),
        "postgres-1": {"client": alloc.allocate()},
    }
    state = ContainerState(
        name=spec.name, size=spec.size, network=f"backbone-{spec.name}", tls=spec.tls
    )
    state.ports = ports
    _save(directory, state)
    certs = issue_local_certificates(
        spec,
        directory,
        {svc: _hosts(f"{svc}-1", svc) for svc in ("redis", "kafka", "postgres")},
    )
    services = [
        redis_server(spec, secrets, port=ports["redis-1"]["client"], certs=certs),
        kafka_broker(spec, secrets, ports=kafka_ports, cluster_id=new_cluster_id(), certs=certs),
        postgres_server(spec, secrets, port=ports["postgres-1"]["client"], certs=certs),
    ]
    stack = ContainerStack(spec.name)
    try:
        podman("network", "create", "--label", f"{LABEL}={spec.name}", state.network)
        for service in services:
            state.nodes[service.name] = _run(
                service, stack=spec.name, network=state.network, files=directory / "files"
            )
            _save(directory, state)
        began = time.monotonic()
        for node, ready in stack.readiness(spec, secrets).items():
            _wait(node, state.nodes[node], ready)
            echo(f"{node}: ready ({time.monotonic() - began:.1f} s after start)")
        _create_topics(spec, secrets, ports["kafka-1"]["client"])
        _bootstrap_postgres(spec, secrets, ports["postgres-1"]["client"])
        path = write_document(_document(spec, secrets, ports), directory / OUTPUTS_FILE)
    except BaseException:
        echo("up failed; removing what was started")
        stack.down()
        raise
    state.status = "running"
    _save(directory, state)
    return path


class ContainerStack:
    """A running compose-environment stack: its containers and node control."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dir = _dir(name)
        raw = json.loads((self.dir / STATE_FILE).read_text())
        self.state = ContainerState(**raw)

    @property
    def outputs_path(self) -> Path:
        return self.dir / OUTPUTS_FILE

    def containers(self) -> list[str]:
        """Names of every container of the stack, running or not."""
        label = f"label={LABEL}={self.name}"
        done = podman("ps", "-a", "--filter", label, "--format", "{{.Names}}")
        return [line for line in done.stdout.split() if line]

    def readiness(self, spec: StackSpec, secrets: StackSecrets) -> dict[str, Callable[[], bool]]:
        ports = self.state.ports

        def kafka() -> bool:
            _kafka_admin(spec, secrets, ports["kafka-1"]["client"]).close()
            return True

        def postgres() -> bool:
            with psycopg.connect(
                host=LOOPBACK,
                port=ports["postgres-1"]["client"],
                user="postgres",
                password=secrets.postgres_superuser_password,
                dbname="postgres",
                connect_timeout=3,
                **_pg_ssl(spec),
            ) as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)

        return {
            "redis-1": _redis_ready(spec, secrets, ports["redis-1"]["client"]),
            "kafka-1": kafka,
            "postgres-1": postgres,
        }

    def status_rows(self) -> list[tuple[str, str, str, str]]:
        """(node, container, ports, state) per node."""
        rows = []
        for node, container in self.state.nodes.items():
            done = podman("inspect", "--format", "{{.State.Status}}", container, check=False)
            state = done.stdout.strip() if done.returncode == 0 else "absent"
            ports = " ".join(f"{k}={v}" for k, v in self.state.ports.get(node, {}).items())
            rows.append((node, container, ports, state))
        return rows

    def _container(self, node: str) -> str:
        if node not in self.state.nodes:
            raise HarnessError(
                f"no node {node!r} in stack {self.name}; nodes: {', '.join(self.state.nodes)}"
            )
        return self.state.nodes[node]

    def kill_node(self, node: str) -> None:
        podman("kill", self._container(node))

    def stop_node(self, node: str) -> None:
        podman("stop", "--time", "10", self._container(node))

    def pause_node(self, node: str) -> None:
        podman("pause", self._container(node))

    def resume_node(self, node: str) -> None:
        podman("unpause", self._container(node))

    def disconnect_node(self, node: str) -> None:
        """Cut the node's container off its network: a real partition. Its published
        ports stop answering (connections time out; nothing is refused)."""
        podman("network", "disconnect", self.state.network, self._container(node))

    def reconnect_node(self, node: str) -> None:
        """Join the node's container to its network again, under its node name."""
        podman(
            "network",
            "connect",
            "--alias",
            node,
            self.state.network,
            self._container(node),
        )

    def restart_node(self, node: str) -> None:
        """Start the node's container again (it keeps its data) and wait until it answers."""
        container = self._container(node)
        podman("restart", "--time", "10", container)
        secrets = StackSecrets.load(self.dir)
        from backbone_infra.spec import build_spec

        spec = build_spec(self.name, size=self.state.size, tls=self.state.tls)  # type: ignore[arg-type]
        _wait(node, container, self.readiness(spec, secrets)[node])

    def down(self) -> None:
        """Remove every container and the network of the stack (idempotent)."""
        names = self.containers()
        if names:
            podman("rm", "--force", "--time", "10", *names)
        podman("network", "rm", "--force", self.state.network, check=False)
        self.state.status = "stopped"
        _save(self.dir, self.state)
