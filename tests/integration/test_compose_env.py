"""The compose environment end to end: up, ingest reconciled, a node killed and recovered, down.

``harness up --env compose`` starts the project's images on podman; the
backbone's own ``ingest`` command reconciles against the outputs document it
writes (published loopback ports); a killed Kafka container is restarted with
its data; ``harness down`` leaves no container. Every service serves TLS by
default, as in the local environment: each TLS port refuses plain text and
negotiates with a verifying client (the checks of ``test_tls.py``); the
stack's keys stay 0600 on the host and PostgreSQL's is its own 0600 copy in
the container. Skips with podman's own reason where no engine can run.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from backbone.cli import app as backbone_app
from backbone.connections import load_document
from backbone_harness.cli import app as harness_app
from backbone_harness.containers import configs
from backbone_harness.containers.engine import no_engine_reason, podman
from backbone_infra.targets.local.state import stacks_root
from tests.integration.test_tls import (
    check_each_service_negotiates_tls,
    check_plain_text_is_refused,
    check_the_document_names_the_ca,
)

_REASON = no_engine_reason()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
]


def _harness(*args: str) -> str:
    result = CliRunner().invoke(harness_app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _containers(name: str) -> list[str]:
    done = podman("ps", "-a", "--filter", f"label=backbone.stack={name}", "--format", "{{.Names}}")
    return done.stdout.split()


@pytest.fixture(scope="module")
def compose_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    name = f"c-{secrets.token_hex(3)}"
    try:
        output = _harness("up", "--env", "compose", "--size", "minimal", "--name", name)
        yield name, Path(output.strip().splitlines()[-1])
    finally:
        _harness("down", "--name", name)
        assert _containers(name) == [], "containers outlived `harness down`"
        shutil.rmtree(stacks_root() / name, ignore_errors=True)


def _ingest(outputs: Path) -> dict[str, Any]:
    result = CliRunner().invoke(
        backbone_app,
        [
            "ingest",
            "--tier",
            "institutional",
            "--outputs",
            str(outputs),
            "--bars",
            "1000",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{") :])


def test_up_writes_a_document_with_published_loopback_ports(
    compose_stack: tuple[str, Path],
) -> None:
    name, outputs = compose_stack
    doc = json.loads(outputs.read_text())
    assert doc["schema"] == "backbone.connections/v1" and doc["stack"] == name
    assert doc["redis"]["host"] == "127.0.0.1"
    assert all(s.startswith("127.0.0.1:") for s in doc["kafka"]["bootstrap_servers"])
    assert [h["host"] for h in doc["timescale"]["hosts"]] == ["127.0.0.1"]
    assert len(_containers(name)) == 3


def test_the_document_names_the_stacks_ca_and_no_key(compose_stack: tuple[str, Path]) -> None:
    name, outputs = compose_stack
    tls = stacks_root() / name / "tls"
    check_the_document_names_the_ca(load_document(outputs), outputs, tls / "ca.crt")
    # The local environment's modes: keys and keystores 0600, the directory 0711.
    assert tls.stat().st_mode & 0o777 == 0o711
    keys = [f for f in tls.iterdir() if f.name.endswith((".key", "-keystore.pem"))]
    assert keys and all(f.stat().st_mode & 0o777 == 0o600 for f in keys)


def test_each_tls_port_negotiates_with_a_verifying_client(compose_stack: tuple[str, Path]) -> None:
    check_each_service_negotiates_tls(load_document(compose_stack[1]))


def test_plain_text_to_each_tls_port_is_refused(compose_stack: tuple[str, Path]) -> None:
    check_plain_text_is_refused(load_document(compose_stack[1]))


def test_postgres_reads_its_own_0600_copy_of_the_key(compose_stack: tuple[str, Path]) -> None:
    name, _ = compose_stack
    done = podman(
        "exec",
        f"backbone-{name}-postgres-1",
        "stat",
        "-c",
        "%U %a",
        configs.POSTGRES_KEY,
    )
    assert done.stdout.split() == ["postgres", "600"]


def test_each_job_document_logs_in_with_only_its_rights(
    compose_stack: tuple[str, Path],
) -> None:
    """``harness outputs --job`` on a podman stack: the writer produces and is refused
    a fetch; the reader reads and is refused a cache write and an ``INSERT``."""
    import kafka.errors as kafka_errors
    import psycopg
    import psycopg.errors
    import redis
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from backbone.connections import load_document
    from backbone.settings import load_settings

    name, _ = compose_stack
    writer = load_document(_harness("outputs", "--name", name, "--job", "writer").strip())
    reader = load_document(_harness("outputs", "--name", name, "--job", "reader").strip())
    assert writer.kafka is not None and reader.redis is not None and reader.timescale
    kafka = load_settings(writer).kafka
    assert kafka is not None
    tp = TopicPartition(writer.kafka.topic("daily_bars"), 0)
    producer = KafkaProducer(**kafka.client_kwargs(), max_block_ms=10_000)
    try:
        assert producer.send(tp.topic, b"writer").get(timeout=10).offset >= 0
    finally:
        producer.close(timeout=5)
    consumer = KafkaConsumer(**kafka.client_kwargs(), enable_auto_commit=False)
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        with pytest.raises(kafka_errors.TopicAuthorizationFailedError):
            for _ in range(20):
                consumer.poll(timeout_ms=500)
    finally:
        consumer.close()
    cache = load_settings(reader).redis
    assert cache is not None and reader.redis.host and reader.redis.port
    with redis.Redis(host=reader.redis.host, port=reader.redis.port, **cache.client_kwargs()) as r:
        assert r.get("backbone:job-check") is None
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.set("backbone:job-check", b"1")
    t = reader.timescale
    assert t.password is not None
    with psycopg.connect(t.conninfo(), password=t.password.get_secret_value()) as conn:
        assert conn.execute("SELECT count(*) FROM bars").fetchone() is not None
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO bars (symbol, timeframe, ts, open, high, low, close, volume) "
                "VALUES ('X', '1m', now(), 1, 1, 1, 1, 1)"
            )


def test_ingest_reconciles_against_the_containers(compose_stack: tuple[str, Path]) -> None:
    _, outputs = compose_stack
    report = _ingest(outputs)
    assert report["reconciles"] is True
    assert report["dead_lettered"] == 0
    assert report["records_in"] == report["stored"] + report["duplicates"]


def test_a_killed_kafka_container_recovers_with_its_data(compose_stack: tuple[str, Path]) -> None:
    name, outputs = compose_stack
    before = _ingest(outputs)
    _harness("node", "kill", "kafka-1", "--name", name)
    assert "exited" in _harness("status", "--name", name)
    _harness("node", "restart", "kafka-1", "--name", name)
    after = _ingest(outputs)
    assert after["reconciles"] is True
    # The same deterministic bars again: all already stored, none lost or doubled.
    assert after["stored"] == 0 and after["duplicates"] == before["records_in"]


def _tls_handshake(server: str, ca_file: str, timeout_s: float = 5.0) -> bool:
    """Whether ``server`` finishes a verified TLS handshake within ``timeout_s``."""
    import socket
    import ssl

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


def _kafka_answers(outputs: Path) -> bool:
    """Whether the broker completes a bootstrap (API versions + SASL) within 5 s."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    k = json.loads(outputs.read_text())["kafka"]
    if k.get("ssl_cafile") and not _tls_handshake(k["bootstrap_servers"][0], k["ssl_cafile"]):
        # kafka-python 3.0 waits for a TLS handshake without a deadline; a
        # partitioned broker behind podman's forwarder accepts and never answers.
        return False
    try:
        KafkaAdminClient(
            bootstrap_servers=k["bootstrap_servers"],
            security_protocol=k["security_protocol"],
            ssl_cafile=k.get("ssl_cafile"),  # TLS by default: the stack's CA
            sasl_mechanism=k["sasl_mechanism"],
            sasl_plain_username=k["username"],
            sasl_plain_password=k["password"],
            request_timeout_ms=5000,
            bootstrap_timeout_ms=5000,
        ).close()
    except KafkaError:
        return False
    return True


def test_a_partitioned_kafka_loses_nothing_it_acknowledged(
    compose_stack: tuple[str, Path],
) -> None:
    name, outputs = compose_stack
    before = _ingest(outputs)
    assert before["reconciles"] is True
    assert _kafka_answers(outputs)
    _harness("node", "disconnect", "kafka-1", "--name", name)
    try:
        # A partition, not a crash: podman still holds the published port, but
        # nothing behind it answers.
        assert not _kafka_answers(outputs)
    finally:
        _harness("node", "reconnect", "kafka-1", "--name", name)
    assert _kafka_answers(outputs)
    after = _ingest(outputs)
    assert after["reconciles"] is True
    assert after["stored"] == 0 and after["duplicates"] == before["records_in"]
