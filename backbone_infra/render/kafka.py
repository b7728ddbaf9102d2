"""What a Kafka node is made of: its ports, its ``server.properties`` (with the
JAAS settings of every listener), its storage-format arguments, its JVM
command line and the JMX exporter rules. Pure functions, no I/O.

One rendering for every target: the local provisioner runs it on loopback
ports, the Docker and Kubernetes components mount it into their containers
and start the same JVM command (no image entrypoint). What differs per target
comes in as arguments: the hosts nodes reach each other at, the address the
listeners bind, the data directory and, where a target publishes a port to
clients outside its network, an ``EXTERNAL`` listener.

Every node runs KRaft in combined mode (``process.roles=broker,controller``)
and is a voter of a static quorum. Three listeners, each on its own port:

``CLIENT``
    SASL_SSL (see below) with the spec's mechanism (SCRAM-SHA-512): what clients use.
``INTERNAL``
    Broker-to-broker replication, SASL_SSL with the same mechanism as
    the admin user. SCRAM works here because its credentials are written into
    the metadata log at format time (``--add-scram``), before any broker runs.
``CONTROLLER``
    The KRaft quorum, SASL_SSL with PLAIN as the admin user: controllers
    authenticate each other before the metadata log (and so any SCRAM
    credential) is loaded, which SCRAM cannot do.

``EXTERNAL`` (container targets that publish ports only)
    Like ``CLIENT``, advertised as the published address.
``DRILL`` (local stacks only)
    Like ``CLIENT``, but advertised at *another* loopback port, where the
    network drills' Toxiproxy listens and forwards to this listener. Kafka
    clients connect to the addresses the brokers advertise, not to the one
    they bootstrapped from, so a proxy in front of the bootstrap address alone
    would be bypassed after the first metadata answer; through this listener
    every connection to every broker passes its own proxy, and a drill can cut
    or slow the path to one broker (the partition leader) alone. Nothing
    listens on the advertised port outside a drill: only the drills' clients
    use these addresses (the outputs document's ``drill.kafka_bootstrap_servers``).

Every listener authenticates, so a process that can reach a node cannot
bypass the client credentials by talking to the replication or quorum port.
Every request is authorized by ``StandardAuthorizer`` against the ACLs of
:mod:`backbone_infra.render.kafka_acls`.

With ``tls`` (every stack's default) every listener, the controller's
included, is ``SASL_SSL``: the node's certificate and key are one PEM
keystore, the stack's CA a PEM truststore, and a node dialling another (as
a replica or a voter) verifies its certificate and host name. Without it
(``--no-tls``, for measuring only) they are ``SASL_PLAINTEXT``.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath

from backbone.connections import HostPort
from backbone_infra.render.certificates import TLSFiles
from backbone_infra.render.kafka_acls import authorizer_properties
from backbone_infra.spec import KafkaSpec

__all__ = [
    "EXTERNAL_LISTENER_PORT",
    "FORMAT_JVM_OPTS",
    "JMX_EXPORTER_RULES",
    "JVM_HEAP",
    "KAFKA_MAIN",
    "LOG4J_CONFIG",
    "STORAGE_TOOL_MAIN",
    "DrillListener",
    "KafkaNodePorts",
    "client_properties",
    "jmx_exporter_rules",
    "jvm_command",
    "log4j_config",
    "new_cluster_id",
    "node_id",
    "node_name",
    "render_server_properties",
    "security_protocol",
    "ssl_properties",
    "storage_format_argfile",
    "storage_format_args",
]

#: Broker entry point of Kafka 4.x (the distribution's kafka-server-start.sh runs it).
KAFKA_MAIN = "kafka.Kafka"
#: The storage tool behind kafka-storage.sh.
STORAGE_TOOL_MAIN = "kafka.tools.StorageTool"
#: Small heap for a shared 2-core box; Kafka leans on the page cache, not the heap.
JVM_HEAP = ("-Xms256m", "-Xmx512m")
#: The storage tool runs for a second: C1 only and a small heap start it fastest.
FORMAT_JVM_OPTS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx256m")

_ASSETS = Path(__file__).resolve().parents[1] / "kafka"
#: The JMX exporter rules every target ships; the metric names they emit are
#: listed at the top of the file (dashboards and alert rules select them).
JMX_EXPORTER_RULES = _ASSETS / "jmx-exporter.yml"
#: Log4j 2 configuration of every node: everything to stdout.
LOG4J_CONFIG = _ASSETS / "log4j2.properties"
_LOOPBACK = "127.0.0.1"

#: The port of the ``EXTERNAL`` listener, where a target publishes one.
EXTERNAL_LISTENER_PORT = 9095


@dataclass(frozen=True)
class DrillListener:
    """The ``DRILL`` listener of one node: it binds ``port``; clients are told
    ``advertised`` (where a drill's proxy forwards to ``port``)."""

    port: int
    advertised: HostPort


_SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
_PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"


@dataclass(frozen=True)
class KafkaNodePorts:
    """The loopback ports of one node."""

    client: int
    internal: int
    controller: int
    metrics: int

    def as_dict(self) -> dict[str, int]:
        return {
            "client": self.client,
            "internal": self.internal,
            "controller": self.controller,
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, ports: dict[str, int]) -> KafkaNodePorts:
        return cls(
            client=ports["client"],
            internal=ports["internal"],
            controller=ports["controller"],
            metrics=ports["metrics"],
        )


def node_name(node: int) -> str:
    """``kafka-1`` for node id 1: node ids start at 1 and match the names."""
    return f"kafka-{node}"


def node_id(name: str) -> int:
    """The KRaft node id of ``kafka-N``."""
    prefix, _, number = name.rpartition("-")
    if prefix != "kafka" or not number.isdigit():
        raise ValueError(f"{name!r} is not a Kafka node name (kafka-1, kafka-2 ...)")
    return int(number)


def new_cluster_id() -> str:
    """A fresh cluster id in Kafka's form: a random UUID, URL-safe base64, no padding.

    Like Kafka's own ``Uuid.randomUuid`` it never starts with ``-`` (which a
    command line would take for an option).
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def jmx_exporter_rules() -> str:
    """The text of the JMX exporter rules (:data:`JMX_EXPORTER_RULES`)."""
    return JMX_EXPORTER_RULES.read_text()


def log4j_config() -> str:
    """The text of the nodes' Log4j 2 configuration (:data:`LOG4J_CONFIG`)."""
    return LOG4J_CONFIG.read_text()


def _jaas(module: str, **options: str) -> str:
    opts = "".join(f' {key}="{value}"' for key, value in options.items())
    return f"{module} required{opts};"


def security_protocol(tls: TLSFiles | bool | None) -> str:
    """``SASL_SSL`` with TLS, ``SASL_PLAINTEXT`` without: every listener's protocol."""
    return "SASL_SSL" if tls else "SASL_PLAINTEXT"


def ssl_properties(tls: TLSFiles) -> list[str]:
    """The node's TLS settings, for its listeners and for the links it opens
    itself (replication, the quorum): PEM keystore and truststore, host names
    verified, no client certificates (clients authenticate with SASL)."""
    return [
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={tls.keystore}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={tls.ca}",
        "ssl.endpoint.identification.algorithm=https",
        "ssl.client.auth=none",
        "ssl.enabled.protocols=TLSv1.3,TLSv1.2",
    ]


def client_properties(
    *, mechanism: str, username: str, password: str, truststore: str | None
) -> str:
    """``--command-config`` / ``--producer.config`` of Kafka's own CLI tools:
    SASL as ``username`` and, with ``truststore`` (the CA bundle's path), TLS
    verifying the brokers' certificates and host names. Holds a password:
    write it 0600 / mount it as a secret."""
    module = _PLAIN_MODULE if mechanism == "PLAIN" else _SCRAM_MODULE
    lines = [
        f"security.protocol={security_protocol(truststore is not None)}",
        f"sasl.mechanism={mechanism}",
        f"sasl.jaas.config={_jaas(module, username=username, password=password)}",
    ]
    if truststore is not None:
        lines += [
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={truststore}",
            "ssl.endpoint.identification.algorithm=https",
        ]
    return "\n".join(lines) + "\n"


def render_server_properties(
    spec: KafkaSpec,
    *,
    node: int,
    ports: Mapping[int, KafkaNodePorts],
    data_dir: PurePath | str,
    client_password: str,
    admin_password: str,
    hosts: Mapping[int, str] | None = None,
    bind_host: str = _LOOPBACK,
    external: HostPort | None = None,
    drill: DrillListener | None = None,
    tls: TLSFiles | None = None,
    extra_users: Mapping[str, str] | None = None,
) -> str:
    """``server.properties`` of node ``node`` (1-based) in a cluster whose nodes
    have ``ports``.

    ``extra_users``: the per-job principals (user name -> password); with
    ``PLAIN`` they join the client listener's user table (SCRAM users go into
    the metadata instead: :func:`storage_format_args`).

    ``hosts``: where each node is reached by the others and advertised to
    clients (default: loopback for all). ``bind_host``: the address the
    listeners bind (``""`` binds every interface). ``external``: the published
    address of this node's ``EXTERNAL`` listener, if the target has one (it
    listens on :data:`EXTERNAL_LISTENER_PORT`). ``drill``: this node's
    ``DRILL`` listener, if the target gives its drills one. ``tls``: every
    listener ``SASL_SSL`` with these files (:func:`ssl_properties`).
    Holds the admin password (JAAS inline): write it 0600.
    """
    own = ports[node]
    host = (hosts or {}).get(node, _LOOPBACK)
    mechanism = spec.sasl_mechanism
    mech_key = mechanism.lower()
    rf = spec.replication_factor
    isr = spec.min_insync_replicas
    voters = ",".join(
        f"{n}@{(hosts or {}).get(n, _LOOPBACK)}:{p.controller}" for n, p in sorted(ports.items())
    )
    if mechanism == "PLAIN":
        # PLAIN keeps its user table in the JAAS config of the listener itself.
        client_jaas = _jaas(
            _PLAIN_MODULE,
            **{
                f"user_{spec.username}": client_password,
                f"user_{spec.admin_username}": admin_password,
                **{f"user_{u}": pw for u, pw in (extra_users or {}).items()},
            },
        )
        internal_jaas = _jaas(
            _PLAIN_MODULE,
            username=spec.admin_username,
            password=admin_password,
            **{f"user_{spec.admin_username}": admin_password},
        )
    else:
        # SCRAM users live in the metadata log (added at format time).
        client_jaas = _jaas(_SCRAM_MODULE)
        internal_jaas = _jaas(_SCRAM_MODULE, username=spec.admin_username, password=admin_password)
    controller_jaas = _jaas(
        _PLAIN_MODULE,
        username=spec.admin_username,
        password=admin_password,
        **{f"user_{spec.admin_username}": admin_password},
    )
    listeners = [
        f"CLIENT://{bind_host}:{own.client}",
        f"INTERNAL://{bind_host}:{own.internal}",
        f"CONTROLLER://{bind_host}:{own.controller}",
    ]
    advertised = [f"CLIENT://{host}:{own.client}", f"INTERNAL://{host}:{own.internal}"]
    protocol = security_protocol(tls)
    protocols = [f"CLIENT:{protocol}", f"INTERNAL:{protocol}", f"CONTROLLER:{protocol}"]
    external_lines: list[str] = []
    if external is not None:
        listeners.append(f"EXTERNAL://{bind_host}:{EXTERNAL_LISTENER_PORT}")
        advertised.append(f"EXTERNAL://{external}")
        protocols.append(f"EXTERNAL:{protocol}")
        external_lines = [
            f"listener.name.external.sasl.enabled.mechanisms={mechanism}",
            f"listener.name.external.{mech_key}.sasl.jaas.config={client_jaas}",
        ]
    if drill is not None:
        listeners.append(f"DRILL://{bind_host}:{drill.port}")
        advertised.append(f"DRILL://{drill.advertised}")
        protocols.append(f"DRILL:{protocol}")
        external_lines += [
            f"listener.name.drill.sasl.enabled.mechanisms={mechanism}",
            f"listener.name.drill.{mech_key}.sasl.jaas.config={client_jaas}",
        ]
    lines = [
        "# Rendered by backbone_infra.render.kafka; contains credentials: keep 0600.",
        "process.roles=broker,controller",
        f"node.id={node}",
        f"controller.quorum.voters={voters}",
        "controller.listener.names=CONTROLLER",
        f"listeners={','.join(listeners)}",
        f"advertised.listeners={','.join(advertised)}",
        f"listener.security.protocol.map={','.join(protocols)}",
        "inter.broker.listener.name=INTERNAL",
        f"sasl.enabled.mechanisms={mechanism}",
        f"listener.name.client.sasl.enabled.mechanisms={mechanism}",
        f"listener.name.client.{mech_key}.sasl.jaas.config={client_jaas}",
        f"listener.name.internal.sasl.enabled.mechanisms={mechanism}",
        f"sasl.mechanism.inter.broker.protocol={mechanism}",
        f"listener.name.internal.{mech_key}.sasl.jaas.config={internal_jaas}",
        "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
        "sasl.mechanism.controller.protocol=PLAIN",
        f"listener.name.controller.plain.sasl.jaas.config={controller_jaas}",
        *external_lines,
        *(ssl_properties(tls) if tls is not None else []),
        # Least privilege: ACLs decide (backbone_infra.render.kafka_acls); only the
        # admin user (brokers, provisioning) is a super user.
        *authorizer_properties(spec),
        f"log.dirs={data_dir}",
        # Durability defaults from the spec, for topics created without them
        # and for Kafka's internal topics.
        f"default.replication.factor={rf}",
        f"min.insync.replicas={isr}",
        f"offsets.topic.replication.factor={rf}",
        f"transaction.state.log.replication.factor={rf}",
        f"transaction.state.log.min.isr={isr}",
        f"share.coordinator.state.topic.replication.factor={rf}",
        f"share.coordinator.state.topic.min.isr={isr}",
        "unclean.leader.election.enable=false",
        # Topics come from the spec only; a typo must not create one.
        "auto.create.topics.enable=false",
        # Fast local recovery, same semantics: a killed or paused broker is
        # fenced (and its partitions lead elsewhere) after ~4 s instead of 9 s;
        # a stuck follower leaves the ISR after 10 s instead of 30 s. The quorum
        # election timeout keeps its 1 s default.
        "broker.heartbeat.interval.ms=1000",
        "broker.session.timeout.ms=4000",
        "replica.lag.time.max.ms=10000",
        # Requests a broker forwards to the active controller (DescribeQuorum,
        # CreateTopics ...) give up on a paused or dead controller after 5 s
        # instead of 30 s and go to the newly elected one: measured, the
        # quorum's new leader was reported 16 s after pausing the controller
        # instead of 45 s.
        "controller.socket.timeout.ms=5000",
        # A consumer group starts at once instead of waiting 3 s for members.
        "group.initial.rebalance.delay.ms=0",
        # Fewer threads for a 2-core machine running several stacks.
        "num.network.threads=2",
        "num.io.threads=4",
        "background.threads=4",
        "num.replica.fetchers=1",
        "num.recovery.threads.per.data.dir=1",
        "log.cleaner.threads=1",
        "",
    ]
    return "\n".join(lines)


def storage_format_args(
    spec: KafkaSpec,
    *,
    config: PurePath | str,
    cluster_id: str,
    client_password: str,
    admin_password: str,
    monitor_password: str | None = None,
    extra_users: Mapping[str, str] | None = None,
) -> list[str]:
    """Arguments of ``kafka.tools.StorageTool`` that format one node's storage.

    With SCRAM, the users' credentials go into the initial metadata (so the
    inter-broker listener can authenticate before any broker ran); the
    monitoring user's too when ``monitor_password`` is given, and each of
    ``extra_users`` (the per-job principals, name -> password). These hold
    passwords: pass them through a 0600 argument file, never a command line.
    """
    args = [STORAGE_TOOL_MAIN, "format", "--config", str(config), "--cluster-id", cluster_id]
    if spec.sasl_mechanism.startswith("SCRAM"):
        users = [(spec.username, client_password), (spec.admin_username, admin_password)]
        if monitor_password is not None:
            users.append((spec.monitor_username, monitor_password))
        users += list((extra_users or {}).items())
        for user, password in users:
            args += ["--add-scram", f"{spec.sasl_mechanism}=[name={user},password={password}]"]
    return args


def storage_format_argfile(
    spec: KafkaSpec,
    *,
    config: PurePath | str,
    cluster_id: str,
    client_password: str,
    admin_password: str,
    monitor_password: str | None = None,
    extra_users: Mapping[str, str] | None = None,
) -> str:
    """A ``java @argfile`` running :func:`storage_format_args`: ``java
    FORMAT_JVM_OPTS -cp LIBS/* @file``. Holds passwords: write it 0600."""
    args = storage_format_args(
        spec,
        config=config,
        cluster_id=cluster_id,
        client_password=client_password,
        admin_password=admin_password,
        monitor_password=monitor_password,
        extra_users=extra_users,
    )
    return "\n".join(_argfile_line(a) for a in args) + "\n"


def _argfile_line(arg: str) -> str:
    # java @argfile syntax: double quotes group, backslash escapes.
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def jvm_command(
    *,
    libs: PurePath,
    config: PurePath | str,
    metrics_port: int,
    exporter_config: PurePath | str,
    log4j_config: PurePath | str,
    agent: PurePath | None = None,
    metrics_host: str = _LOOPBACK,
) -> list[str]:
    """The command line of one node. No secrets: they are in ``config`` (0600).

    ``agent``: the JMX exporter javaagent jar (default: the one in ``libs``).
    ``metrics_host``: the address its HTTP server binds (``0.0.0.0`` in a
    container, where Prometheus scrapes from another host).
    """
    if agent is None:
        agent = next(iter(sorted(Path(libs).glob("jmx_prometheus_javaagent-*.jar"))), None)
    if agent is None:
        raise FileNotFoundError(f"no jmx_prometheus_javaagent jar in {libs}")
    return [
        "java",
        *JVM_HEAP,
        # Serial GC: the smallest footprint and no concurrent GC threads
        # competing for two cores; pauses are short with a 512 MB heap.
        "-XX:+UseSerialGC",
        # C1 only: three brokers starting at once on two shared cores spent
        # most of their start-up in C2 compiler threads (a 3-broker cluster was
        # ready in 10-13 s with C1 against 17-31 s with C2 under the same load),
        # and ProducerPerformance showed no throughput loss within the noise.
        "-XX:TieredStopAtLevel=1",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j_config}",
        # [host:]port:config; locally on loopback only.
        f"-javaagent:{agent}={metrics_host}:{metrics_port}:{exporter_config}",
        "-cp",
        f"{libs}/*",
        KAFKA_MAIN,
        str(config),
    ]
