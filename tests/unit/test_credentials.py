"""The credential source that follows the outputs document (``backbone/credentials.py``).

A sequence of writes to the document file — valid documents with new passwords,
half-written copies, invalid JSON, a document missing its passwords, the file
gone — and after each one the source must hand out the credentials of the
newest *valid* document, keep the last good ones otherwise, and never show a
password in its repr, its adapters' repr or a log line.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import ConnectionPool

from backbone.cache.redis import redis_client
from backbone.connections import TOPIC_NAMES, ConnectionsError, parse_document, write_document
from backbone.credentials import DocumentCredentials, RedisDocumentCredentials, timescale_kwargs
from backbone.settings import RedisConnectionSettings, TimescaleConnectionSettings
from backbone.store.timescale import store_pool

#: Marked so that a match in a repr or a log line is a leaked password, not a coincidence.
_PASSWORD = st.binary(min_size=12, max_size=24).map(lambda b: "pw-" + b.hex())


def document(redis_pw: str, kafka_pw: str, pg_pw: str) -> dict[str, Any]:
    """A complete institutional document with these three passwords."""
    return {
        "schema": "backbone.connections/v1",
        "stack": "reload-unit",
        "environment": "local",
        "tier": "institutional",
        "redis": {
            "host": "127.0.0.1",
            "port": 6379,
            "username": "backbone",
            "password": redis_pw,
        },
        "kafka": {
            "bootstrap_servers": ["127.0.0.1:9092"],
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "username": "backbone",
            "password": kafka_pw,
            "topics": {
                k: {"name": v, "partitions": 3, "replication_factor": 1}
                for k, v in TOPIC_NAMES.items()
            },
        },
        "timescale": {
            "hosts": ["127.0.0.1:5432"],
            "dbname": "backbone",
            "user": "backbone",
            "password": pg_pw,
        },
    }


def _write_raw(path: Path, data: bytes) -> None:
    """Overwrite in place (a hand edit or a half-finished copy, not the atomic rename)."""
    with open(path, "wb") as fh:
        fh.write(data)


_VALID = st.tuples(_PASSWORD, _PASSWORD, _PASSWORD).map(lambda pws: ("valid", pws))
_BROKEN = st.sampled_from(["half", "not-json", "no-password", "gone"]).map(lambda k: (k, None))


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=_PASSWORD, steps=st.lists(st.one_of(_VALID, _BROKEN), min_size=1, max_size=8))
def test_the_source_follows_the_newest_valid_document(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    first: str,
    steps: list[tuple[str, tuple[str, str, str] | None]],
) -> None:
    path = tmp_path / "outputs.json"
    path.unlink(missing_ok=True)
    start = document(first, first + "k", first + "p")
    write_document(parse_document(start), path)
    source = DocumentCredentials(path, parse_document(start))
    provider = RedisDocumentCredentials(source)
    pg_kwargs = timescale_kwargs(source, {"application_name": "t"})
    expected = (first, first + "k", first + "p")
    secrets = set(expected)
    generation = 0
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="backbone.credentials"):
        for kind, pws in steps:
            if kind == "valid":
                assert pws is not None
                write_document(parse_document(document(*pws)), path)  # atomic, 0600
                if pws != expected:
                    generation += 1
                expected = pws
                secrets |= set(pws)
            elif kind == "half":
                text = json.dumps(document("x" * 16, "y" * 16, "z" * 16))
                _write_raw(path, text[: len(text) // 2].encode())
            elif kind == "not-json":
                _write_raw(path, b"{not json")
            elif kind == "no-password":
                broken = document("w" * 16, "w" * 16, "w" * 16)
                del broken["redis"]["password"]
                _write_raw(path, json.dumps(broken).encode())
            else:
                path.unlink(missing_ok=True)

            assert provider.get_credentials() == ("backbone", expected[0])
            doc = source.document()
            assert doc.kafka is not None and doc.kafka.password is not None
            assert doc.kafka.password.get_secret_value() == expected[1]
            assert pg_kwargs() == {"application_name": "t", "password": expected[2]}
            assert source.generation == generation
            for shown in (repr(source), repr(provider), str(doc), repr(doc)):
                assert not any(pw in shown for pw in secrets), shown
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert not any(pw in logged for pw in secrets)
    broken_steps = [k for k, _ in steps if k in ("half", "not-json", "no-password")]
    if broken_steps:
        assert "not usable" in logged and str(path) in logged


def test_a_source_without_a_document_reads_the_file_and_refuses_a_bad_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outputs.json"
    write_document(parse_document(document("a" * 16, "b" * 16, "c" * 16)), path)
    assert RedisDocumentCredentials(DocumentCredentials(path)).get_credentials() == (
        "backbone",
        "a" * 16,
    )
    _write_raw(path, b"{")
    with pytest.raises(ConnectionsError) as caught:
        DocumentCredentials(path)
    assert "a" * 16 not in str(caught.value)


def test_the_clients_ask_the_source_for_each_connection(tmp_path: Path) -> None:
    """redis-py gets the provider (and no fixed password); the pool gets a callable."""
    path = tmp_path / "outputs.json"
    doc = parse_document(document("r" * 16, "k" * 16, "p" * 16))
    write_document(doc, path)
    source = DocumentCredentials(path, doc)
    assert doc.redis is not None and doc.timescale is not None
    client, _ = redis_client(
        RedisConnectionSettings.from_section(doc.redis), RedisDocumentCredentials(source)
    )
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs.get("password") is None and kwargs.get("username") is None
    assert kwargs["credential_provider"].get_credentials() == ("backbone", "r" * 16)
    pool: ConnectionPool[Any] = store_pool(
        TimescaleConnectionSettings.from_section(doc.timescale), credentials=source
    )
    assert callable(pool.kwargs)
    write_document(parse_document(document("r2" * 8, "k" * 16, "p2" * 8)), path)
    assert kwargs["credential_provider"].get_credentials() == ("backbone", "r2" * 8)
    resolved = pool.kwargs()
    assert resolved["password"] == "p2" * 8 and resolved["application_name"] == "backbone-store"
    client.close()


def test_the_file_stays_private(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    write_document(parse_document(document("a" * 16, "b" * 16, "c" * 16)), path)
    DocumentCredentials(path).document()
    assert os.stat(path).st_mode & 0o077 == 0
