"""Outage drills on compose stacks (the project's images on podman), through the CLI.

``harness drill run`` picks the environment from the stack it is given: the
same drills, the same invariants (nothing acknowledged lost, nothing stored
twice) as on local processes. A minimal stack runs a whole-service stop drill
and the container partition (a broker's container off its network); a drill
only the local environment can make says "not applicable on compose". The ha
stack (Redis primary + replica + 3 Sentinels, 3 KRaft brokers, PostgreSQL
under Patroni: a leader and two quorum standbys, etcd as their store) fails
its Redis primary over, seen from the host through Sentinel, partitions a
broker that leads a partition, and crashes its PostgreSQL primary's server
(Patroni fails over, the old primary rejoins); before that, every link of the
ha stack is shown to be TLS (host to each node, and the peers' replication).
Skips with podman's own reason where no engine can run.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from kafka import KafkaAdminClient
from kafka import errors as kafka_errors
from typer.testing import CliRunner

from backbone_harness.cli import app as harness_app
from backbone_harness.containers import patroni
from backbone_harness.containers.engine import no_engine_reason, podman
from backbone_harness.containers.services import ETCD
from backbone_harness.containers.stack import QUORUM_STANDBY, ContainerStack
from backbone_harness.stacks import load_stack
from backbone_infra.render.redis import ADMIN_USER
from backbone_infra.targets.local.state import stacks_root
from tests.integration.test_tls import ONCE

_REASON = no_engine_reason()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
]


def _harness(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(harness_app, list(args))
    return result.exit_code, result.output


def _harness_json(*args: str) -> tuple[int, Any]:
    """Exit code and the JSON document on stdout (progress goes to stderr)."""
    result = CliRunner().invoke(harness_app, [*args, "--json"])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def _containers(name: str) -> list[str]:
    done = podman("ps", "-a", "--filter", f"label=backbone.stack={name}", "--format", "{{.Names}}")
    return done.stdout.split()


def _networks(name: str) -> list[str]:
    done = podman("network", "ls", "--format", "{{.Name}}")
    return [n for n in done.stdout.split() if n == f"backbone-{name}"]


def _stack(size: str) -> Iterator[str]:
    name = f"compose-{size[:3]}-{secrets.token_hex(3)}"
    try:
        code, output = _harness("up", "--env", "compose", "--size", size, "--name", name)
        assert code == 0, output
        yield name
    finally:
        _harness("down", "--name", name)
        assert _containers(name) == [], "containers outlived `harness down`"
        assert _networks(name) == [], "the stack network outlived `harness down`"
        shutil.rmtree(stacks_root() / name, ignore_errors=True)


@pytest.fixture(scope="module")
def compose_minimal() -> Iterator[str]:
    yield from _stack("minimal")


def _drill(name: str, stack: str, out: Path, hold: float = 3.0) -> tuple[int, dict[str, Any]]:
    code, document = _harness_json(
        "drill", "run", name, "--name", stack, "--hold", str(hold), "--out", str(out)
    )
    reports = document["reports"]
    assert len(reports) == 1, reports
    return code, reports[0]


def _held(report: dict[str, Any]) -> None:
    """The invariants every drill holds, whatever the environment."""
    assert report["applicable"] is True
    assert report["environment"] == "compose"
    assert report["lost_acknowledged"] == 0, report["lost_examples"]
    assert report["duplicates"] == 0, "a bar was stored twice"
    assert report["acknowledged"] >= 200, report
    assert report["passed"] is True, report["reason"]


def test_the_container_partition_drill_loses_nothing_it_acknowledged(
    compose_minimal: str, tmp_path: Path
) -> None:
    code, report = _drill("container-partition", compose_minimal, tmp_path)

    assert code == 0, report["reason"]
    _held(report)
    assert report["target"] == "kafka-1"
    # A real partition: the broker stopped answering, and answered again after.
    assert report["figures"]["broker_answered_while_partitioned"] == "False"
    assert report["figures"]["broker_answers_after_reconnect"] == "True"
    page = (tmp_path / "drills.md").read_text()
    assert "| container-partition |" in page and "PASS (minimal)" in page
    assert load_stack(compose_minimal).roles()["kafka-1"].startswith("broker")


def test_a_whole_service_stop_drill_passes_on_compose(compose_minimal: str, tmp_path: Path) -> None:
    code, report = _drill("redis-outage-restart", compose_minimal, tmp_path)

    assert code == 0, report["reason"]
    _held(report)
    assert report["target"] == "redis-1"
    assert report["figures"]["started_cache_degraded"] == "True"
    assert report["figures"]["stale_reads"] == 0
    assert load_stack(compose_minimal).node_running("redis-1")


def test_a_drill_only_local_can_make_is_reported_not_applicable(
    compose_minimal: str, tmp_path: Path
) -> None:
    code, report = _drill("network-partition", compose_minimal, tmp_path)

    assert code == 0
    assert report["applicable"] is False and report["acknowledged"] == 0
    assert report["reason"].startswith("not applicable on compose: ")
    data = json.loads((tmp_path / "drills.json").read_text())
    assert "network-partition@compose" in data and "network-partition" not in data


@pytest.fixture(scope="module")
def compose_ha() -> Iterator[str]:
    yield from _stack("ha")


def test_every_ha_link_is_tls_and_plain_text_is_refused(compose_ha: str) -> None:
    """Host to every node: TLS verified, plain text refused. Between peers: the
    standbys stream over TLS, the Redis replica's link is up (its primary has no
    plain-text port), every partition is replicated to all three brokers
    (``INTERNAL`` is ``SASL_SSL``), and the quorum elected a leader (``CONTROLLER``)."""
    stack = load_stack(compose_ha)
    assert isinstance(stack, ContainerStack)
    ca, sec, doc = stack.ca_file, stack.secrets, stack.document
    assert ca is not None and doc.redis is not None and doc.redis.ssl_cafile == ca
    tls: dict[str, Any] = {"ssl": True, "ssl_ca_certs": ca, "ssl_check_hostname": True}
    for node in stack.node_names():
        if node == ETCD:  # publishes nothing: only the Patroni nodes dial it
            continue
        port = stack.node_ports(node)["client"]
        if node.startswith(("redis-", "sentinel-")):
            user = None if node.startswith("sentinel-") else ADMIN_USER
            password = sec.sentinel_password if user is None else sec.redis_admin_password
            with pytest.raises(redis.ConnectionError):
                redis.Redis(port=port, username=user, password=password, retry=ONCE).ping()
            client = redis.Redis(port=port, username=user, password=password, **tls)
            try:
                assert client.ping()
                if node == "redis-2":
                    assert client.info("replication")["master_link_status"] == "up"
            finally:
                client.close()
        elif node.startswith("postgres-"):
            pg: dict[str, Any] = {
                "host": "127.0.0.1", "port": port, "user": "postgres", "dbname": "postgres",
                "password": sec.postgres_superuser_password, "connect_timeout": 5,
            }  # fmt: skip
            with pytest.raises(psycopg.OperationalError, match="no encryption"):
                psycopg.connect(**pg, sslmode="disable")
            with psycopg.connect(**pg, sslmode="verify-full", sslrootcert=ca) as conn:
                if node == stack.postgres_primary():
                    rows = conn.execute(
                        "SELECT r.application_name, s.ssl FROM pg_stat_replication r"
                        " JOIN pg_stat_ssl s ON s.pid = r.pid"
                    ).fetchall()
                    assert sorted(rows) == [("postgres-2", True), ("postgres-3", True)]
        elif node.startswith("kafka-"):
            kafka: dict[str, Any] = {
                "bootstrap_servers": [f"127.0.0.1:{port}"],
                "sasl_mechanism": stack.spec.kafka.sasl_mechanism,
                "sasl_plain_username": stack.spec.kafka.admin_username,
                "sasl_plain_password": sec.kafka_admin_password,
                "bootstrap_timeout_ms": 4000, "request_timeout_ms": 4000,
            }  # fmt: skip
            with pytest.raises(kafka_errors.KafkaError):
                KafkaAdminClient(**kafka, security_protocol="SASL_PLAINTEXT").close()
            admin = KafkaAdminClient(**kafka, security_protocol="SASL_SSL", ssl_cafile=ca)
            try:
                topics = admin.describe_topics([t.name for t in stack.spec.kafka.topics])
            finally:
                admin.close()
            for topic in topics:
                for partition in topic["partitions"]:
                    assert sorted(partition["isr_nodes"]) == [1, 2, 3], (topic["name"], partition)
    assert stack.kafka_active_controller().startswith("kafka-")


def test_an_ha_stack_fails_its_redis_primary_over_through_sentinel_from_the_host(
    compose_ha: str, tmp_path: Path
) -> None:
    stack = load_stack(compose_ha)
    roles = stack.roles()
    assert [roles[n] for n in ("redis-1", "redis-2")] == ["primary", "replica"]
    postgres = sorted(r for n, r in roles.items() if n.startswith("postgres-"))
    assert postgres[0] == "primary" and set(postgres[1:]) == {QUORUM_STANDBY}, roles
    assert sum(r.startswith("broker+controller") for r in roles.values()) == 3

    code, report = _drill("redis-primary-kill", compose_ha, tmp_path)

    assert code == 0, report["reason"]
    _held(report)
    assert report["target"] == "redis-1"
    assert report["figures"]["new_primary"] == "redis-2"
    assert report["figures"]["read_failures"] == 0
    assert stack.redis_primary() == "redis-1"  # handed back: the stack as found


def test_an_ha_broker_partitioned_from_its_peers_loses_nothing(
    compose_ha: str, tmp_path: Path
) -> None:
    stack = load_stack(compose_ha)
    topic = stack.document.kafka.topics["intraday_bars"].name  # type: ignore[union-attr]
    leader = stack.kafka_partition_leader(topic, 0)

    code, report = _drill("container-partition", compose_ha, tmp_path)

    assert code == 0, report["reason"]
    _held(report)
    assert report["target"] == leader
    assert report["figures"]["broker_answered_while_partitioned"] == "False"


def test_ha_postgres_runs_under_patroni_with_two_quorum_standbys(compose_ha: str) -> None:
    """Patroni leads with postgres-1 and counts both standbys in the commit
    quorum (``ANY 1``); the standbys stream over TLS (checked above); etcd is
    healthy and every member agrees on the cluster Patroni keeps there."""
    stack = load_stack(compose_ha)
    assert isinstance(stack, ContainerStack)
    roles = stack.roles()
    assert roles["postgres-1"] == "primary", roles
    assert roles["postgres-2"] == roles["postgres-3"] == QUORUM_STANDBY, roles
    assert stack.spec.postgres.patroni is not None
    port = stack.spec.postgres.patroni.etcd_client_port
    assert patroni.etcd_answers(stack.state.nodes[ETCD], port)()
    views = []
    for node in ("postgres-1", "postgres-2", "postgres-3"):
        status, body = patroni.rest(stack.node_ports(node)["rest"], "/cluster")
        assert status == 200, body
        views.append(sorted((m["name"], m["role"]) for m in body["members"]))
    assert views[0] == [
        ("postgres-1", "leader"),
        ("postgres-2", "quorum_standby"),
        ("postgres-3", "quorum_standby"),
    ]
    assert views[1] == views[0] and views[2] == views[0]
    sec = stack.secrets
    with psycopg.connect(
        host="127.0.0.1", port=stack.node_ports("postgres-1")["client"], user="postgres",
        dbname="postgres", password=sec.postgres_superuser_password, connect_timeout=5,
        sslmode="verify-full", sslrootcert=stack.ca_file,
    ) as conn:  # fmt: skip
        names = conn.execute("SHOW synchronous_standby_names").fetchone()
    assert names is not None and names[0].startswith("ANY 1 ("), names


def test_an_ha_postgres_primary_crash_fails_over_and_the_old_primary_rejoins(
    compose_ha: str, tmp_path: Path
) -> None:
    """The postmaster of the primary is SIGKILLed inside its container (Patroni
    lives): a quorum standby takes over, no acknowledged bar is lost or stored
    twice, and the old primary rejoins and is handed the role back."""
    stack = load_stack(compose_ha)
    assert stack.postgres_primary() == "postgres-1"

    code, report = _drill("postgres-primary-kill", compose_ha, tmp_path)

    assert code == 0, report["reason"]
    _held(report)
    assert report["target"] == "postgres-1"
    assert report["figures"]["new_primary"] in ("postgres-2", "postgres-3")
    assert stack.postgres_primary() == "postgres-1"  # handed back: the stack as found
    roles = stack.roles()
    assert roles["postgres-2"] == roles["postgres-3"] == QUORUM_STANDBY, roles
