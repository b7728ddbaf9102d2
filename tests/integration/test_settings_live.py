"""Connection settings reach the live clients of a real stack, from every source.

``Backbone.open`` on the institutional tier builds the real clients (a
``RedisCache`` that PINGs, a ``TimescaleStore`` with an open pool, a Kafka
producer and consumer that bootstrapped). Each test reads what those clients
hold, and what PostgreSQL's libpq connection reports, against what was set.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from backbone.cache.redis import RedisCache
from backbone.connections import ConnectionsDocument
from backbone.runtime import Backbone
from backbone.settings import BackboneSettings, load_settings
from backbone_infra.targets.local.provisioner import LocalStack

pytestmark = pytest.mark.integration

#: Client knobs, each unlike its default. The connection fields come from the stack's document.
KNOBS: dict[str, dict[str, Any]] = {
    "redis": {"max_connections": 5, "socket_timeout": 1.5},
    "kafka": {"request_timeout_seconds": 25.0},
    "timescale": {
        "pool_min_size": 2,
        "pool_max_size": 3,
        "connect_timeout_seconds": 7,
    },
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("BACKBONE_") or name == "DATA_BACKBONE_MODE":
            monkeypatch.delenv(name)


def knobs_from(
    source: str, document: ConnectionsDocument, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> BackboneSettings:
    if source == "arguments":
        return load_settings(document, **KNOBS)
    if source == "environment":
        for section, values in KNOBS.items():
            for field, value in values.items():
                monkeypatch.setenv(f"BACKBONE_{section}__{field}".upper(), str(value))
        return load_settings(document)
    assert source == "config.yaml"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(KNOBS))
    return load_settings(document)


@pytest.fixture
def opened(local_stack: LocalStack) -> Iterator[Any]:
    """Open the institutional tier with given settings; closed after the test."""
    opened: list[Backbone] = []

    def open_with(settings: BackboneSettings) -> Backbone:
        bb = Backbone.open(tier="institutional", settings=settings)
        opened.append(bb)
        return bb

    yield open_with
    for bb in opened:
        bb.close()


def postgres_parameters(bb: Backbone) -> dict[str, str]:
    pool = bb.store._pool
    with pool.connection() as conn:
        return dict(conn.info.get_parameters())


@pytest.mark.parametrize("source", ["arguments", "environment", "config.yaml"])
def test_client_knobs_from_each_source_reach_the_live_clients(
    source: str,
    local_stack: LocalStack,
    opened: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    bb = opened(knobs_from(source, local_stack.document, monkeypatch, tmp_path))
    pool = bb.store._pool
    assert (pool.min_size, pool.max_size) == (2, 3)
    params = postgres_parameters(bb)
    assert params["connect_timeout"] == "7"
    redis_pool = bb.cache.redis._client.connection_pool  # Tier 1: DegradableCache over Redis
    assert redis_pool.max_connections == 5
    assert redis_pool.connection_kwargs["socket_timeout"] == 1.5
    assert bb.producer is not None and bb.consumer is not None
    assert bb.producer._producer.config["request_timeout_ms"] == 25_000
    assert bb.consumer._consumer.config["request_timeout_ms"] == 25_000


def test_the_documents_fields_reach_the_live_clients(local_stack: LocalStack, opened: Any) -> None:
    doc = local_stack.document
    assert doc.redis is not None and doc.kafka is not None and doc.timescale is not None
    bb = opened(load_settings(doc))
    params = postgres_parameters(bb)
    primary = doc.timescale.hosts[0]
    assert params["host"].split(",")[0] == primary.host
    assert params["port"].split(",")[0] == str(primary.port)
    assert (params["dbname"], params["user"], params["sslmode"]) == (
        doc.timescale.dbname,
        doc.timescale.user,
        doc.timescale.sslmode,
    )
    # TLS by default: libpq verifies the server with the stack's CA.
    assert (params["sslmode"], params["sslrootcert"]) == ("verify-full", doc.timescale.sslrootcert)
    assert bb.store.timescaledb is doc.timescale.timescaledb
    kw = bb.cache.redis._client.connection_pool.connection_kwargs
    assert doc.redis.password is not None
    assert (kw["username"], kw["password"], kw["db"]) == (
        doc.redis.username,
        doc.redis.password.get_secret_value(),
        doc.redis.db,
    )
    assert bb.producer is not None and bb.consumer is not None
    config = bb.producer._producer.config
    assert config["bootstrap_servers"] == doc.kafka.bootstrap_servers
    assert config["security_protocol"] == doc.kafka.security_protocol
    assert config["sasl_plain_username"] == doc.kafka.username
    assert config["security_protocol"] == "SASL_SSL" and doc.kafka.ssl_cafile is not None
    context = config["ssl_context"]
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert (kw["ssl_ca_certs"], kw["ssl_check_hostname"]) == (doc.redis.ssl_cafile, True)
    assert bb.consumer._consumer.subscription() == {
        doc.kafka.topic("daily_bars"),
        doc.kafka.topic("intraday_bars"),
    }


def test_a_redis_url_alone_reaches_an_authenticating_redis(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_ = local_stack.document.redis
    assert redis_ is not None and redis_.host is not None and redis_.password is not None
    user = quote(redis_.username or "", safe="")
    password = quote(redis_.password.get_secret_value(), safe="")
    # rediss://: TLS, verified with the stack's CA (given beside the URL).
    url = f"rediss://{user}:{password}@{redis_.host}:{redis_.port}/{redis_.db}"
    monkeypatch.setenv("BACKBONE_REDIS__URL", url)
    monkeypatch.setenv("BACKBONE_REDIS__SSL_CAFILE", str(redis_.ssl_cafile))
    monkeypatch.setenv("BACKBONE_REDIS__MAX_CONNECTIONS", "3")
    settings = load_settings()
    assert settings.redis is not None and settings.has_credentials
    with RedisCache(settings.redis, namespace="backbone-settings-live") as cache:
        # The constructor PINGs: the ACL user and password from the URL were accepted.
        assert cache.available
        assert cache._client.connection_pool.max_connections == 3
