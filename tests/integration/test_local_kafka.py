"""Local Kafka: real KRaft brokers on loopback, as the provisioner starts them.

Two clusters per run, each started once: ``minimal`` (1 broker) and ``ha``
(3 brokers, every one a controller voter). Fixtures always stop every node
and remove the stack directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import stat
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import kafka.errors as kafka_errors
import psutil
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from backbone.connections import KafkaConnection
from backbone_harness.errors import MissingBinaryError, ServiceStartError
from backbone_infra.render.kafka import node_id
from backbone_infra.spec import build_spec
from backbone_infra.targets.local.kafka import LocalKafka, NoLeaderError, kafka_libs_dir
from backbone_infra.targets.local.ports import PortAllocator, is_port_conflict
from backbone_infra.targets.local.secrets import StackSecrets

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
#: The metric names monitoring relies on (backbone_infra/kafka/jmx-exporter.yml).
REQUIRED_METRICS = (
    "kafka_server_replicamanager_underreplicatedpartitions",
    "kafka_controller_kafkacontroller_offlinepartitionscount",
    "kafka_controller_kafkacontroller_activecontrollercount",
    "kafka_server_brokertopicmetrics_messagesin_total",
    "kafka_server_replicamanager_partitioncount",
    "kafka_server_replicamanager_leadercount",
)

T = TypeVar("T")


def _require_jars() -> None:
    try:
        kafka_libs_dir()
    except MissingBinaryError as exc:
        pytest.skip(str(exc))


def _started(size: str) -> Iterator[tuple[LocalKafka, dict[str, float]]]:
    _require_jars()
    name = f"t-kafka-{uuid.uuid4().hex[:8]}"
    stack_dir = REPO / ".stacks" / name
    kafka = LocalKafka(build_spec(name, size=size), stack_dir, StackSecrets())  # type: ignore[arg-type]
    try:
        kafka.prepare(PortAllocator(), {})
        times = kafka.start()
        yield kafka, times
    finally:
        kafka.stop_all(timeout=5)
        survivors = _processes_under(stack_dir)
        for pid in survivors:  # ours: their command lines name this unique directory
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        shutil.rmtree(stack_dir, ignore_errors=True)
        assert not survivors, f"Kafka processes outlived stop_all: {survivors}"


@pytest.fixture(scope="module")
def minimal() -> Iterator[tuple[LocalKafka, dict[str, float]]]:
    yield from _started("minimal")


@pytest.fixture(scope="module")
def ha() -> Iterator[tuple[LocalKafka, dict[str, float]]]:
    yield from _started("ha")


def _client_config(conn: KafkaConnection, **overrides: Any) -> dict[str, Any]:
    """kafka-python settings from the outputs document, as a backbone client builds them."""
    assert conn.password is not None
    return {
        "bootstrap_servers": conn.bootstrap_servers,
        "security_protocol": conn.security_protocol,
        "sasl_mechanism": conn.sasl_mechanism,
        "sasl_plain_username": conn.username,
        "sasl_plain_password": conn.password.get_secret_value(),
        # The stack's CA: brokers' certificates and host names are verified.
        "ssl_cafile": conn.ssl_cafile,
        **overrides,
    }


def _eventually(probe: Callable[[], T | None], *, within: float, what: str) -> T:
    """Poll ``probe`` until it returns something other than None (errors count as None)."""
    deadline = time.monotonic() + within
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value is not None:
                return value
        except (NoLeaderError, kafka_errors.KafkaError) as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {within:.0f}s (last error: {last!r})")


def _metrics(kafka: LocalKafka, name: str) -> str:
    port = kafka.node(name).record.ports["metrics"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def _metric_value(text: str, metric: str) -> float:
    match = re.search(rf"^{metric}(?:\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE)
    assert match, f"{metric} not served"
    return float(match.group(1))


# -- one broker ------------------------------------------------------------------


def test_minimal_is_one_ready_broker_and_controller(minimal: tuple[LocalKafka, dict]) -> None:
    kafka, times = minimal
    assert set(times) == {"kafka-1"}
    assert 0 < times["kafka-1"] < 90
    assert kafka.roles() == {"kafka-1": "broker+controller (active)"}
    assert kafka.active_controller() == "kafka-1"


def test_spec_topics_exist_with_their_partitions_and_configs(
    minimal: tuple[LocalKafka, dict],
) -> None:
    kafka, _ = minimal
    wanted = {t.name: t for t in kafka.spec.kafka.topics}
    with kafka.admin() as admin:
        described = {t["name"]: t for t in admin.describe_topics(list(wanted))}
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in wanted]
        )
    for name, topic in wanted.items():
        partitions = described[name]["partitions"]
        assert len(partitions) == topic.partitions, name
        assert all(len(p["replica_nodes"]) == topic.replication_factor for p in partitions)
        assert all(p["leader_id"] == 1 for p in partitions)
    flat = _topic_configs(configs)
    for name, topic in wanted.items():
        assert flat[name]["min.insync.replicas"] == str(topic.min_insync_replicas)
        assert flat[name]["retention.ms"] == str(topic.retention_ms)
        assert flat[name]["cleanup.policy"] == topic.cleanup_policy


def _topic_configs(described: Any) -> dict[str, dict[str, str]]:
    """{topic: {key: value}} from kafka-python's describe_configs answer."""
    out: dict[str, dict[str, str]] = {}
    for name, entries in described["topic"].items():
        out[name] = {key: data["value"] for key, data in entries.items()}
    return out


def test_client_user_round_trips_with_acks_all_and_idempotence(
    minimal: tuple[LocalKafka, dict],
) -> None:
    kafka, _ = minimal
    conn = kafka.connection()
    topic = conn.topic("ingest_health")
    payload = uuid.uuid4().bytes
    producer = KafkaProducer(**_client_config(conn))
    try:
        # kafka-python 3.x defaults, kept after negotiating with the 4.x broker.
        assert producer.config["acks"] == -1
        assert producer.config["enable_idempotence"] is True
        sent = producer.send(topic, payload).get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(**_client_config(conn, consumer_timeout_ms=10000))
    try:
        tp = TopicPartition(topic, sent.partition)
        consumer.assign([tp])
        consumer.seek(tp, sent.offset)
        got = next(iter(consumer))
    finally:
        consumer.close()
    assert got.value == payload


def test_a_wrong_password_is_refused_by_authentication(
    minimal: tuple[LocalKafka, dict], caplog: pytest.LogCaptureFixture
) -> None:
    kafka, _ = minimal
    conn = kafka.connection()
    log = Path(kafka.node("kafka-1").record.log)
    refusal = "invalid credentials with SASL mechanism SCRAM-SHA-512"
    refused_before = log.read_text().count(refusal)
    caplog.set_level(logging.WARNING, logger="kafka")
    config = _client_config(conn, sasl_plain_password="not-the-password")
    with pytest.raises(kafka_errors.KafkaTimeoutError):
        # kafka-python retries a failed bootstrap until its deadline.
        KafkaAdminClient(**config, bootstrap_timeout_ms=3000)
    # The broker says why: each attempt failed SCRAM authentication. (The
    # client sees SaslAuthenticationFailedError when the broker's answer
    # arrives before its delayed close, a plain disconnect otherwise.)
    assert log.read_text().count(refusal) > refused_before
    client_saw = " ".join(r.getMessage() for r in caplog.records)
    assert "SaslAuthenticationFailedError" in client_saw or "disconnected" in client_saw


def test_secrets_stay_in_owner_only_files(minimal: tuple[LocalKafka, dict]) -> None:
    kafka, _ = minimal
    password = kafka.secrets.kafka_password
    admin_password = kafka.secrets.kafka_admin_password
    record = kafka.node("kafka-1").record
    assert not any(password in a or admin_password in a for a in record.command)
    config = kafka.node_dir("kafka-1") / "server.properties"
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
    assert not (kafka.node_dir("kafka-1") / "format.args").exists()
    log = Path(record.log).read_text()
    assert password not in log and admin_password not in log


def test_metrics_endpoint_serves_the_agreed_names(minimal: tuple[LocalKafka, dict]) -> None:
    kafka, _ = minimal
    conn = kafka.connection()
    topic = conn.topic("dead_letter")
    producer = KafkaProducer(**_client_config(conn))
    try:
        producer.send(topic, b"m").get(timeout=30)
    finally:
        producer.close()
    text = _metrics(kafka, "kafka-1")
    for metric in REQUIRED_METRICS:
        assert re.search(rf"^{metric}[{{ ]", text, re.MULTILINE), f"{metric} not served"
    assert _metric_value(text, "kafka_controller_kafkacontroller_activecontrollercount") == 1
    series = rf'kafka_server_brokertopicmetrics_messagesin_total\{{topic="{re.escape(topic)}"\}}'
    per_topic = re.search(rf"^{series} (\S+)$", text, re.MULTILINE)
    assert per_topic and float(per_topic.group(1)) >= 1


def test_prepare_again_starts_from_scratch_with_new_ports(tmp_path: Path) -> None:
    _require_jars()
    kafka = LocalKafka(build_spec("t-kafka-prep"), tmp_path / "stack", StackSecrets())
    kafka.prepare(PortAllocator(), {})
    first = dict(kafka.records[0].ports)
    meta = kafka.node_dir("kafka-1") / "data" / "meta.properties"
    first_meta = meta.read_text()
    (kafka.node_dir("kafka-1") / "data" / "leftover").write_text("x")
    kafka.prepare(PortAllocator(), {})
    assert kafka.records[0].ports != first
    assert not (kafka.node_dir("kafka-1") / "data" / "leftover").exists()
    cluster_id = re.compile(r"^cluster\.id=(.+)$", re.MULTILINE)
    old, new = cluster_id.search(first_meta), cluster_id.search(meta.read_text())
    assert old and new and old.group(1) != new.group(1)


def test_a_lost_port_race_is_reported_as_one(tmp_path: Path) -> None:
    _require_jars()
    kafka = LocalKafka(build_spec("t-kafka-race"), tmp_path / "stack", StackSecrets())
    kafka.prepare(PortAllocator(), {})
    record = kafka.node("kafka-1").record
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", record.ports["client"]))
        squatter.listen()
        try:
            with pytest.raises(ServiceStartError) as err:
                kafka.start()
        finally:
            kafka.stop_all(timeout=5)
    assert err.value.node == "kafka-1"
    # The provisioner re-runs prepare() with fresh ports when it sees this.
    assert is_port_conflict(err.value.tail)
    assert str(record.ports["client"]) in str(err.value)
    assert _processes_under(tmp_path) == []


def _processes_under(path: Path) -> list[int]:
    """Pids of live processes whose command line mentions ``path``."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(path) in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc.info["pid"])
    return found


# -- three brokers ---------------------------------------------------------------


def test_ha_topics_are_fully_replicated_with_leaders(ha: tuple[LocalKafka, dict]) -> None:
    kafka, times = ha
    assert set(times) == {"kafka-1", "kafka-2", "kafka-3"}
    names = [t.name for t in kafka.spec.kafka.topics]
    with kafka.admin() as admin:
        described = admin.describe_topics(names)
        configs = _topic_configs(
            admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
        )
    for topic in described:
        for p in topic["partitions"]:
            assert p["leader_id"] in (1, 2, 3)
            assert sorted(p["replica_nodes"]) == [1, 2, 3]
        assert configs[topic["name"]]["min.insync.replicas"] == "2"


def test_ha_roles_name_live_nodes_and_one_active_controller(ha: tuple[LocalKafka, dict]) -> None:
    kafka, _ = ha
    controller = kafka.active_controller()
    roles = kafka.roles()
    assert roles[controller] == "broker+controller (active)"
    assert sorted(roles.values()).count("broker+controller") == 2
    assert kafka.partition_leader(kafka.spec.kafka.topics[0].name, 0) in roles
    # The JMX metric agrees: only the active controller counts itself.
    counts = {
        name: _metric_value(
            _metrics(kafka, name), "kafka_controller_kafkacontroller_activecontrollercount"
        )
        for name in roles
    }
    assert counts == {name: (1.0 if name == controller else 0.0) for name in roles}


def test_killing_the_controller_moves_leadership_and_restart_rejoins_the_isr(
    ha: tuple[LocalKafka, dict],
) -> None:
    kafka, _ = ha
    conn = kafka.connection()
    topic = conn.topic("daily_bars")
    # Kill the active controller, on a partition it leads: both must move.
    old = kafka.active_controller()
    with kafka.admin() as admin:
        (info,) = admin.describe_topics([topic])
    partition = next(
        (p["partition_index"] for p in info["partitions"] if p["leader_id"] == node_id(old)),
        None,
    )
    if partition is None:  # it leads none of this topic's partitions: kill a leader instead
        partition = 0
        old = kafka.partition_leader(topic, partition)
    node = kafka.node(old)
    node.kill()
    assert not node.running()

    def new_leader() -> str | None:
        leader = kafka.partition_leader(topic, partition)
        return leader if leader != old else None

    moved = _eventually(new_leader, within=30, what=f"a new leader for {topic}/{partition}")
    assert moved in {"kafka-1", "kafka-2", "kafka-3"} - {old}
    assert kafka.active_controller() != old
    assert kafka.roles()[old] == "down"

    # Two of three replicas still satisfy min.insync.replicas=2 with acks=all.
    producer = KafkaProducer(**_client_config(conn))
    try:
        sent = producer.send(topic, b"after failover", partition=partition).get(timeout=30)
    finally:
        producer.close()
    assert sent.offset >= 0

    kafka.node(old).start(timeout=90)

    def back_in_isr() -> bool | None:
        with kafka.admin() as admin:
            (info,) = admin.describe_topics([topic])
        p = next(p for p in info["partitions"] if p["partition_index"] == partition)
        return True if node_id(old) in p["isr_nodes"] else None

    _eventually(back_in_isr, within=45, what=f"{old} back in the ISR of {topic}/{partition}")
    assert kafka.roles()[old].startswith("broker+controller")
