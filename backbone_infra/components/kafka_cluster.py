"""``KafkaCluster``: KRaft brokers in combined mode, SASL/SCRAM, topics, JMX metrics.

Each node's ``server.properties`` (JAAS included), its storage-format
arguments, its JVM command line and the JMX exporter rules come from
:mod:`backbone_infra.render.kafka`, the renderer the local nodes use; the container
runs ``java ... kafka.Kafka`` on the mounted file (no image entrypoint).

Listeners (as locally, see :mod:`backbone_infra.render.kafka`):

- ``CLIENT`` (``spec.kafka.client_port``, SASL/SCRAM): clients inside the
  network, advertised as each broker's in-network name;
- ``INTERNAL`` (``spec.kafka.internal_port``, SASL/SCRAM as ``admin``):
  replication between brokers, the topic job;
- ``EXTERNAL`` (9095, SASL/SCRAM), only where the target publishes ports:
  advertised as the published address (``127.0.0.1:<host port>`` on Docker),
  so a client outside the network is never handed an address it cannot reach;
- ``CONTROLLER`` (``spec.kafka.controller_port``, SASL/PLAIN as ``admin``): the
  KRaft quorum, reachable by the brokers only (NetworkPolicy on Kubernetes).

SCRAM users (the client user and ``admin``) are written into the metadata log
when a broker formats its storage (``StorageTool format --add-scram``), so
they exist before the first listener accepts a connection. Topics come from
``spec.kafka.topics`` and are created by a one-shot job running
``kafka-topics.sh`` with the admin credentials, which then grants the
application principal its ACLs with ``kafka-acls.sh``
(:mod:`infra.render.kafka_acls`).

Metrics: the Prometheus JMX exporter javaagent inside each broker with
``backbone_infra/kafka/jmx-exporter.yml`` (the same rules and metric names as the local
environment, which the dashboards and alert rules use), fetched once per volume
by an init step and checked against a pinned SHA-256.
"""

from __future__ import annotations

import base64
import shlex
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import PurePosixPath

import pulumi

from backbone.connections import HostPort
from backbone_infra.components.certificates import StackCertificates, service_tls_files
from backbone_infra.render.certificates import TLSFiles
from backbone_infra.render.kafka import (
    EXTERNAL_LISTENER_PORT,
    FORMAT_JVM_OPTS,
    KafkaNodePorts,
    client_properties,
    jmx_exporter_rules,
    jvm_command,
    log4j_config,
    render_server_properties,
    security_protocol,
    storage_format_argfile,
)
from backbone_infra.render.kafka_acls import acl_cli_args, stack_acls
from backbone_infra.render.prometheus import JOB_KAFKA
from backbone_infra.spec import StackSpec
from backbone_infra.targets.workload import (
    FIRST_ORDINAL,
    SIDECAR_RESOURCES,
    Backend,
    Container,
    File,
    InitJob,
    InitStep,
    Probe,
    StatefulService,
    ordinals,
    secret_file,
)

__all__ = ["EXTERNAL_PORT", "JMX_AGENT", "KafkaCluster", "KafkaClusterArgs", "cluster_id"]

SERVICE = "kafka"
TOPICS_JOB = "kafka-topics"
ADMIN_USER = "admin"
EXTERNAL_PORT = EXTERNAL_LISTENER_PORT
KAFKA_UID = 1000
KAFKA_HOME = "/opt/kafka"
VOLUME = "/var/lib/kafka"
DATA_DIR = f"{VOLUME}/data"
CONF_DIR = "/opt/backbone/kafka"
SECRET_DIR = "/run/secrets/kafka"
#: (version, SHA-256) of io.prometheus.jmx:jmx_prometheus_javaagent on Maven Central.
JMX_AGENT = ("1.0.1", "7d61f737fd661610ccc14aea79764faa1ea94a340cbc8f0029b3d2edea3d80c1")
JMX_JAR = f"jmx_prometheus_javaagent-{JMX_AGENT[0]}.jar"


def cluster_id(stack: str) -> str:
    """A stable KRaft cluster id (base64url of a UUID) derived from the stack name."""
    raw = uuid.uuid5(uuid.NAMESPACE_DNS, f"{stack}.kafka.backbone").bytes
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass(frozen=True)
class KafkaClusterArgs:
    spec: StackSpec
    backend: Backend
    password: pulumi.Input[str]
    admin_password: pulumi.Input[str]
    #: The lag exporter's SCRAM user (``spec.kafka.monitor_username``).
    monitor_password: pulumi.Input[str]
    #: The stack's certificates: SASL_SSL on every listener (``None`` only with ``--no-tls``).
    certificates: StackCertificates | None = None
    #: The per-job principals' passwords (writer, consumer:
    #: backbone_infra.render.kafka_acls); ``None`` formats no such users.
    job_passwords: tuple[pulumi.Input[str], pulumi.Input[str]] | None = None


def _jaas(user: str, password: str) -> str:
    return (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{user}" password="{password}";'
    )


def _node_ports(spec: StackSpec) -> KafkaNodePorts:
    k = spec.kafka
    return KafkaNodePorts(
        client=k.client_port,
        internal=k.internal_port,
        controller=k.controller_port,
        metrics=k.exporter_port,
    )


def _config_path(ordinal: int | str) -> str:
    return f"{SECRET_DIR}/server-{ordinal}.properties"


def _server_properties(
    spec: StackSpec, backend: Backend, tls: TLSFiles | None, ordinal: int, pw: list[str]
) -> str:
    k = spec.kafka
    return render_server_properties(
        k,
        node=ordinal,
        ports={i: _node_ports(spec) for i in ordinals(k.brokers)},
        hosts={i: backend.replica_host(SERVICE, i) for i in ordinals(k.brokers)},
        bind_host="",
        data_dir=DATA_DIR,
        client_password=pw[0],
        admin_password=pw[1],
        external=backend.external(SERVICE, ordinal, EXTERNAL_PORT),
        tls=tls,
        extra_users=_job_users(spec, pw),
    )


def _format_args(spec: StackSpec, ordinal: int, pw: list[str]) -> str:
    return storage_format_argfile(
        spec.kafka,
        config=_config_path(ordinal),
        cluster_id=cluster_id(spec.name),
        client_password=pw[0],
        admin_password=pw[1],
        monitor_password=pw[2],
        extra_users=_job_users(spec, pw),
    )


def _job_users(spec: StackSpec, pw: list[str]) -> dict[str, str]:
    """The writer's and the consumer's logins, when the stack passed them (``pw[3:5]``)."""
    k = spec.kafka
    return dict(zip((k.writer_username, k.consumer_username), pw[3:5], strict=False))


def _start_script(spec: StackSpec) -> str:
    """Format the node's storage once, then run the JVM the local nodes run."""
    marker = "/__server.properties__"
    command = jvm_command(
        libs=PurePosixPath(f"{KAFKA_HOME}/libs"),
        config=marker,
        metrics_port=spec.kafka.exporter_port,
        exporter_config=f"{CONF_DIR}/jmx-exporter.yml",
        log4j_config=f"{CONF_DIR}/log4j2.properties",
        agent=PurePosixPath(f"{VOLUME}/jmx/{JMX_JAR}"),
        metrics_host="0.0.0.0",
    )
    run = " ".join('"$CONF"' if a == marker else shlex.quote(a) for a in command)
    fmt = " ".join(shlex.quote(a) for a in FORMAT_JVM_OPTS)
    return f"""#!/bin/sh
# Start one KRaft node (broker + controller) from its rendered server.properties:
# format the storage once (creating the SCRAM users), then run the broker.
set -eu
umask 077
ORD="${{HOSTNAME##*-}}"
CONF="{SECRET_DIR}/server-$ORD.properties"
mkdir -p {DATA_DIR}
if [ ! -f {DATA_DIR}/meta.properties ]; then
  java {fmt} -cp '{KAFKA_HOME}/libs/*' "@{SECRET_DIR}/format-$ORD.args"
fi
exec {run}
"""


#: Where the project's Kafka image keeps the agent (images/kafka/Containerfile).
AGENT_IN_IMAGE = "/opt/kafka/jmx_prometheus_javaagent.jar"


def _agent_script() -> str:
    """Copy the JMX agent out of the project's Kafka image onto the volume and check
    it is the pinned one: no download at pod start."""
    _, sha = JMX_AGENT
    jar = JMX_JAR
    return (
        f"set -eu; mkdir -p {VOLUME}/jmx {VOLUME}/data; cd {VOLUME}/jmx; "
        f"{{ cp -L {AGENT_IN_IMAGE} {jar} && echo '{sha}  {jar}' | sha256sum -c --status; }} || "
        f"{{ echo 'the image holds no pinned {jar} (kafka_cluster.JMX_AGENT)' >&2; exit 1; }}; "
        f"chown -R {KAFKA_UID}:{KAFKA_UID} {VOLUME}"
    )


def _topics_script(spec: StackSpec, backend: Backend) -> str:
    k = spec.kafka
    boot = ",".join(
        f"{backend.replica_host(SERVICE, i)}:{k.internal_port}" for i in ordinals(k.brokers)
    )
    tool = (
        f"{KAFKA_HOME}/bin/kafka-topics.sh --bootstrap-server {boot} "
        f"--command-config {SECRET_DIR}/admin.properties"
    )
    lines = [
        "#!/bin/sh",
        "# Create the stack's topics once the brokers answer (idempotent).",
        "set -eu",
        "n=0",
        f"until {tool} --list >/dev/null 2>&1; do",
        '  n=$((n + 1)); [ "$n" -lt 100 ] || { echo "brokers never answered" >&2; exit 1; }',
        "  sleep 3",
        "done",
    ]
    for t in k.topics:
        lines.append(
            f"{tool} --create --if-not-exists --topic {t.name} --partitions {t.partitions} "
            f"--replication-factor {t.replication_factor} "
            f"--config min.insync.replicas={t.min_insync_replicas} "
            f"--config retention.ms={t.retention_ms} --config cleanup.policy={t.cleanup_policy}"
        )
    # The application's ACLs (StandardAuthorizer denies everything else).
    acls = tool.replace("kafka-topics.sh", "kafka-acls.sh")
    for rule in stack_acls(k):
        lines.append(f"{acls} {shlex.join(acl_cli_args(rule))}")
    return "\n".join(lines) + "\n"


class KafkaCluster(pulumi.ComponentResource):
    """KRaft brokers (combined mode) with SCRAM users, the spec's topics and JMX metrics."""

    bootstrap_servers: list[HostPort]
    internal_bootstrap: list[str]
    security_protocol: str
    sasl_mechanism: str
    username: str
    password: pulumi.Output[str]
    services: list[StatefulService]

    def __init__(
        self, name: str, args: KafkaClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("backbone:infra:KafkaCluster", name, None, opts)
        spec, backend, k = args.spec, args.backend, args.spec.kafka
        password = pulumi.Output.secret(args.password)
        admin = pulumi.Output.secret(args.admin_password)
        external = backend.external(SERVICE, FIRST_ORDINAL, EXTERNAL_PORT) is not None
        mech = k.sasl_mechanism
        certs = args.certificates
        tls = service_tls_files(SERVICE) if certs is not None else None
        tls_mounts = certs.files(SERVICE) if certs is not None else ()
        # Kafka's own CLI tools (the probe, the topics job): the rendered
        # client settings, with the stack's CA as a PEM truststore.
        admin_props = admin.apply(
            lambda a: client_properties(
                mechanism=mech,
                username=ADMIN_USER,
                password=a,
                truststore=tls.ca if tls is not None else None,
            )
        )
        monitor = pulumi.Output.secret(args.monitor_password)
        jobs = [pulumi.Output.secret(p) for p in args.job_passwords or ()]
        both = pulumi.Output.all(password, admin, monitor, *jobs)
        broker = StatefulService(
            name=SERVICE,
            replicas=k.brokers,
            client_ports={"client": k.client_port},
            metrics_port=k.exporter_port,
            metrics_job=JOB_KAFKA,
            storage=spec.resources.storage,
            peers=(TOPICS_JOB,),
            fs_group=KAFKA_UID,
            published={"external": EXTERNAL_PORT} if external else {},
            init=(
                InitStep(
                    name="jmx-agent",
                    image=spec.images.kafka_jmx_agent,
                    command=("sh", "-c", _agent_script()),
                    resources=SIDECAR_RESOURCES,
                ),
            ),
            containers=(
                Container(
                    name="kafka",
                    image=spec.images.kafka,
                    ports={
                        "client": k.client_port,
                        "internal": k.internal_port,
                        "controller": k.controller_port,
                        "metrics": k.exporter_port,
                        **({"external": EXTERNAL_PORT} if external else {}),
                    },
                    command=("sh", f"{CONF_DIR}/start.sh"),
                    probe=Probe(
                        command=(
                            f"{KAFKA_HOME}/bin/kafka-broker-api-versions.sh",
                            "--bootstrap-server",
                            f"localhost:{k.internal_port}",
                            "--command-config",
                            f"{SECRET_DIR}/admin.properties",
                        ),
                        initial_delay_s=30,
                        period_s=30,
                        timeout_s=25,
                    ),
                    resources=spec.resources,
                    data_dir=VOLUME,
                    uid=KAFKA_UID,
                    files=(
                        File(CONF_DIR, "start.sh", _start_script(spec)),
                        # The rules the local nodes use: one file, every target.
                        File(CONF_DIR, "jmx-exporter.yml", jmx_exporter_rules()),
                        File(CONF_DIR, "log4j2.properties", log4j_config()),
                        *(
                            secret_file(
                                SECRET_DIR,
                                f"server-{i}.properties",
                                both.apply(partial(_server_properties, spec, backend, tls, i)),
                            )
                            for i in ordinals(k.brokers)
                        ),
                        *(
                            secret_file(
                                SECRET_DIR,
                                f"format-{i}.args",
                                both.apply(partial(_format_args, spec, i)),
                            )
                            for i in ordinals(k.brokers)
                        ),
                        secret_file(SECRET_DIR, "admin.properties", admin_props),
                        *tls_mounts,
                    ),
                ),
            ),
        )
        made = backend.stateful_service(broker, self).resources
        self.topics_job = backend.init_job(
            InitJob(
                name=TOPICS_JOB,
                image=spec.images.kafka,
                command=("sh", f"{CONF_DIR}/create-topics.sh"),
                resources=SIDECAR_RESOURCES.model_copy(update={"memory_limit": "512Mi"}),
                uid=KAFKA_UID,
                files=(
                    File(CONF_DIR, "create-topics.sh", _topics_script(spec, backend)),
                    secret_file(SECRET_DIR, "admin.properties", admin_props),
                    *([certs.ca_file()] if certs is not None else []),
                ),
            ),
            self,
            made,
        )
        self.services = [broker]
        port = EXTERNAL_PORT if backend.clients_outside else k.client_port
        self.bootstrap_servers = [
            backend.client_endpoint(SERVICE, i, port) for i in ordinals(k.brokers)
        ]
        self.internal_bootstrap = [
            f"{backend.replica_host(SERVICE, i)}:{k.client_port}" for i in ordinals(k.brokers)
        ]
        self.security_protocol = security_protocol(certs is not None)
        self.sasl_mechanism = mech
        self.username = k.username
        self.password = password
        self.register_outputs(
            {
                "bootstrap_servers": [str(h) for h in self.bootstrap_servers],
                "internal_bootstrap": self.internal_bootstrap,
                "security_protocol": self.security_protocol,
                "sasl_mechanism": self.sasl_mechanism,
                "username": self.username,
                "password": self.password,
                "topics": [t.name for t in k.topics],
            }
        )
