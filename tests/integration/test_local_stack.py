"""The local provisioner: real stacks on loopback, as `harness up` brings them.

Uses the session stacks of ``tests/conftest.py`` (``local_stack``, ``ha_stack``)
and one extra stack that is made to fail. Every service is exercised through
its real client, with only what the outputs document says.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from kafka import KafkaAdminClient
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from backbone.connections import TOPIC_NAMES, ConnectionsDocument, parse_document
from backbone.settings import RedisConnectionSettings
from backbone_harness.errors import ServiceStartError, StackExistsError
from backbone_infra.spec import build_spec
from backbone_infra.targets.local import provisioner
from backbone_infra.targets.local.ports import PortAllocator
from backbone_infra.targets.local.provisioner import LocalStack, start_service
from backbone_infra.targets.local.redis import LocalRedis
from backbone_infra.targets.local.secrets import StackSecrets
from backbone_infra.targets.local.stack import NodeNotRunningError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _tls(doc: ConnectionsDocument) -> dict[str, Any]:
    """redis-py's TLS arguments for the stack (its CA, host names verified)."""
    assert doc.redis is not None
    return RedisConnectionSettings.from_section(doc.redis).tls_kwargs()


def _redis(doc: ConnectionsDocument) -> redis.Redis:
    r = doc.redis
    assert r is not None
    if r.mode == "sentinel":
        sentinel = Sentinel(
            [(s.host, s.port) for s in r.sentinels],
            sentinel_kwargs={
                "password": r.sentinel_password.get_secret_value() if r.sentinel_password else None,
                **_tls(doc),
            },
            username=r.username,
            password=r.password.get_secret_value(),
            socket_timeout=2,
            **_tls(doc),
        )
        assert r.master_name is not None
        return sentinel.master_for(r.master_name, socket_timeout=2)
    return redis.Redis(
        host=r.host,
        port=r.port,
        username=r.username,
        password=r.password.get_secret_value(),
        **_tls(doc),
    )


def _postgres(doc: ConnectionsDocument) -> psycopg.Connection:
    t = doc.timescale
    assert t is not None
    return psycopg.connect(
        t.conninfo(), password=t.password.get_secret_value(), autocommit=True, connect_timeout=5
    )


def _kafka_admin(doc: ConnectionsDocument) -> KafkaAdminClient:
    k = doc.kafka
    assert k is not None and k.password is not None
    return KafkaAdminClient(
        bootstrap_servers=k.bootstrap_servers,
        security_protocol=k.security_protocol,
        sasl_mechanism=k.sasl_mechanism,
        sasl_plain_username=k.username,
        sasl_plain_password=k.password.get_secret_value(),
        ssl_cafile=k.ssl_cafile,
        request_timeout_ms=10000,
    )


def _harness(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HARNESS_STACKS_DIR": str(root)}
    return subprocess.run(
        [sys.executable, "-m", "backbone_harness", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- minimal ------------------------------------------------------------------------


def test_outputs_document_validates_and_names_every_service(local_stack: LocalStack) -> None:
    doc = parse_document(local_stack.outputs_path.read_text())
    assert (doc.stack, doc.environment, doc.tier, doc.size) == (
        local_stack.name,
        "local",
        "institutional",
        "minimal",
    )
    assert doc.redis is not None and doc.redis.mode == "standalone"
    assert doc.redis.host == "127.0.0.1"
    assert doc.timescale is not None and len(doc.timescale.hosts) == 1
    assert doc.kafka is not None and set(doc.kafka.topics) == set(TOPIC_NAMES)
    assert all(s.startswith("127.0.0.1:") for s in doc.kafka.bootstrap_servers)


def test_each_service_answers_its_real_client(local_stack: LocalStack) -> None:
    doc = local_stack.document
    client = _redis(doc)
    # In the application user's key namespace (its ACL refuses any other key).
    client.set("backbone:provisioner-test", "ok")
    assert client.get("backbone:provisioner-test") == b"ok"
    with _postgres(doc) as conn:
        kind = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'bars'").fetchone()
        assert kind == ("p",)  # natively partitioned: no TimescaleDB here
        assert conn.execute("SELECT current_user").fetchone() == ("backbone",)
    admin = _kafka_admin(doc)
    try:
        assert {t.name for t in doc.kafka.topics.values()} <= set(admin.list_topics())  # type: ignore[union-attr]
    finally:
        admin.close()


def test_authentication_is_required(local_stack: LocalStack) -> None:
    doc = local_stack.document
    assert doc.redis is not None and doc.timescale is not None
    once = Retry(NoBackoff(), 0)  # redis-py retries even a refused AUTH by default
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=doc.redis.host, port=doc.redis.port, retry=once, **_tls(doc)).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(
            host=doc.redis.host,
            port=doc.redis.port,
            username=doc.redis.username,
            password="wrong",
            retry=once,
            **_tls(doc),
        ).ping()
    host = doc.timescale.hosts[0]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host=host.host,
            port=host.port,
            dbname=doc.timescale.dbname,
            user=doc.timescale.user,
            password="wrong",
            sslmode=doc.timescale.sslmode,
            sslrootcert=doc.timescale.sslrootcert,
        )


def test_secrets_stay_in_private_files(local_stack: LocalStack) -> None:
    secrets = StackSecrets.load(local_stack.dir)
    for name in ("outputs.json", "secrets.json", "state.json"):
        mode = stat.S_IMODE((local_stack.dir / name).stat().st_mode)
        assert mode == 0o600, f"{name} is {oct(mode)}"
    state_text = (local_stack.dir / "state.json").read_text()
    for value in secrets.generated().values():
        assert value not in state_text  # commands, records and spec carry no secret
    for rec in (r for svc in local_stack.services.values() for r in svc.records):
        for arg in rec.command:
            assert not any(v in arg for v in secrets.generated().values()), rec.name
    redis_conf = local_stack.dir / "redis" / "redis-1" / "redis.conf"
    assert stat.S_IMODE(redis_conf.stat().st_mode) == 0o600


def test_roles_of_a_minimal_stack(local_stack: LocalStack) -> None:
    roles = local_stack.roles()
    assert roles["redis-1"] == "primary"
    assert roles["postgres-1"] == "primary"
    assert roles["kafka-1"] == "broker+controller (active)"
    assert local_stack.redis_primary() == "redis-1"
    assert local_stack.postgres_primary() == "postgres-1"
    assert local_stack.kafka_active_controller() == "kafka-1"
    topic = TOPIC_NAMES["daily_bars"]
    assert local_stack.kafka_partition_leader(topic, 0) == "kafka-1"


def test_up_refuses_a_name_that_is_running(local_stack: LocalStack) -> None:
    with pytest.raises(StackExistsError, match="harness down --name"):
        provisioner.up(local_stack.spec, root=local_stack.dir.parent)
    assert local_stack.node("redis-1").running()


def test_node_control_from_a_later_process(local_stack: LocalStack) -> None:
    root = local_stack.dir.parent
    name = local_stack.name
    old_pid = local_stack.node("redis-1").record.pid

    killed = _harness("node", "kill", "redis-1", "--name", name, root=root)
    assert killed.returncode == 0, killed.stderr
    assert provisioner.load(name, root=root).roles()["redis-1"] == "down"

    restarted = _harness("node", "restart", "redis-1", "--name", name, root=root)
    assert restarted.returncode == 0, restarted.stderr
    again = provisioner.load(name, root=root)
    assert again.node("redis-1").record.pid not in (None, old_pid)
    # The session's own handle sees what the other process did.
    assert local_stack.node("redis-1").record.pid == again.node("redis-1").record.pid
    assert _redis(again.document).ping()

    # Any later process rebuilds the same control from state.json.
    later = provisioner.load(name, root=root)
    later.pause_node("postgres-1")
    try:
        assert provisioner.load(name, root=root).roles()["postgres-1"] == "paused"
    finally:
        later.resume_node("postgres-1")
    with _postgres(again.document) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(KeyError, match=r"redis-9.*redis-1"):
        later.kill_node("redis-9")


def test_concurrent_restarts_of_two_nodes_are_both_recorded(local_stack: LocalStack) -> None:
    # Drills restart several nodes at once; each restart must persist its own new
    # pid without overwriting the other's with a stale copy.
    nodes = ("redis-1", "postgres-1")
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(local_stack.restart_node, nodes))
    fresh = provisioner.load(local_stack.name, root=local_stack.dir.parent)
    for name in nodes:
        assert fresh.node(name).running(), f"{name}'s new pid was lost from state.json"
    with _postgres(local_stack.document) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert _redis(local_stack.document).ping()


def test_killing_a_node_that_is_not_running_is_an_error(local_stack: LocalStack) -> None:
    local_stack.kill_node("redis-1")
    try:
        with pytest.raises(NodeNotRunningError, match=r"redis-1.*not running.*restart"):
            local_stack.kill_node("redis-1")
    finally:
        local_stack.restart_node("redis-1")
    assert _redis(local_stack.document).ping()


# -- ha -----------------------------------------------------------------------------------


def test_ha_roles_replication_and_sentinel(ha_stack: LocalStack) -> None:
    roles = ha_stack.roles()
    assert roles["redis-1"] == "primary" and roles["redis-2"] == "replica"
    assert [roles[f"sentinel-{i}"] for i in (1, 2, 3)] == ["sentinel"] * 3
    # Patroni's view: both standbys stream and may count for a commit.
    assert roles["postgres-1"] == "primary"
    assert roles["postgres-2"] == roles["postgres-3"] == "standby (quorum)"
    assert roles["etcd-1"] == "dcs (Patroni's store)"
    assert sorted(roles[f"kafka-{i}"] for i in (1, 2, 3)) == [
        "broker+controller",
        "broker+controller",
        "broker+controller (active)",
    ]
    assert ha_stack.redis_primary() == "redis-1"
    assert ha_stack.kafka_active_controller() in {"kafka-1", "kafka-2", "kafka-3"}
    doc = ha_stack.document
    assert doc.redis is not None and doc.redis.mode == "sentinel"
    assert len(doc.redis.sentinels) == 3
    assert _redis(doc).set("backbone:through-sentinel", "1")  # its ACL namespace


def test_ha_postgres_commits_wait_for_any_one_of_two_standbys(ha_stack: LocalStack) -> None:
    doc = ha_stack.document
    assert doc.timescale is not None and len(doc.timescale.hosts) == 3
    primary = doc.timescale.hosts[0]
    superuser = StackSecrets.load(ha_stack.dir).postgres_superuser_password
    with psycopg.connect(  # pg_stat_replication shows its details to superusers only
        host=primary.host,
        port=primary.port,
        dbname="postgres",
        user="postgres",
        password=superuser,
        sslmode=doc.timescale.sslmode,
        sslrootcert=doc.timescale.sslrootcert,
        autocommit=True,
    ) as conn:
        rows = conn.execute(
            "SELECT application_name, state, sync_state FROM pg_stat_replication"
        ).fetchall()
        # Patroni's quorum mode: ANY 1 of both standbys, each a quorum member.
        assert ("postgres-2", "streaming", "quorum") in rows
        assert ("postgres-3", "streaming", "quorum") in rows
        names = conn.execute("SHOW synchronous_standby_names").fetchone()
        assert names is not None and names[0].startswith("ANY 1 (")
        assert "postgres-2" in names[0] and "postgres-3" in names[0]
    with _postgres(doc) as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        conn.execute(
            "INSERT INTO bars (symbol, timeframe, ts, open, high, low, close, volume) "
            "VALUES ('SYNC', '1d', '2024-01-02', 1, 2, 0.5, 1.5, 10) ON CONFLICT DO NOTHING"
        )
    standby = doc.timescale.hosts[1]
    with psycopg.connect(
        host=standby.host,
        port=standby.port,
        dbname=doc.timescale.dbname,
        user=doc.timescale.user,
        password=doc.timescale.password.get_secret_value(),
        sslmode=doc.timescale.sslmode,
        sslrootcert=doc.timescale.sslrootcert,
        autocommit=True,
    ) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        deadline = time.monotonic() + 5  # replayed, not only flushed, once visible
        while time.monotonic() < deadline:
            if conn.execute("SELECT count(*) FROM bars WHERE symbol = 'SYNC'").fetchone() == (1,):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the committed row never became visible on the standby")


# -- port races and failure -------------------------------------------------------------


class _FirstPortTaken(PortAllocator):
    """Hands out, first, a port that something else is already listening on."""

    def __init__(self, taken: int) -> None:
        super().__init__()
        self.taken: int | None = taken

    def allocate(self) -> int:
        if self.taken is not None:
            port, self.taken = self.taken, None
            return port
        return super().allocate()


def test_a_port_taken_before_binding_is_retried_with_a_new_port(stacks_root: Path) -> None:
    directory = stacks_root / "port-race"
    spec = build_spec("port-race")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        service = LocalRedis(spec, directory, StackSecrets.load_or_create(directory))
        said: list[str] = []
        try:
            start_service(service, _FirstPortTaken(taken), {}, say=said.append)
            assert service.records[0].ports["client"] != taken
            assert said == ["redis: redis-1 lost a port race; retrying with new ports"]
            assert "Address already in use" in (directory / "logs" / "redis-1.log").read_text()
            assert service.roles() == {"redis-1": "primary"}
        finally:
            provisioner._stop_records(service.records)


def test_a_failing_service_stops_everything_and_keeps_the_state(stacks_root: Path) -> None:
    spec = build_spec("broken", size="minimal")
    broken = spec.model_copy(
        update={"redis": spec.redis.model_copy(update={"maxmemory_policy": "no-such-policy"})}
    )
    with pytest.raises(ServiceStartError) as caught:
        provisioner.up(broken, root=stacks_root)
    assert caught.value.node == "redis-1"
    assert "no-such-policy" in caught.value.tail  # the log tail says why
    directory = stacks_root / "broken"
    assert json.loads((directory / "state.json").read_text())["status"] == "failed"
    assert provisioner.stack_processes(directory) == []
    # down is idempotent on a half-started stack, and leaves nothing running.
    for _ in range(2):
        began = time.monotonic()
        provisioner.down("broken", root=stacks_root)
        assert time.monotonic() - began < 5
    assert provisioner.stack_processes(directory) == []
    assert directory.is_dir()
