"""Apache Kafka (KRaft, combined mode) as local processes on loopback.

``kafka-1..N`` each run broker and controller in one JVM and are all voters
of the metadata quorum; the jars come from the set-up step's cache
(:func:`kafka_libs_dir`). Configuration is rendered by :mod:`backbone_infra.render.kafka`
(which the container targets use too); this module prepares the data directories,
starts the nodes together, creates the spec's topics and answers questions
about the running cluster (partition leaders, the active controller) by asking
Kafka itself through kafka-python.

Each node also gets a ``DRILL`` listener (see :mod:`backbone_infra.render.kafka`):
its own port (``ports["drill"]``) and, advertised to clients, a second port
(``ports["drill_proxy"]``) that only a network drill's Toxiproxy listens on; the
outputs document lists those in its ``drill`` section, not in ``kafka``, since
no client setting uses them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kafka.errors as kafka_errors
from kafka import KafkaAdminClient
from pydantic import SecretStr

from backbone.connections import HostPort, KafkaConnection, TopicInfo
from backbone_infra.errors import MissingBinaryError, ServiceStartError
from backbone_infra.render.kafka import (
    FORMAT_JVM_OPTS,
    JMX_EXPORTER_RULES,
    LOG4J_CONFIG,
    DrillListener,
    KafkaNodePorts,
    jvm_command,
    new_cluster_id,
    node_id,
    node_name,
    render_server_properties,
    security_protocol,
    storage_format_argfile,
)
from backbone_infra.targets.kafka_acls import grant_stack_acls, wait_until_authorized
from backbone_infra.targets.local.base import LocalService
from backbone_infra.targets.local.files import write_private
from backbone_infra.targets.local.ports import LOOPBACK, PortAllocator, is_port_conflict
from backbone_infra.targets.local.process import ProcessNode, ProcessRecord, log_tail
from backbone_infra.targets.local.service import LocalNodes, start_together

__all__ = [
    "KAFKA_VERSION",
    "LocalKafka",
    "NoLeaderError",
    "kafka_cache_dir",
    "kafka_libs_dir",
    "tls_handshakes",
]

KAFKA_VERSION = "4.1.1"
#: JMX exporter rules (shipped to every target); their metric names are
#: listed at the top of the file.
EXPORTER_CONFIG = JMX_EXPORTER_RULES

#: A JVM on a busy 2-core box can take a while; a node that is not ready in
#: this many seconds has failed.
START_TIMEOUT_S = 90.0
#: Topic leaders are elected within a second or two of creation.
TOPICS_TIMEOUT_S = 30.0
#: One readiness probe: bootstrap against one node, at most this long.
_PROBE_TIMEOUT_MS = 3000
_FORMAT_TIMEOUT_S = 120.0


class NoLeaderError(LookupError):
    """A partition has no leader right now (an election is under way, or every
    replica is down); ask again shortly."""


def kafka_cache_dir(version: str = KAFKA_VERSION) -> Path:
    """Where ``scripts/setup.d/10-kafka.sh`` puts Kafka ``version``."""
    root = os.environ.get("BACKBONE_CACHE") or str(Path.home() / ".cache" / "backbone")
    return Path(root) / f"kafka-{version}"


def kafka_libs_dir(version: str = KAFKA_VERSION) -> Path:
    """The directory holding the Kafka jars; raises :class:`MissingBinaryError`
    (which says to run ``make setup``) when the set-up step has not run."""
    home = kafka_cache_dir(version)
    libs = home / "libs"
    complete = (home / "libs.complete").exists()
    if not complete or not any(libs.glob(f"kafka_2.13-{version}.jar")):
        raise MissingBinaryError(
            f"Kafka {version} (jars)", f"{libs}; `bash scripts/setup.d/10-kafka.sh` fetches them"
        )
    return libs


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise MissingBinaryError("Java 17+ (for Kafka)", "java on PATH")
    return java


def _answering(record: ProcessRecord) -> bool:
    node = ProcessNode(record)
    return node.running() and not node.paused()


def _with_port_conflict(error: ServiceStartError) -> ServiceStartError:
    """``error`` with the line saying which port was taken moved into its tail.

    Kafka logs a bind failure and then hundreds of shutdown lines, so the tail
    alone would hide the port race the provisioner retries on.
    """
    if is_port_conflict(error.tail):
        return error
    try:
        text = error.log.read_text(errors="replace")
    except OSError:
        return error
    latest = text.rsplit("\n--- start ", 1)[-1]
    line = next((ln for ln in latest.splitlines() if is_port_conflict(ln)), None)
    if line is None:
        return error
    return ServiceStartError(
        error.node,
        f"lost a port race ({line.strip()[:200]})",
        error.log,
        f"{line}\n[...]\n{error.tail}",
    )


def tls_handshakes(server: str, ca_file: str, timeout_s: float) -> bool:
    """Whether ``server`` (``host:port``) completes a verified TLS handshake within
    ``timeout_s``: kafka-python 3.0 waits for a handshake without a deadline, so
    a port that accepts and never answers (a paused or partitioned broker) must
    be ruled out before a client is offered it."""
    host, _, port = server.rpartition(":")
    context = ssl.create_default_context(cafile=ca_file)
    try:
        with (
            socket.create_connection((host, int(port)), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except (OSError, ssl.SSLError):
        return False


class _Admin(KafkaAdminClient):
    """``KafkaAdminClient`` that releases its I/O thread when bootstrap fails
    (the stock constructor leaves it running, and probes fail many times)."""

    def __init__(self, **configs: Any) -> None:
        try:
            super().__init__(**configs)
        except BaseException:
            self._closed = False
            with contextlib.suppress(Exception):
                self.close()
            raise


class LocalKafka(LocalNodes):
    """Kafka of one local stack: ``kafka-1..N`` in KRaft combined mode."""

    service = "kafka"

    @property
    def stack_dir(self) -> Path:
        return self.dir

    # -- layout ----------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [node_name(n) for n in range(1, self.spec.kafka.brokers + 1)]

    def node_dir(self, name: str) -> Path:
        """``stack_dir/kafka-N``: ``server.properties`` (0600) and ``data/``."""
        return self.stack_dir / name

    # -- prepare ---------------------------------------------------------------

    def prepare(self, ports: PortAllocator, peers: Mapping[str, LocalService]) -> None:
        """Fresh ports, configs and formatted storage for every node.

        Re-callable: each call wipes the nodes' directories, picks new ports
        and formats again with a new cluster id.
        """
        self._ensure_certificates()
        libs = kafka_libs_dir(self.spec.kafka.version)
        java = _java()
        kafka = self.spec.kafka
        node_ports = {
            n: KafkaNodePorts(
                client=ports.allocate(),
                internal=ports.allocate(),
                controller=ports.allocate(),
                metrics=ports.allocate(),
            )
            for n in range(1, kafka.brokers + 1)
        }
        drill_ports = {
            n: {"drill": ports.allocate(), "drill_proxy": ports.allocate()} for n in node_ports
        }
        self.records = []
        for n, own in node_ports.items():
            name = node_name(n)
            home = self.node_dir(name)
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True, mode=0o700)
            config = home / "server.properties"
            write_private(config, self.render_node_config(n, node_ports, drill_ports[n]))
            command = jvm_command(
                libs=libs,
                config=config,
                metrics_port=own.metrics,
                exporter_config=EXPORTER_CONFIG,
                log4j_config=LOG4J_CONFIG,
            )
            command[0] = java
            self.records.append(
                self._new_record(name, command, cwd=home, ports={**own.as_dict(), **drill_ports[n]})
            )
        self._format_storage(java, libs, new_cluster_id())

    def render_node_config(
        self,
        node: int,
        node_ports: Mapping[int, KafkaNodePorts],
        drill_ports: Mapping[str, int] | None = None,
    ) -> str:
        """The ``server.properties`` :meth:`prepare` writes for ``node`` (0600);
        ``drill_ports`` (``drill``, ``drill_proxy``): its ``DRILL`` listener."""
        drill = (
            None
            if drill_ports is None
            else DrillListener(
                port=drill_ports["drill"],
                advertised=HostPort(host=LOOPBACK, port=drill_ports["drill_proxy"]),
            )
        )
        return render_server_properties(
            self.spec.kafka,
            node=node,
            ports=node_ports,
            data_dir=self.node_dir(node_name(node)) / "data",
            client_password=self.secrets.kafka_password,
            admin_password=self.secrets.kafka_admin_password,
            drill=drill,
            tls=self.tls,
            extra_users=self.secrets.kafka_job_users(self.spec.kafka),
        )

    def _format_storage(self, java: str, libs: Path, cluster_id: str) -> None:
        """Format every node's storage, in parallel: one short JVM each.

        The storage tool takes the SCRAM passwords as arguments, so they go in
        a 0600 argument file (``java @file``) that is deleted right after.
        """
        running: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        try:
            for record in self.records:
                home = Path(record.cwd or self.node_dir(record.name))
                argfile = home / "format.args"
                write_private(
                    argfile,
                    storage_format_argfile(
                        self.spec.kafka,
                        config=home / "server.properties",
                        cluster_id=cluster_id,
                        client_password=self.secrets.kafka_password,
                        admin_password=self.secrets.kafka_admin_password,
                        monitor_password=self.secrets.kafka_monitor_password,
                        extra_users=self.secrets.kafka_job_users(self.spec.kafka),
                    ),
                )
                log = Path(record.log)
                log.parent.mkdir(parents=True, exist_ok=True)
                with log.open("ab") as out:
                    out.write(f"\n--- format storage {time.strftime('%H:%M:%S')} ---\n".encode())
                    out.flush()
                    proc = subprocess.Popen(
                        [java, *FORMAT_JVM_OPTS, "-cp", f"{libs}/*", f"@{argfile}"],
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=home,
                    )
                running.append((record.name, proc, argfile))
            for name, proc, _ in running:
                try:
                    code = proc.wait(timeout=_FORMAT_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    code = proc.wait()
                if code != 0:
                    log = self._log(name)
                    raise ServiceStartError(
                        name, f"could not format its storage (exit {code})", log, log_tail(log)
                    )
        finally:
            for _, proc, argfile in running:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                argfile.unlink(missing_ok=True)

    # -- start -----------------------------------------------------------------

    def start(self) -> dict[str, float]:
        """Start every node at once, wait for each, then create the topics.

        The nodes must start together: a broker only answers once the quorum
        has a leader, which takes a majority of the voters.
        """
        if not self.records:
            raise RuntimeError("LocalKafka.start() before prepare()")
        nodes = [self.node(r.name) for r in self.records]
        times, errors = start_together(nodes, timeout=START_TIMEOUT_S, poll=0.5)
        if errors:
            self.stop_all()
            # A lost port race first: the provisioner retries prepare() on it.
            found = [_with_port_conflict(e) for e in errors]
            found.sort(key=lambda e: not is_port_conflict(e.tail))
            raise found[0]
        try:
            self._create_topics()
        except BaseException:
            self.stop_all()
            raise
        return times

    def stop_all(self, timeout: float = 15.0) -> None:
        """Stop every node at once (SIGTERM, then SIGKILL after ``timeout``).

        In parallel because the last nodes of a quorum cannot finish a
        controlled shutdown once the others are gone; they are killed instead.
        """
        nodes = [self.node(r.name) for r in self.records]
        threads = [threading.Thread(target=n.stop, args=(timeout,)) for n in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _create_topics(self) -> None:
        topics = {
            t.name: {
                "num_partitions": t.partitions,
                "replication_factor": t.replication_factor,
                "configs": {
                    "min.insync.replicas": str(t.min_insync_replicas),
                    "retention.ms": str(t.retention_ms),
                    "cleanup.policy": t.cleanup_policy,
                },
            }
            for t in self.spec.kafka.topics
        }
        first = self.records[0].name
        try:
            with self.admin() as admin:
                result = admin.create_topics(topics, raise_errors=False)
                for topic in result["topics"]:
                    error = kafka_errors.for_code(topic["error_code"])
                    if error not in (kafka_errors.NoError, kafka_errors.TopicAlreadyExistsError):
                        raise error(f"{topic['name']}: {topic.get('error_message')}")
                admin.wait_for_topics(list(topics), timeout_ms=int(TOPICS_TIMEOUT_S * 1000))
                grant_stack_acls(admin, self.spec.kafka)
            servers = [f"{LOOPBACK}:{r.ports['client']}" for r in self.records]
            wait_until_authorized(
                {**self._client_config(admin=False), "bootstrap_servers": servers},
                self.spec.kafka,
            )
        except kafka_errors.KafkaError as exc:
            log = self._log(first)
            raise ServiceStartError(
                first,
                f"started, but the topics could not be created with leaders ({exc})",
                log,
                log_tail(log),
            ) from None

    # -- control and inspection ------------------------------------------------

    def node(self, name: str) -> ProcessNode:
        """Node ``name`` with its readiness check: it answers a SASL/SCRAM
        metadata request and the cluster lists it as an unfenced broker."""
        record = self._record(name)
        return ProcessNode(record, ready=lambda: self._answers_metadata(record))

    def _client_config(self, *, admin: bool) -> dict[str, Any]:
        kafka = self.spec.kafka
        user, password = (
            (kafka.admin_username, self.secrets.kafka_admin_password)
            if admin
            else (kafka.username, self.secrets.kafka_password)
        )
        config: dict[str, Any] = {
            "security_protocol": security_protocol(self.tls),
            "sasl_mechanism": kafka.sasl_mechanism,
            "sasl_plain_username": user,
            "sasl_plain_password": password,
            "client_id": f"harness-{self.spec.name}",
        }
        if self.ca_file is not None:
            # Verified like any client: the stack's CA, host names checked.
            config.update(ssl_cafile=self.ca_file, ssl_check_hostname=True)
        return config

    @contextlib.contextmanager
    def admin(
        self, servers: list[str] | None = None, *, timeout_ms: int = 10000
    ) -> Iterator[KafkaAdminClient]:
        """An admin client (as the admin user) bootstrapped from ``servers``,
        by default every node whose process runs and is not paused (a paused
        node accepts connections but never answers, which would use up the
        whole bootstrap deadline); closed on exit."""
        if servers is None:
            servers = [
                f"{LOOPBACK}:{r.ports['client']}" for r in self.records if _answering(r)
            ] or [f"{LOOPBACK}:{r.ports['client']}" for r in self.records]
        if self.ca_file is not None:
            # kafka-python 3.0 waits for a TLS handshake without a deadline: a
            # port that accepts but never answers (a paused node, a squatter on
            # the port) would hang the client. Offer it only servers that
            # complete a verified handshake in time.
            servers = [s for s in servers if tls_handshakes(s, self.ca_file, timeout_ms / 1000)]
            if not servers:
                raise kafka_errors.NoBrokersAvailable("no broker completed a TLS handshake in time")
        client = _Admin(
            bootstrap_servers=servers,
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
            **self._client_config(admin=True),
        )
        try:
            yield client
        finally:
            client.close()

    def _answers_metadata(self, record: ProcessRecord) -> bool:
        # Bootstrapping is a Metadata request to this node alone; then the
        # cluster must list the node as registered and unfenced.
        with self.admin(
            [f"{LOOPBACK}:{record.ports['client']}"], timeout_ms=_PROBE_TIMEOUT_MS
        ) as a:
            brokers = a.describe_cluster()["brokers"]
        me = node_id(record.name)
        return any(b["broker_id"] == me and not b.get("is_fenced") for b in brokers)

    def connection(self) -> KafkaConnection:
        """The ``kafka`` section of the outputs document (the client user)."""
        kafka = self.spec.kafka
        return KafkaConnection(
            bootstrap_servers=[f"{LOOPBACK}:{r.ports['client']}" for r in self.records],
            security_protocol=security_protocol(self.tls),
            ssl_cafile=self.ca_file,
            sasl_mechanism=kafka.sasl_mechanism,
            username=kafka.username,
            password=SecretStr(self.secrets.kafka_password),
            group_prefix=kafka.group_prefix,
            topics={
                t.logical: TopicInfo(
                    name=t.name, partitions=t.partitions, replication_factor=t.replication_factor
                )
                for t in kafka.topics
            },
        )

    def drill_bootstrap_servers(self) -> list[str]:
        """Every node's ``DRILL`` listener as advertised: where only a network
        drill's Toxiproxy listens (the outputs document's ``drill`` section)."""
        return [
            f"{LOOPBACK}:{r.ports['drill_proxy']}" for r in self.records if "drill_proxy" in r.ports
        ]

    def partition_leader(self, topic: str, partition: int) -> str:
        """The node leading ``topic``/``partition`` now, e.g. ``kafka-2``.

        Raises :class:`NoLeaderError` while the partition has no leader.
        """
        with self.admin() as admin:
            described = admin.describe_topics([topic])
        for info in described:
            error = kafka_errors.for_code(info.get("error_code", 0))
            if error is not kafka_errors.NoError:
                raise NoLeaderError(f"topic {topic!r}: {error.__name__}")
            for p in info["partitions"]:
                if p["partition_index"] == partition:
                    if p["leader_id"] < 0:
                        raise NoLeaderError(f"{topic}/{partition} has no leader right now")
                    return node_name(p["leader_id"])
        raise NoLeaderError(f"{topic}/{partition} does not exist")

    def active_controller(self) -> str:
        """The node leading the KRaft metadata quorum (the active controller).

        Asked with DescribeQuorum (KIP-595), which brokers forward to the
        controllers: the ``leader_id`` of ``__cluster_metadata``. (In KRaft the
        ``controller_id`` of DescribeCluster/Metadata is just some live broker,
        not the active controller.)
        """
        with self.admin() as admin:
            quorum = admin.describe_metadata_quorum()
        leader = quorum["topics"][0]["partitions"][0]["leader_id"]
        if leader < 0:
            raise NoLeaderError("the KRaft quorum has no leader right now")
        return node_name(leader)

    def roles(self) -> dict[str, str]:
        """``broker+controller (active)`` for the quorum leader,
        ``broker+controller`` for the other live nodes, ``fenced`` for a node
        the cluster has fenced, and ``down`` for one that is not running."""
        with self.admin() as admin:
            brokers = {b["broker_id"]: b for b in admin.describe_cluster()["brokers"]}
            quorum = admin.describe_metadata_quorum()
        leader = quorum["topics"][0]["partitions"][0]["leader_id"]
        roles: dict[str, str] = {}
        for record in self.records:
            n = node_id(record.name)
            if not ProcessNode(record).running():
                roles[record.name] = "down"
            elif n not in brokers or brokers[n].get("is_fenced"):
                roles[record.name] = "fenced"
            elif n == leader:
                roles[record.name] = "broker+controller (active)"
            else:
                roles[record.name] = "broker+controller"
        return roles
