"""The project's own images, started by testcontainers on a real engine (podman).

Each test builds (or reuses) the image from ``images/<service>/Containerfile``,
starts it through podman's Docker-compatible API with the command and the
mounted config files of :mod:`backbone_harness.containers.services` (the local
environment's renderings), and drives it with the backbone's clients: the
Redis cache, kafka-python produce/consume with SCRAM, the PostgreSQL store.
Every service serves TLS (the default) with certificates issued here as a
stack issues them, and every client verifies them.

Where podman cannot run (not installed, or an unprivileged user it refuses),
the module skips with podman's own reason. The API service is started for
this module only and stopped after it; every container is removed on exit.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from pydantic import SecretStr

from backbone.bars import Bar
from backbone.cache.redis import RedisCache
from backbone.connections import HostPort, TimescaleConnection
from backbone.settings import RedisConnectionSettings, TimescaleConnectionSettings
from backbone.store.timescale import TimescaleStore
from backbone_harness.containers.engine import api_service, no_engine_reason, podman
from backbone_harness.containers.images import build_all
from backbone_harness.containers.services import (
    ServiceContainer,
    kafka_broker,
    materialise,
    postgres_server,
    redis_exporter,
    redis_server,
    tls_volumes,
)
from backbone_infra.render.kafka import KafkaNodePorts, new_cluster_id
from backbone_infra.spec import StackSpec, build_spec
from backbone_infra.targets.kafka_acls import grant_stack_acls
from backbone_infra.targets.local.ports import PortAllocator
from backbone_infra.targets.local.secrets import StackSecrets
from backbone_infra.targets.local.tls import issue_local_certificates

_REASON = no_engine_reason()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
]

LABEL = "backbone.test"


@pytest.fixture(scope="module")
def engine() -> Iterator[None]:
    """podman's Docker API for this module, and the images it starts."""
    with api_service() as env:
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            build_all(["redis", "kafka", "postgres", "redis-exporter"], progress=lambda _msg: None)
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    left = podman("ps", "-a", "--filter", f"label={LABEL}", "--format", "{{.Names}}").stdout
    assert not left.strip(), f"containers outlived their test: {left}"


@pytest.fixture
def spec() -> StackSpec:
    return build_spec(f"backbone-tc-{secrets.token_hex(3)}", size="minimal")  # TLS, the default


@pytest.fixture
def tls_dir(spec: StackSpec, tmp_path: Path) -> Path:
    """The stack's CA and server certificates (127.0.0.1, localhost), as ``up`` issues them."""
    directory = issue_local_certificates(spec, tmp_path / "stack")
    assert directory is not None
    return directory


@pytest.fixture
def stack_secrets() -> StackSecrets:
    return StackSecrets()


def _started(service: ServiceContainer, files: Path, ready_log: str, tls_dir: Path) -> Any:
    """A testcontainers container for ``service``: its command, files, TLS files and ports."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    container = DockerContainer(service.image).with_command(list(service.command))
    for host, target in materialise(service, files).items():
        container.with_volume_mapping(host, target, "ro")
    for host, target, options in tls_volumes(service, tls_dir):
        container.with_volume_mapping(host, target, options)
    for port in service.ports:
        # Published on loopback only, at the same number (Kafka advertises it).
        container.ports[f"{port}/tcp"] = ("127.0.0.1", port)  # type: ignore[assignment]
    container.with_kwargs(labels={LABEL: service.name})
    return container.waiting_for(LogMessageWaitStrategy(ready_log))


def test_redis_image_serves_the_backbone_cache(
    engine: None, spec: StackSpec, stack_secrets: StackSecrets, tmp_path: Path, tls_dir: Path
) -> None:
    port = PortAllocator().allocate()
    service = redis_server(spec, stack_secrets, port=port)
    with _started(service, tmp_path, "Ready to accept connections", tls_dir):
        settings = RedisConnectionSettings(
            host="127.0.0.1",
            port=port,
            username=spec.redis.username,
            password=stack_secrets.redis_password,
            tls=True,
            ssl_cafile=str(tls_dir / "ca.crt"),
        )
        bar = Bar("EURUSD", "1d", datetime(2024, 1, 2, tzinfo=UTC), 1.1, 1.2, 1.0, 1.15, 10)
        cache = RedisCache(settings, namespace=f"backbone-tc-{secrets.token_hex(3)}")
        try:
            assert cache.get_latest("EURUSD", "1d", lambda: bar) == bar  # miss, filled
            assert cache.get_latest("EURUSD", "1d", lambda: None) == bar  # hit
            stats = cache.stats()
            assert (stats.hits, stats.misses) == (1, 1)
        finally:
            cache.close()


def test_redis_image_refuses_the_disabled_default_user(
    engine: None, spec: StackSpec, stack_secrets: StackSecrets, tmp_path: Path, tls_dir: Path
) -> None:
    import redis

    port = PortAllocator().allocate()
    service = redis_server(spec, stack_secrets, port=port)
    with _started(service, tmp_path, "Ready to accept", tls_dir):
        client = redis.Redis(
            host="127.0.0.1",
            port=port,
            socket_timeout=5,
            ssl=True,
            ssl_ca_certs=str(tls_dir / "ca.crt"),
            ssl_check_hostname=True,
        )
        with pytest.raises(redis.AuthenticationError):
            client.ping()
        client.close()


def _kafka_ports() -> KafkaNodePorts:
    alloc = PortAllocator()
    return KafkaNodePorts(
        client=alloc.allocate(),
        internal=alloc.allocate(),
        controller=alloc.allocate(),
        metrics=alloc.allocate(),
    )


def _kafka_tls(tls_dir: Path) -> dict[str, Any]:
    return {
        "security_protocol": "SASL_SSL",
        "ssl_cafile": str(tls_dir / "ca.crt"),
        "ssl_check_hostname": True,
    }


def test_kafka_image_round_trips_records_with_scram(
    engine: None, spec: StackSpec, stack_secrets: StackSecrets, tmp_path: Path, tls_dir: Path
) -> None:
    ports = _kafka_ports()
    service = kafka_broker(spec, stack_secrets, ports=ports, cluster_id=new_cluster_id())
    k = spec.kafka
    common: dict[str, Any] = {
        "bootstrap_servers": f"127.0.0.1:{ports.client}",
        "sasl_mechanism": k.sasl_mechanism,
        **_kafka_tls(tls_dir),
    }
    with _started(service, tmp_path, "Kafka Server started", tls_dir):
        admin = KafkaAdminClient(
            **common,
            sasl_plain_username=k.admin_username,
            sasl_plain_password=stack_secrets.kafka_admin_password,
        )
        # The application may touch only the stack's topics and groups (the ACLs
        # provisioning grants); a spec topic, granted as provisioning does.
        topic = k.topics[0].name
        try:
            admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
            grant_stack_acls(admin, k)
        finally:
            admin.close()
        user = {
            "sasl_plain_username": k.username,
            "sasl_plain_password": stack_secrets.kafka_password,
        }
        producer = KafkaProducer(**common, **user, acks="all")
        sent = [f"bar-{i}".encode() for i in range(50)]
        try:
            for value in sent:
                producer.send(topic, value=value, key=value[-1:])
            producer.flush(timeout=30)
        finally:
            producer.close()
        consumer = KafkaConsumer(
            topic,
            **common,
            **user,
            group_id=f"backbone-tc-{secrets.token_hex(3)}",
            auto_offset_reset="earliest",
            consumer_timeout_ms=15000,
        )
        try:
            got = [record.value for record in consumer]
        finally:
            consumer.close()
        assert sorted(got) == sorted(sent)


def test_kafka_image_refuses_a_wrong_password(
    engine: None, spec: StackSpec, stack_secrets: StackSecrets, tmp_path: Path, tls_dir: Path
) -> None:
    from kafka.errors import KafkaError

    ports = _kafka_ports()
    service = kafka_broker(spec, stack_secrets, ports=ports, cluster_id=new_cluster_id())
    started = _started(service, tmp_path, "Kafka Server started", tls_dir)
    with started, pytest.raises(KafkaError):
        producer = KafkaProducer(
            bootstrap_servers=f"127.0.0.1:{ports.client}",
            **_kafka_tls(tls_dir),
            sasl_mechanism=spec.kafka.sasl_mechanism,
            sasl_plain_username=spec.kafka.username,
            sasl_plain_password="not-the-password",
            max_block_ms=10000,
        )
        try:
            producer.send("anything", b"refused").get(timeout=15)
        finally:
            producer.close(timeout=5)


def test_postgres_image_serves_the_bar_store(
    engine: None, spec: StackSpec, stack_secrets: StackSecrets, tmp_path: Path, tls_dir: Path
) -> None:
    port = PortAllocator().allocate()
    p = spec.postgres
    ca = str(tls_dir / "ca.crt")
    service = postgres_server(spec, stack_secrets, port=port)
    with _started(service, tmp_path, "database system is ready to accept connections", tls_dir):
        with psycopg.connect(
            host="127.0.0.1",
            port=port,
            user="postgres",
            password=stack_secrets.postgres_superuser_password,
            dbname="postgres",
            sslmode="verify-full",
            sslrootcert=ca,
            autocommit=True,
            connect_timeout=10,
        ) as admin:
            row = admin.execute("SHOW server_version_num").fetchone()
            assert row is not None and str(row[0]).startswith("15")
            row = admin.execute("SHOW server_encoding").fetchone()
            assert row == ("UTF8",)
            admin.execute(
                psycopg.sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    psycopg.sql.Identifier(p.user),
                    psycopg.sql.Literal(stack_secrets.postgres_password),
                )
            )
            admin.execute(
                psycopg.sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    psycopg.sql.Identifier(p.dbname), psycopg.sql.Identifier(p.user)
                )
            )
        conn = TimescaleConnection(
            hosts=[HostPort(host="127.0.0.1", port=port)],
            dbname=p.dbname,
            user=p.user,
            password=SecretStr(stack_secrets.postgres_password),
            sslmode="verify-full",
            sslrootcert=ca,
        )
        store = TimescaleStore(TimescaleConnectionSettings.from_section(conn))
        start = datetime(2024, 1, 1, tzinfo=UTC)
        bars = [
            Bar("EURUSD", "1d", start + timedelta(days=i), 1.0, 1.2, 0.9, 1.1, 100 + i)
            for i in range(30)
        ]
        try:
            assert store.write(bars) == 30
            assert store.write(bars[:5]) == 0  # idempotent upsert
            assert store.read("EURUSD", "1d", start, start + timedelta(days=30)) == bars
            assert store.latest("EURUSD", "1d") == bars[-1]
        finally:
            store.close()


def test_redis_exporter_image_scrapes_the_redis_container(
    engine: None, spec: StackSpec, stack_secrets: StackSecrets, tmp_path: Path, tls_dir: Path
) -> None:
    import urllib.request

    alloc = PortAllocator()
    port, metrics = alloc.allocate(), alloc.allocate()
    server = redis_server(spec, stack_secrets, port=port)
    # The exporter joins the server's network namespace; the server publishes its port.
    server = dataclasses.replace(server, ports=(port, metrics))
    exporter = redis_exporter(spec, stack_secrets, redis_port=port, port=metrics)
    with _started(server, tmp_path / "redis", "Ready to accept connections", tls_dir) as redis_c:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.wait_strategies import LogMessageWaitStrategy

        sidecar = DockerContainer(exporter.image).with_command(list(exporter.command))
        for host, target in materialise(exporter, tmp_path / "exporter").items():
            sidecar.with_volume_mapping(host, target, "ro")
        # The CA only: it scrapes over TLS (rediss://) and verifies the server.
        for host, target, options in tls_volumes(exporter, tls_dir):
            sidecar.with_volume_mapping(host, target, options)
        sidecar.with_kwargs(
            labels={LABEL: exporter.name},
            network_mode=f"container:{redis_c.get_wrapped_container().id}",
        )
        url = f"http://127.0.0.1:{metrics}/metrics"
        with (
            sidecar.waiting_for(LogMessageWaitStrategy("Providing metrics")),
            urllib.request.urlopen(url, timeout=10) as reply,
        ):
            text = reply.read().decode()
    assert "\nredis_up 1\n" in text
    assert "redis_connected_clients" in text
