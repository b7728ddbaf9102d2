"""Settings: source priority, nested env overrides, secure defaults, secrets kept secret."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from backbone.connections import ConnectionsDocument, parse_document
from backbone.settings import (
    KafkaConnectionSettings,
    RedisConnectionSettings,
    SettingsError,
    TimescaleConnectionSettings,
    load_settings,
)

REDIS_PW = "redis-pw-Zq81"
KAFKA_PW = "kafka-pw-Lm22"
PG_PW = "pg-pw-Xk93"


def document(**changes: Any) -> ConnectionsDocument:
    topics = {
        logical: {"name": name, "partitions": 3, "replication_factor": 1}
        for logical, name in {
            "daily_bars": "market-data.daily-bars",
            "intraday_bars": "market-data.intraday-bars",
            "dead_letter": "market-data.dead-letter",
            "ingest_health": "telemetry.ingest.health",
        }.items()
    }
    data: dict[str, Any] = {
        "schema": "backbone.connections/v1",
        "stack": "unit",
        "environment": "local",
        "tier": "institutional",
        "redis": {
            "mode": "standalone",
            "host": "127.0.0.1",
            "port": 6390,
            "username": "backbone",
            "password": REDIS_PW,
        },
        "kafka": {
            "bootstrap_servers": ["127.0.0.1:19092"],
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "username": "backbone",
            "password": KAFKA_PW,
            "topics": topics,
        },
        "timescale": {
            "hosts": [{"host": "127.0.0.1", "port": 15432}, {"host": "127.0.0.1", "port": 15433}],
            "dbname": "market",
            "user": "backbone",
            "password": PG_PW,
        },
    }
    data.update(changes)
    return parse_document(data)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer config.yaml or BACKBONE_* variable leaks into these tests."""
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith("BACKBONE_"):
            monkeypatch.delenv(name)


def test_the_document_fills_every_connection() -> None:
    s = load_settings(document())
    assert s.stack == "unit"
    assert s.redis is not None and s.redis.endpoint == "127.0.0.1:6390"
    assert s.kafka is not None and s.kafka.topic("dead_letter") == "market-data.dead-letter"
    assert s.timescale is not None and s.timescale.endpoint == "127.0.0.1:15432,127.0.0.1:15433"
    assert s.redis.password is not None and s.redis.password.get_secret_value() == REDIS_PW


def test_priority_is_init_then_env_then_yaml_then_document(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "config.yaml").write_text(
        "namespace: from-yaml\nmetrics_port: 9100\nredis:\n  port: 6391\n"
        "cache:\n  ttl_seconds: 42\n  max_keys: 7\n"
    )
    s = load_settings(document())
    assert (s.namespace, s.metrics_port, s.cache.ttl_seconds, s.cache.max_keys) == (
        "from-yaml",
        9100,
        42,
        7,
    )
    # The overlay changed one field of redis; the document still supplies the rest.
    assert s.redis is not None and s.redis.port == 6391 and s.redis.host == "127.0.0.1"

    monkeypatch.setenv("BACKBONE_NAMESPACE", "from-env")
    monkeypatch.setenv("BACKBONE_CACHE__TTL_SECONDS", "5")
    monkeypatch.setenv("BACKBONE_REDIS__PORT", "6392")
    s = load_settings(document())
    assert (s.namespace, s.cache.ttl_seconds, s.cache.max_keys) == ("from-env", 5, 7)
    assert s.redis is not None and s.redis.port == 6392

    s = load_settings(document(), namespace="from-init", metrics_port=0)
    assert (s.namespace, s.metrics_port) == ("from-init", 0)


def test_backbone_config_names_the_overlay_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    overlay = tmp_path / "elsewhere.yaml"
    overlay.write_text("streaming_enabled: false\ntier: bootstrap\n")
    monkeypatch.setenv("BACKBONE_CONFIG", str(overlay))
    s = load_settings()
    assert s.streaming_enabled is False and s.tier == "bootstrap"


def test_secrets_never_show_in_repr_str_or_json() -> None:
    s = load_settings(document())
    for text in (repr(s), str(s), s.model_dump_json(), json.dumps(s.model_dump(mode="json"))):
        for secret in (REDIS_PW, KAFKA_PW, PG_PW):
            assert secret not in text


def test_validation_errors_do_not_echo_the_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKBONE_REDIS__PASSWORD", REDIS_PW)
    monkeypatch.setenv("BACKBONE_REDIS__PORT", "not-a-port")
    with pytest.raises(SettingsError) as caught:
        load_settings(document())
    assert "redis.port" in str(caught.value)
    assert REDIS_PW not in str(caught.value) and "not-a-port" not in str(caught.value)


def test_kafka_tls_verifies_certificates_and_host_names_by_default() -> None:
    k = KafkaConnectionSettings(bootstrap_servers=["127.0.0.1:9093"], security_protocol="SSL")
    context = k.client_kwargs()["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname is True
    off = k.model_copy(update={"ssl_verify": False}).client_kwargs()["ssl_context"]
    assert off.verify_mode == ssl.CERT_NONE


def test_kafka_sasl_needs_credentials_and_passes_them_to_the_client() -> None:
    with pytest.raises(ValidationError):
        KafkaConnectionSettings(bootstrap_servers=["h:1"], security_protocol="SASL_SSL")
    k = KafkaConnectionSettings(
        bootstrap_servers=["h:1"],
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        username="u",
        password=KAFKA_PW,
    )
    kwargs = k.client_kwargs()
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kwargs["sasl_plain_password"] == KAFKA_PW
    assert "ssl_context" not in kwargs


def test_redis_tls_verifies_by_default() -> None:
    r = RedisConnectionSettings(host="h", port=1, tls=True, ssl_cafile="/ca.pem")
    kwargs = r.client_kwargs()
    assert kwargs["ssl"] is True and kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["ssl_check_hostname"] is True and kwargs["ssl_ca_certs"] == "/ca.pem"


def test_redis_sentinel_mode_needs_sentinels_and_a_master_name() -> None:
    with pytest.raises(ValidationError):
        RedisConnectionSettings(mode="sentinel")
    r = RedisConnectionSettings(
        mode="sentinel", sentinels=[{"host": "127.0.0.1", "port": 26379}], master_name="bars"
    )
    assert "127.0.0.1:26379" in r.endpoint and "bars" in r.endpoint


def test_timescale_dsn_lists_every_host_and_asks_for_the_primary() -> None:
    t = TimescaleConnectionSettings(
        hosts=[{"host": "10.0.0.1", "port": 5432}, {"host": "10.0.0.2", "port": 5433}],
        dbname="market",
        user="backbone",
        password=PG_PW,
        pool_max_size=8,
    )
    dsn = t.conninfo()
    assert "host=10.0.0.1,10.0.0.2" in dsn and "port=5432,5433" in dsn
    assert "target_session_attrs=read-write" in dsn
    assert PG_PW not in dsn and t.connect_kwargs() == {"password": PG_PW}
    assert t.pool_max_size == 8


def test_without_a_document_there_are_no_connections() -> None:
    s = load_settings()
    assert s.redis is None and s.kafka is None and s.timescale is None
    assert s.namespace == "backbone" and s.streaming_enabled is True
