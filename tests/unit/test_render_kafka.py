"""Rendering a local Kafka node: what its config, format arguments and command say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backbone_harness.errors import MissingBinaryError
from backbone_infra.render.kafka import (
    DrillListener,
    KafkaNodePorts,
    jvm_command,
    new_cluster_id,
    node_id,
    node_name,
    render_server_properties,
    storage_format_args,
)
from backbone_infra.spec import build_spec
from backbone_infra.targets.local.kafka import kafka_libs_dir

CLIENT_PW = "client-secret-Abc_123"
ADMIN_PW = "admin-secret-Xyz_789"


def _ports(brokers: int) -> dict[int, KafkaNodePorts]:
    return {
        n: KafkaNodePorts(
            client=10000 + n, internal=11000 + n, controller=12000 + n, metrics=13000 + n
        )
        for n in range(1, brokers + 1)
    }


def _props(size: str, node: int = 1) -> dict[str, str]:
    spec = build_spec("t", size=size).kafka  # type: ignore[arg-type]
    text = render_server_properties(
        spec,
        node=node,
        ports=_ports(spec.brokers),
        data_dir=Path("/data/kafka"),
        client_password=CLIENT_PW,
        admin_password=ADMIN_PW,
    )
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return dict(pairs)


def test_every_ha_node_is_broker_and_controller_and_every_node_votes() -> None:
    props = _props("ha", node=2)
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:12001,2@127.0.0.1:12002,3@127.0.0.1:12003"
    )


def test_every_listener_binds_loopback_on_its_own_port() -> None:
    props = _props("ha", node=3)
    assert props["listeners"] == (
        "CLIENT://127.0.0.1:10003,INTERNAL://127.0.0.1:11003,CONTROLLER://127.0.0.1:12003"
    )
    assert "CONTROLLER" not in props["advertised.listeners"]
    assert props["inter.broker.listener.name"] == "INTERNAL"


def test_clients_and_replication_authenticate_with_scram_and_the_quorum_with_plain() -> None:
    props = _props("minimal")
    assert set(props["listener.security.protocol.map"].split(",")) == {
        "CLIENT:SASL_PLAINTEXT",
        "INTERNAL:SASL_PLAINTEXT",
        "CONTROLLER:SASL_PLAINTEXT",
    }
    assert props["listener.name.client.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert props["sasl.mechanism.controller.protocol"] == "PLAIN"
    # The client listener checks SCRAM credentials from the metadata log: no password inline.
    assert "password" not in props["listener.name.client.scram-sha-512.sasl.jaas.config"]


def test_durability_defaults_follow_the_spec() -> None:
    ha, minimal = _props("ha"), _props("minimal")
    assert (ha["default.replication.factor"], ha["min.insync.replicas"]) == ("3", "2")
    assert (minimal["default.replication.factor"], minimal["min.insync.replicas"]) == ("1", "1")
    assert ha["offsets.topic.replication.factor"] == "3"
    assert ha["transaction.state.log.min.isr"] == "2"
    assert ha["unclean.leader.election.enable"] == "false"
    assert ha["auto.create.topics.enable"] == "false"


def test_fencing_is_faster_than_kafkas_default_but_heartbeats_fit_inside_it() -> None:
    props = _props("ha")
    session = int(props["broker.session.timeout.ms"])
    heartbeat = int(props["broker.heartbeat.interval.ms"])
    assert session < 9000  # Kafka's default
    assert session >= 3 * heartbeat  # a missed heartbeat or two does not fence
    assert int(props["controller.socket.timeout.ms"]) < 30000  # Kafka's default


def test_passwords_appear_only_in_jaas_lines() -> None:
    props = _props("ha")
    holding = {k for k, v in props.items() if CLIENT_PW in v or ADMIN_PW in v}
    assert holding
    assert all(k.endswith("sasl.jaas.config") for k in holding)


def test_storage_format_adds_scram_credentials_for_both_users() -> None:
    spec = build_spec("t", size="ha").kafka
    args = storage_format_args(
        spec,
        config=Path("/c/server.properties"),
        cluster_id="AAAAAAAAAAAAAAAAAAAAAA",
        client_password=CLIENT_PW,
        admin_password=ADMIN_PW,
    )
    assert args[:2] == ["kafka.tools.StorageTool", "format"]
    scram = [args[i + 1] for i, a in enumerate(args) if a == "--add-scram"]
    assert scram == [
        f"SCRAM-SHA-512=[name={spec.username},password={CLIENT_PW}]",
        f"SCRAM-SHA-512=[name={spec.admin_username},password={ADMIN_PW}]",
    ]


def test_jvm_command_has_no_secret_and_serves_metrics_on_loopback(tmp_path: Path) -> None:
    (tmp_path / "jmx_prometheus_javaagent-1.0.1.jar").touch()
    cmd = jvm_command(
        libs=tmp_path,
        config=Path("/n/server.properties"),
        metrics_port=9999,
        exporter_config=Path("/h/jmx-exporter.yml"),
        log4j_config=Path("/h/log4j2.properties"),
    )
    assert cmd[-2:] == ["kafka.Kafka", "/n/server.properties"]
    agent = next(a for a in cmd if a.startswith("-javaagent:"))
    assert agent.endswith("=127.0.0.1:9999:/h/jmx-exporter.yml")
    assert "-Xmx512m" in cmd
    assert not any("password" in a.lower() for a in cmd)


def test_jvm_command_names_the_missing_agent(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="jmx_prometheus_javaagent"):
        jvm_command(
            libs=tmp_path,
            config=Path("c"),
            metrics_port=1,
            exporter_config=Path("e"),
            log4j_config=Path("l"),
        )


@given(st.integers(min_value=1, max_value=10_000))
def test_node_names_and_ids_round_trip(n: int) -> None:
    assert node_id(node_name(n)) == n


@pytest.mark.parametrize("bad", ["redis-1", "kafka-", "kafka-x", "kafka1"])
def test_node_id_refuses_other_names(bad: str) -> None:
    with pytest.raises(ValueError, match="not a Kafka node name"):
        node_id(bad)


def test_cluster_ids_are_kafka_shaped_and_fresh() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cid in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cid)
        assert not cid.startswith("-")


def test_missing_jars_say_how_to_fetch_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKBONE_CACHE", str(tmp_path))
    with pytest.raises(MissingBinaryError, match="make setup") as err:
        kafka_libs_dir("4.1.1")
    assert "10-kafka.sh" in str(err.value)


def test_plain_keeps_its_users_in_the_listener_and_adds_no_scram() -> None:
    spec = build_spec("t", size="minimal").kafka.model_copy(update={"sasl_mechanism": "PLAIN"})
    text = render_server_properties(
        spec,
        node=1,
        ports=_ports(1),
        data_dir=Path("/d"),
        client_password=CLIENT_PW,
        admin_password=ADMIN_PW,
    )
    client_jaas = next(
        line for line in text.splitlines() if line.startswith("listener.name.client.plain.")
    )
    assert f'user_{spec.username}="{CLIENT_PW}"' in client_jaas
    args = storage_format_args(
        spec,
        config=Path("/d/server.properties"),
        cluster_id="AAAAAAAAAAAAAAAAAAAAAA",
        client_password=CLIENT_PW,
        admin_password=ADMIN_PW,
    )
    assert "--add-scram" not in args


def test_container_rendering_names_hosts_binds_everywhere_and_adds_external() -> None:
    """The container targets' variant: nodes reach each other by name, listen on
    every interface and (Docker) advertise a published EXTERNAL address."""
    from backbone.connections import HostPort

    spec = build_spec("t", size="ha").kafka
    same = KafkaNodePorts(client=9092, internal=9094, controller=9093, metrics=9404)
    text = render_server_properties(
        spec,
        node=2,
        ports={n: same for n in (1, 2, 3)},
        hosts={n: f"kafka-{n}" for n in (1, 2, 3)},
        bind_host="",
        data_dir="/var/lib/kafka/data",
        client_password=CLIENT_PW,
        admin_password=ADMIN_PW,
        external=HostPort(host="127.0.0.1", port=21005),
    )
    props = dict(ln.split("=", 1) for ln in text.splitlines() if ln and not ln.startswith("#"))
    assert props["controller.quorum.voters"] == "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
    assert props["listeners"].split(",") == [
        "CLIENT://:9092",
        "INTERNAL://:9094",
        "CONTROLLER://:9093",
        "EXTERNAL://:9095",
    ]
    assert "EXTERNAL://127.0.0.1:21005" in props["advertised.listeners"].split(",")
    assert "INTERNAL://kafka-2:9094" in props["advertised.listeners"].split(",")
    assert props["listener.security.protocol.map"].count("SASL_PLAINTEXT") == 4
    assert "listener.name.external.scram-sha-512.sasl.jaas.config" in props


def test_the_drill_listener_binds_its_port_and_advertises_the_proxy_port_with_client_auth() -> None:
    from backbone.connections import HostPort

    spec = build_spec("t", size="ha").kafka
    text = render_server_properties(
        spec,
        node=2,
        ports=_ports(spec.brokers),
        data_dir=Path("/data/kafka"),
        client_password=CLIENT_PW,
        admin_password=ADMIN_PW,
        drill=DrillListener(port=14002, advertised=HostPort(host="127.0.0.1", port=15002)),
    )
    props = dict(line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")

    assert "DRILL://127.0.0.1:14002" in props["listeners"].split(",")
    assert "DRILL://127.0.0.1:15002" in props["advertised.listeners"].split(",")
    assert "CLIENT://127.0.0.1:10002" in props["advertised.listeners"].split(",")
    assert "DRILL:SASL_PLAINTEXT" in props["listener.security.protocol.map"].split(",")
    # the same authentication as CLIENT: a drill's path is no way around the credentials
    assert props["listener.name.drill.sasl.enabled.mechanisms"] == spec.sasl_mechanism
    assert (
        props["listener.name.drill.scram-sha-512.sasl.jaas.config"]
        == props["listener.name.client.scram-sha-512.sasl.jaas.config"]
    )
    assert "DRILL" not in _props("ha", node=2)["listeners"]  # only where a target asks
