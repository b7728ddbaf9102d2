"""The outputs document ``backbone.connections/v1``: one model, validated on both sides."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backbone.connections import (
    SCHEMA,
    TOPIC_NAMES,
    ConnectionsError,
    TimescaleConnection,
    dump_document,
    load_document,
    parse_document,
    write_document,
)

REDIS_PW = "redis-secret-value"
PG_PW = "pg-secret-value"
KAFKA_PW = "kafka-secret-value"


def _raw(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "stack": "dev",
        "environment": "local",
        "tier": "institutional",
        "size": "minimal",
        "redis": {
            "mode": "standalone",
            "host": "127.0.0.1",
            "port": 6380,
            "username": "backbone",
            "password": REDIS_PW,
        },
        "kafka": {
            "bootstrap_servers": ["127.0.0.1:9092"],
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "username": "backbone",
            "password": KAFKA_PW,
            "topics": {
                k: {"name": v, "partitions": 3, "replication_factor": 1}
                for k, v in TOPIC_NAMES.items()
            },
        },
        "timescale": {
            "hosts": [{"host": "127.0.0.1", "port": 5433}, {"host": "127.0.0.1", "port": 5434}],
            "dbname": "marketdata",
            "user": "backbone",
            "password": PG_PW,
        },
    }
    doc.update(overrides)
    return doc


def test_a_complete_institutional_document_validates() -> None:
    doc = parse_document(_raw())
    assert doc.schema_ == SCHEMA
    assert doc.kafka is not None and doc.kafka.topic("daily_bars") == "market-data.daily-bars"


def test_secrets_are_masked_unless_asked_for() -> None:
    doc = parse_document(_raw())
    assert REDIS_PW not in repr(doc)
    masked = json.dumps(dump_document(doc, reveal_secrets=False))
    assert all(pw not in masked for pw in (REDIS_PW, PG_PW, KAFKA_PW))
    revealed = dump_document(doc, reveal_secrets=True)
    assert revealed["redis"]["password"] == REDIS_PW


def test_written_documents_are_private_and_read_back_equal(tmp_path: Path) -> None:
    doc = parse_document(_raw())
    path = write_document(doc, tmp_path / "outputs.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_document(path) == doc


@pytest.mark.parametrize("missing", ["redis", "kafka", "timescale"])
def test_institutional_documents_need_every_service(missing: str) -> None:
    raw = _raw()
    del raw[missing]
    with pytest.raises(ConnectionsError, match=f"needs {missing}"):
        parse_document(raw)


def test_bootstrap_documents_need_only_duckdb() -> None:
    doc = parse_document(
        {
            "schema": SCHEMA,
            "stack": "b",
            "environment": "local",
            "tier": "bootstrap",
            "duckdb": {"path": "/tmp/b.duckdb"},
        }
    )
    assert doc.redis is None and doc.duckdb is not None


def test_sentinel_mode_needs_sentinels_and_a_master_name() -> None:
    raw = _raw()
    raw["redis"] = {**raw["redis"], "mode": "sentinel", "host": None, "port": None}
    with pytest.raises(ConnectionsError, match="redis"):
        parse_document(raw)
    raw["redis"]["sentinels"] = [{"host": "127.0.0.1", "port": 26379}]
    raw["redis"]["master_name"] = "backbone"
    assert parse_document(raw).redis.mode == "sentinel"  # type: ignore[union-attr]


def test_sasl_needs_credentials_and_every_topic() -> None:
    raw = _raw()
    raw["kafka"] = {**raw["kafka"], "password": None}
    with pytest.raises(ConnectionsError, match="kafka"):
        parse_document(raw)
    raw = _raw()
    raw["kafka"]["topics"].pop("dead_letter")
    with pytest.raises(ConnectionsError, match="dead_letter"):
        parse_document(raw)


def test_a_wrong_schema_version_is_refused_with_what_to_do() -> None:
    with pytest.raises(ConnectionsError, match="regenerate it with `harness up`"):
        parse_document(_raw(schema="backbone.connections/v0"))


def test_a_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConnectionsError, match="harness up --env local"):
        load_document(tmp_path / "nope.json")


def test_conninfo_lists_every_host_primary_first_and_never_the_password() -> None:
    t = TimescaleConnection.model_validate(_raw()["timescale"])
    info = t.conninfo()
    assert "host=127.0.0.1,127.0.0.1 port=5433,5434" in info
    assert "target_session_attrs=read-write" in info
    assert PG_PW not in info


# A marker prefix: a bare word such as "sentinel" is in the message for other reasons.
@given(password=st.text(min_size=8, max_size=40).map(lambda s: f"pw-{s}-pw"))
def test_validation_errors_never_echo_a_secret(password: str) -> None:
    raw = _raw()
    raw["redis"] = {**raw["redis"], "password": password, "mode": "cluster"}
    with pytest.raises(ConnectionsError) as caught:
        parse_document(raw)
    assert password not in str(caught.value)
    assert "redis.mode" in str(caught.value)
