"""TLS on every connection, proven against real services.

Each listener of a local stack refuses plain text; every client verifies the
server's certificate chain and host name, so a server whose certificate has
expired, comes from another CA or names another host is refused, and so is a
client that was not given the stack's CA. The error class of each refusal is
asserted, not only that something failed.

The expired, foreign and wrongly named certificates are served by a real
``redis-server`` started here with certificates made by
:mod:`backbone_infra.render.certificates` (a stack keeps no CA key to sign a
bad certificate with, by design).

The checks that take only an outputs document (``check_*``) are shared with
the compose environment's tests (``test_compose_env.py``).
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from kafka import KafkaAdminClient
from kafka import errors as kafka_errors
from redis.backoff import NoBackoff
from redis.retry import Retry

from backbone.connections import ConnectionsDocument
from backbone.settings import KafkaConnectionSettings, RedisConnectionSettings
from backbone_infra.render.certificates import CertifiedKey, issue_server_cert, new_ca
from backbone_infra.targets.local.ports import LOOPBACK, PortAllocator
from backbone_infra.targets.local.provisioner import LocalStack

pytestmark = pytest.mark.integration

ONCE = Retry(NoBackoff(), 0)


def _doc(stack: LocalStack) -> ConnectionsDocument:
    doc = stack.document
    assert doc.redis is not None and doc.kafka is not None and doc.timescale is not None
    return doc


def _redis_kwargs(doc: ConnectionsDocument) -> dict[str, Any]:
    assert doc.redis is not None and doc.redis.password is not None
    return {
        "host": doc.redis.host,
        "port": doc.redis.port,
        "username": doc.redis.username,
        "password": doc.redis.password.get_secret_value(),
        "socket_timeout": 5,
        "retry": ONCE,
    }


def _pg_kwargs(doc: ConnectionsDocument) -> dict[str, Any]:
    t = doc.timescale
    assert t is not None and t.password is not None
    return {
        "host": t.hosts[0].host,
        "port": t.hosts[0].port,
        "dbname": t.dbname,
        "user": t.user,
        "password": t.password.get_secret_value(),
        "connect_timeout": 5,
    }


def _kafka_kwargs(doc: ConnectionsDocument) -> dict[str, Any]:
    k = doc.kafka
    assert k is not None and k.password is not None
    return {
        "bootstrap_servers": k.bootstrap_servers,
        "sasl_mechanism": k.sasl_mechanism,
        "sasl_plain_username": k.username,
        "sasl_plain_password": k.password.get_secret_value(),
        "bootstrap_timeout_ms": 4000,
        "request_timeout_ms": 4000,
    }


# -- checks on any stack's outputs document -------------------------------------------


def check_the_document_names_the_ca(doc: ConnectionsDocument, outputs: Path, ca: Path) -> None:
    """Every section verifies with the stack's CA at ``ca``; no key anywhere."""
    assert doc.redis is not None and doc.kafka is not None and doc.timescale is not None
    assert doc.redis.tls and doc.redis.ssl_cafile == str(ca)
    assert doc.kafka.security_protocol == "SASL_SSL" and doc.kafka.ssl_cafile == str(ca)
    assert doc.timescale.sslmode == "verify-full" and doc.timescale.sslrootcert == str(ca)
    # The CA's certificate only: no private key anywhere in the document.
    assert "PRIVATE KEY" not in outputs.read_text()
    assert "PRIVATE KEY" not in ca.read_text()


def check_each_service_negotiates_tls(doc: ConnectionsDocument) -> None:
    """Redis, PostgreSQL and Kafka each complete a TLS session with a client
    that verifies the chain and the host name (the document's settings)."""
    assert doc.redis is not None and doc.timescale is not None
    settings = RedisConnectionSettings.from_section(doc.redis)
    client = redis.Redis(**_redis_kwargs(doc), **settings.tls_kwargs())
    try:
        assert client.ping()
        sock = client.connection_pool.get_connection()._sock
        assert isinstance(sock, ssl.SSLSocket) and sock.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        client.close()
    with psycopg.connect(
        **_pg_kwargs(doc), sslmode="verify-full", sslrootcert=doc.timescale.sslrootcert
    ) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row == (True,)
    assert doc.kafka is not None
    k = KafkaConnectionSettings.from_section(doc.kafka)
    admin = KafkaAdminClient(**{**_kafka_kwargs(doc), **k.client_kwargs()})
    try:
        assert set(admin.list_topics()) >= {t.name for t in doc.kafka.topics.values()}
    finally:
        admin.close()


def check_plain_text_is_refused(doc: ConnectionsDocument) -> None:
    """A plain-text client of each service's TLS port is refused."""
    with pytest.raises(redis.ConnectionError):
        redis.Redis(**_redis_kwargs(doc)).ping()
    # hostssl only: a connection without TLS matches no pg_hba.conf rule.
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(**_pg_kwargs(doc), sslmode="disable")
    with pytest.raises(kafka_errors.KafkaError):
        KafkaAdminClient(**_kafka_kwargs(doc), security_protocol="SASL_PLAINTEXT").close()


# -- the stack is TLS by default ------------------------------------------------------


def test_the_document_names_the_ca_and_every_section_verifies(local_stack: LocalStack) -> None:
    check_the_document_names_the_ca(
        _doc(local_stack), local_stack.outputs_path, local_stack.dir / "tls" / "ca.crt"
    )


def test_each_service_negotiates_tls_with_verified_clients(local_stack: LocalStack) -> None:
    check_each_service_negotiates_tls(_doc(local_stack))


# -- plain text to a TLS port ---------------------------------------------------------


def test_plain_text_to_each_tls_port_is_refused(local_stack: LocalStack) -> None:
    check_plain_text_is_refused(_doc(local_stack))


# -- clients without the stack's CA ---------------------------------------------------


def test_a_client_without_the_stacks_ca_fails_verification(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    doc = _doc(local_stack)
    # The system's trust store does not know the stack's CA.
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        redis.Redis(**_redis_kwargs(doc), ssl=True, ssl_check_hostname=True).ping()
    foreign = tmp_path / "foreign-ca.crt"
    foreign.write_bytes(new_ca("someone-else").cert_pem)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(**_pg_kwargs(doc), sslmode="verify-full", sslrootcert=str(foreign))
    context = ssl.create_default_context(cafile=str(foreign))
    with pytest.raises(kafka_errors.KafkaError):
        KafkaAdminClient(
            **_kafka_kwargs(doc), security_protocol="SASL_SSL", ssl_context=context
        ).close()


# -- bad server certificates ------------------------------------------------------------


@contextmanager
def _serve_redis(tmp_path: Path, ca: CertifiedKey, server: CertifiedKey) -> Iterator[int]:
    """A real redis-server presenting ``server`` (signed by ``ca``) on a TLS port."""
    tmp_path = tmp_path / "server"
    tmp_path.mkdir()
    for name, data in (("ca.crt", ca.cert_pem), ("s.crt", server.cert_pem)):
        (tmp_path / name).write_bytes(data)
    key = tmp_path / "s.key"
    key.write_bytes(server.key_pem)
    key.chmod(0o600)
    port = PortAllocator().allocate()
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", LOOPBACK,
         "--tls-cert-file", str(tmp_path / "s.crt"), "--tls-key-file", str(key),
         "--tls-ca-cert-file", str(tmp_path / "ca.crt"), "--tls-auth-clients", "no",
         "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as sock:
                if sock.connect_ex((LOOPBACK, port)) == 0:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def trusted_ca(tmp_path: Path) -> CertifiedKey:
    ca = new_ca("tls-test")
    (tmp_path / "trusted.crt").write_bytes(ca.cert_pem)
    return ca


def _verified_ping(tmp_path: Path, port: int, host: str = LOOPBACK) -> None:
    redis.Redis(
        host=host, port=port, ssl=True, ssl_ca_certs=str(tmp_path / "trusted.crt"),
        ssl_check_hostname=True, socket_timeout=5, retry=ONCE,
    ).ping()  # fmt: skip


def test_an_expired_server_certificate_is_refused(tmp_path: Path, trusted_ca: CertifiedKey) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=30)
    expired = issue_server_cert(trusted_ca, [LOOPBACK], now=long_ago, valid_days=1)
    with (
        _serve_redis(tmp_path, trusted_ca, expired) as port,
        pytest.raises(redis.ConnectionError, match="certificate has expired"),
    ):
        _verified_ping(tmp_path, port)


def test_a_certificate_from_a_foreign_ca_is_refused(
    tmp_path: Path, trusted_ca: CertifiedKey
) -> None:
    foreign_ca = new_ca("foreign")
    server = issue_server_cert(foreign_ca, [LOOPBACK])
    with (
        _serve_redis(tmp_path, foreign_ca, server) as port,
        pytest.raises(redis.ConnectionError, match="certificate verify failed"),
    ):
        _verified_ping(tmp_path, port)


def test_a_certificate_for_another_host_is_refused(
    tmp_path: Path, trusted_ca: CertifiedKey
) -> None:
    server = issue_server_cert(trusted_ca, ["db.example.invalid"])
    with _serve_redis(tmp_path, trusted_ca, server) as port:
        with pytest.raises(redis.ConnectionError, match="mismatch"):
            _verified_ping(tmp_path, port)
        # The same server and CA, good in every other respect, with the name it carries
        # unchecked: the chain verifies, so the refusal above was the host name's.
        redis.Redis(
            host=LOOPBACK, port=port, ssl=True, ssl_ca_certs=str(tmp_path / "trusted.crt"),
            ssl_check_hostname=False, socket_timeout=5, retry=ONCE,
        ).ping()  # fmt: skip
