"""The per-stack CA and server certificates, checked by real TLS handshakes
(Python's ``ssl`` over a socket pair, host names verified)."""

from __future__ import annotations

import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from backbone_infra.render.certificates import CertifiedKey, issue_server_cert, new_ca


def _files(tmp: Path, name: str, pair: CertifiedKey) -> tuple[Path, Path]:
    cert, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    key.chmod(0o600)
    return cert, key


def _handshake(tmp: Path, server: CertifiedKey, trusted_ca: CertifiedKey, host: str) -> str:
    """Run one TLS handshake; the server presents ``server``, the client
    trusts ``trusted_ca`` and checks ``host``. Returns the negotiated version."""
    cert, key = _files(tmp, "server", server)
    ca_file, _ = _files(tmp, "ca", trusted_ca)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(ca_file))
    left, right = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(left, server_side=True) as s:
                s.recv(1)
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(right, server_hostname=host) as c:
            c.sendall(b"x")
            return str(c.version())
    finally:
        right.close()
        thread.join(timeout=10)
        left.close()


def test_a_client_trusting_the_stack_ca_verifies_the_server_by_address_and_name(
    tmp_path: Path,
) -> None:
    ca = new_ca("dev")
    server = issue_server_cert(ca, ["127.0.0.1", "localhost", "redis-1.backbone-dev"])
    for host in ("127.0.0.1", "localhost", "redis-1.backbone-dev"):
        assert _handshake(tmp_path, server, ca, host).startswith("TLS")


def test_another_stacks_ca_is_refused(tmp_path: Path) -> None:
    server = issue_server_cert(new_ca("a"), ["127.0.0.1"])
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _handshake(tmp_path, server, new_ca("b"), "127.0.0.1")


def test_a_host_the_certificate_does_not_name_is_refused(tmp_path: Path) -> None:
    ca = new_ca("dev")
    server = issue_server_cert(ca, ["127.0.0.1"])
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(tmp_path, server, ca, "127.0.0.2")


def test_an_expired_certificate_is_refused(tmp_path: Path) -> None:
    ca = new_ca("dev")
    past = datetime.now(UTC) - timedelta(days=30)
    server = issue_server_cert(ca, ["127.0.0.1"], now=past, valid_days=1)
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        _handshake(tmp_path, server, ca, "127.0.0.1")


def test_the_ca_signs_only_leaves_and_the_leaf_is_no_ca() -> None:
    ca = new_ca("dev")
    leaf = issue_server_cert(ca, ["127.0.0.1"]).certificate
    ca_constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert ca_constraints.value.ca and ca_constraints.value.path_length == 0
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    leaf.verify_directly_issued_by(ca.certificate)
    assert "private key hidden" in repr(ca) and b"PRIVATE" not in repr(ca).encode()


def test_a_server_certificate_needs_a_host() -> None:
    with pytest.raises(ValueError, match="at least one host"):
        issue_server_cert(new_ca("dev"), [])
