"""``KafkaCluster``: KRaft brokers in combined mode, SASL/SCRAM, topics, JMX metrics.

Listeners:

- ``CLIENT`` (``spec.kafka.client_port``, SASL/SCRAM): clients inside the
  network, advertised as each broker's in-network name;
- ``INTERNAL`` (``spec.kafka.internal_port``, SASL/SCRAM as ``admin``):
  replication between brokers, the topic job;
- ``EXTERNAL`` (9095, SASL/SCRAM), only where the target publishes ports:
  advertised as the published address (``127.0.0.1:<host port>`` on Docker),
  so a client outside the network is never handed an address it cannot reach;
- ``CONTROLLER`` (``spec.kafka.controller_port``): the KRaft quorum, reachable
  by the brokers only (NetworkPolicy on Kubernetes).

SCRAM users (the client user and ``admin``) are written into the metadata log
when a broker formats its storage (``kafka-storage format --add-scram``), so
they exist before the first listener accepts a connection. Topics come from
``spec.kafka.topics`` and are created by a one-shot job running
``kafka-topics.sh`` with the admin credentials.

Metrics: the Prometheus JMX exporter javaagent inside each broker (the same
agent and metric names as the local environment, which the alert rules use),
fetched once per volume by an init step and checked against a pinned SHA-256.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass

import pulumi

from backbone.connections import HostPort
from infra.monitoring.prometheus import JOB_KAFKA
from infra.spec import StackSpec
from infra.targets.workload import (
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
EXTERNAL_PORT = 9095
KAFKA_UID = 1000
KAFKA_HOME = "/opt/kafka"
VOLUME = "/var/lib/kafka"
CONF_DIR = "/opt/backbone/kafka"
SECRET_DIR = "/run/secrets/kafka"
AGENT_FETCH_IMAGE = "curlimages/curl:8.11.1"
#: (version, SHA-256) of io.prometheus.jmx:jmx_prometheus_javaagent on Maven Central.
JMX_AGENT = ("1.0.1", "7d61f737fd661610ccc14aea79764faa1ea94a340cbc8f0029b3d2edea3d80c1")
JMX_JAR = f"jmx_prometheus_javaagent-{JMX_AGENT[0]}.jar"

#: JMX exporter rules: ``kafka.<domain><type=T, name=N><>Value|Count`` becomes
#: ``kafka_<domain>_<t>_<n>`` (lower case), the names the alert rules select.
JMX_EXPORTER_CONFIG = """\
lowercaseOutputName: true
lowercaseOutputLabelNames: true
rules:
  - pattern: 'kafka\\.(\\w+)<type=(.+), name=(.+), (.+)=(.+), (.+)=(.+)><>(Value|Count)'
    name: kafka_$1_$2_$3
    type: GAUGE
    labels:
      "$4": "$5"
      "$6": "$7"
  - pattern: 'kafka\\.(\\w+)<type=(.+), name=(.+), (.+)=(.+)><>(Value|Count)'
    name: kafka_$1_$2_$3
    type: GAUGE
    labels:
      "$4": "$5"
  - pattern: 'kafka\\.(\\w+)<type=(.+), name=(.+)><>(Value|Count)'
    name: kafka_$1_$2_$3
    type: GAUGE
"""


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


def _jaas(user: str, password: str) -> str:
    return (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{user}" password="{password}";'
    )


def _server_properties(spec: StackSpec, backend: Backend, external: bool) -> str:
    k = spec.kafka
    voters = ",".join(
        f"{i}@{backend.replica_host(SERVICE, i)}:{k.controller_port}" for i in ordinals(k.brokers)
    )
    listeners = [
        f"CLIENT://:{k.client_port}",
        f"INTERNAL://:{k.internal_port}",
        f"CONTROLLER://:{k.controller_port}",
    ]
    protocols = ["CLIENT:SASL_PLAINTEXT", "INTERNAL:SASL_PLAINTEXT", "CONTROLLER:PLAINTEXT"]
    if external:
        listeners.append(f"EXTERNAL://:{EXTERNAL_PORT}")
        protocols.append("EXTERNAL:SASL_PLAINTEXT")
    mech = k.sasl_mechanism.lower()
    lines = [
        "process.roles=broker,controller",
        f"controller.quorum.voters={voters}",
        f"listeners={','.join(listeners)}",
        f"listener.security.protocol.map={','.join(protocols)}",
        "inter.broker.listener.name=INTERNAL",
        "controller.listener.names=CONTROLLER",
        f"sasl.enabled.mechanisms={k.sasl_mechanism}",
        f"sasl.mechanism.inter.broker.protocol={k.sasl_mechanism}",
        f"listener.name.client.{mech}.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        f"super.users=User:{ADMIN_USER}",
        f"log.dirs={VOLUME}/data",
        f"num.partitions={k.topics[0].partitions}",
        f"default.replication.factor={k.replication_factor}",
        f"min.insync.replicas={k.min_insync_replicas}",
        f"offsets.topic.replication.factor={k.replication_factor}",
        f"transaction.state.log.replication.factor={k.replication_factor}",
        f"transaction.state.log.min.isr={k.min_insync_replicas}",
        "auto.create.topics.enable=false",
        "unclean.leader.election.enable=false",
        "broker.session.timeout.ms=9000",
        "broker.heartbeat.interval.ms=2000",
        "controller.quorum.election.timeout.ms=1000",
    ]
    if external:
        lines.append(
            f"listener.name.external.{mech}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        )
    return "\n".join(lines) + "\n"


def _node_properties(spec: StackSpec, backend: Backend, ordinal: int) -> str:
    k = spec.kafka
    host = backend.replica_host(SERVICE, ordinal)
    advertised = [f"CLIENT://{host}:{k.client_port}", f"INTERNAL://{host}:{k.internal_port}"]
    ext = backend.external(SERVICE, ordinal, EXTERNAL_PORT)
    if ext is not None:
        advertised.append(f"EXTERNAL://{ext}")
    return f"node.id={ordinal}\nadvertised.listeners={','.join(advertised)}\n"


START_SCRIPT = f"""#!/bin/sh
# Start one KRaft node (broker + controller): assemble its config, format the
# storage once (creating the SCRAM users), then run the broker.
set -eu
ORD="${{HOSTNAME##*-}}"
CONF={VOLUME}/server.properties
umask 077
cat {CONF_DIR}/server.properties "{CONF_DIR}/node-$ORD.properties" \\
    {SECRET_DIR}/listener-jaas.properties > "$CONF"
if [ ! -f {VOLUME}/data/meta.properties ]; then
  set --
  while IFS= read -r user; do
    [ -n "$user" ] && set -- "$@" --add-scram "$user"
  done < {SECRET_DIR}/scram-users
  {KAFKA_HOME}/bin/kafka-storage.sh format --cluster-id "$CLUSTER_ID" --config "$CONF" \\
      --ignore-formatted "$@"
fi
export KAFKA_HEAP_OPTS="$BROKER_HEAP_OPTS"
export KAFKA_OPTS="-javaagent:{VOLUME}/jmx/{JMX_JAR}=$JMX_EXPORTER_PORT:{CONF_DIR}/jmx-exporter.yml"
exec {KAFKA_HOME}/bin/kafka-server-start.sh "$CONF"
"""


def _agent_script() -> str:
    version, sha = JMX_AGENT
    jar = JMX_JAR
    url = (
        f"https://repo1.maven.org/maven2/io/prometheus/jmx/jmx_prometheus_javaagent/{version}/{jar}"
    )
    return (
        f"set -eu; mkdir -p {VOLUME}/jmx {VOLUME}/data; cd {VOLUME}/jmx; "
        f"if ! echo '{sha}  {jar}' | sha256sum -c -s; then "
        f"curl -fsSL --retry 5 -o {jar} {url}; echo '{sha}  {jar}' | sha256sum -c -s; fi; "
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
        admin_props = admin.apply(
            lambda a: (
                f"security.protocol=SASL_PLAINTEXT\nsasl.mechanism={mech}\n"
                f"sasl.jaas.config={_jaas(ADMIN_USER, a)}\n"
            )
        )
        scram_users = pulumi.Output.all(password, admin).apply(
            lambda pw: (
                f"{mech}=[name={k.username},password={pw[0]}]\n"
                f"{mech}=[name={ADMIN_USER},password={pw[1]}]\n"
            )
        )
        listener_jaas = admin.apply(
            lambda a: (
                f"listener.name.internal.{mech.lower()}.sasl.jaas.config={_jaas(ADMIN_USER, a)}\n"
            )
        )
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
                    image=AGENT_FETCH_IMAGE,
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
                    env={
                        "CLUSTER_ID": cluster_id(spec.name),
                        # Read by start.sh only: the broker JVM's heap and JMX agent
                        # must not reach the probe's tool JVM through the env.
                        "BROKER_HEAP_OPTS": "-Xms512m -Xmx512m",
                        "JMX_EXPORTER_PORT": str(k.exporter_port),
                    },
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
                        File(
                            CONF_DIR,
                            "server.properties",
                            _server_properties(spec, backend, external),
                        ),
                        *(
                            File(
                                CONF_DIR, f"node-{i}.properties", _node_properties(spec, backend, i)
                            )
                            for i in ordinals(k.brokers)
                        ),
                        File(CONF_DIR, "start.sh", START_SCRIPT),
                        File(CONF_DIR, "jmx-exporter.yml", JMX_EXPORTER_CONFIG),
                        secret_file(SECRET_DIR, "listener-jaas.properties", listener_jaas),
                        secret_file(SECRET_DIR, "scram-users", scram_users),
                        secret_file(SECRET_DIR, "admin.properties", admin_props),
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
        self.security_protocol = "SASL_PLAINTEXT"
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
