"""The TLS half of every renderer, and the certificates each target mounts.

With ``tls`` every listener is TLS (Redis ``port 0``, Kafka ``SASL_SSL`` on all
listeners including the controller's, PostgreSQL ``ssl = on`` with ``hostssl``
rules), and without it nothing mentions TLS at all (``--no-tls``, measuring only).
"""

from __future__ import annotations

import ipaddress
import re

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from backbone.connections import HostPort
from backbone_infra.components.certificates import mock_tls_outputs
from backbone_infra.render.certificates import (
    certificate_request,
    new_ca,
    sign_request,
    stack_certificates,
    tls_files,
)
from backbone_infra.render.exporters import (
    postgres_exporter_env,
    redis_exporter_args,
    redis_exporter_uri,
)
from backbone_infra.render.kafka import (
    KafkaNodePorts,
    client_properties,
    render_server_properties,
)
from backbone_infra.render.postgres import pg_hba_conf, postgresql_conf
from backbone_infra.render.redis import redis_conf, sentinel_conf
from backbone_infra.spec import build_spec

SPEC = build_spec("t", size="ha")
TLS = tls_files("/etc/tls", "svc")
PRIMARY = HostPort(host="127.0.0.1", port=7000)


def _redis(tls: object) -> str:
    return redis_conf(
        SPEC.redis, bind="127.0.0.1", port=7001, announce_host="127.0.0.1", data_dir="/d",
        primary=PRIMARY, password="pw", admin_password="apw", tls=tls,  # type: ignore[arg-type]
    )  # fmt: skip


def test_redis_and_sentinel_close_plain_text_and_replicate_over_tls() -> None:
    text = _redis(TLS)
    assert re.search(r"^port 0$", text, re.M) and re.search(r"^tls-port 7001$", text, re.M)
    for line in ("tls-replication yes", "tls-cluster yes", "tls-auth-clients no",
                 f"tls-cert-file {TLS.cert}", f"tls-key-file {TLS.key}",
                 f"tls-ca-cert-file {TLS.ca}"):  # fmt: skip
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    sentinel = sentinel_conf(
        SPEC.redis, bind="127.0.0.1", port=7002, announce_host="127.0.0.1", data_dir="/d",
        primary=PRIMARY, password="pw", admin_password="apw", tls=TLS,
    )  # fmt: skip
    assert "port 0\ntls-port 7002\n" in sentinel and "tls-replication yes" in sentinel
    plain = _redis(None)
    assert re.search(r"^port 7001$", plain, re.M) and "tls" not in plain


def _kafka(tls: object) -> dict[str, str]:
    ports = {n: KafkaNodePorts(9000 + n, 9100 + n, 9200 + n, 9300 + n) for n in (1, 2, 3)}
    text = render_server_properties(
        SPEC.kafka, node=1, ports=ports, data_dir="/d", client_password="c",
        admin_password="a", tls=tls,  # type: ignore[arg-type]
    )  # fmt: skip
    return dict(ln.split("=", 1) for ln in text.splitlines() if ln and not ln.startswith("#"))


def test_every_kafka_listener_is_sasl_ssl_with_pem_stores_and_host_names_checked() -> None:
    props = _kafka(TLS)
    assert props["listener.security.protocol.map"] == (
        "CLIENT:SASL_SSL,INTERNAL:SASL_SSL,CONTROLLER:SASL_SSL"
    )
    assert (props["ssl.keystore.type"], props["ssl.keystore.location"]) == ("PEM", TLS.keystore)
    assert (props["ssl.truststore.type"], props["ssl.truststore.location"]) == ("PEM", TLS.ca)
    assert props["ssl.endpoint.identification.algorithm"] == "https"
    plain = _kafka(None)
    assert "SASL_SSL" not in plain["listener.security.protocol.map"]
    assert not any(k.startswith("ssl.") for k in plain)


def test_kafka_cli_tools_get_the_truststore() -> None:
    text = client_properties(mechanism="SCRAM-SHA-512", username="admin", password="p",
                             truststore="/ca.crt")  # fmt: skip
    assert "security.protocol=SASL_SSL\n" in text
    assert "ssl.truststore.type=PEM\nssl.truststore.location=/ca.crt\n" in text
    plain = client_properties(mechanism="PLAIN", username="u", password="p", truststore=None)
    assert "security.protocol=SASL_PLAINTEXT\n" in plain and "ssl." not in plain


def test_postgres_serves_tls_and_admits_remote_roles_over_tls_only() -> None:
    conf = postgresql_conf(SPEC.postgres, listen="*", timescaledb=False, tls=TLS)
    for line in ("ssl = on", f"ssl_cert_file = '{TLS.cert}'", f"ssl_key_file = '{TLS.key}'",
                 f"ssl_ca_file = '{TLS.ca}'"):  # fmt: skip
        assert line in conf.splitlines()
    assert "ssl = off" in postgresql_conf(SPEC.postgres, listen="*", timescaledb=False)
    rules = [r.split() for r in pg_hba_conf(SPEC.postgres, network="all").splitlines()]
    assert rules and all(r[0] == "hostssl" for r in rules)


def test_exporters_verify_the_servers_they_scrape() -> None:
    uri = redis_exporter_uri("localhost", 6379, tls=True)
    assert uri == "rediss://localhost:6379"
    args = redis_exporter_args(SPEC.redis, redis_uri=uri, listen=":9121", password_file="/p",
                               sentinel=False, ca_file="/ca.crt")  # fmt: skip
    assert "--tls-ca-cert-file=/ca.crt" in args
    assert "skip-tls-verification" not in " ".join(args)
    env = postgres_exporter_env(
        SPEC.postgres, server="localhost:5432", password_file="/p", sslrootcert="/ca"
    )
    assert env["DATA_SOURCE_URI"].endswith("?sslmode=verify-full&sslrootcert=/ca")


hosts = st.lists(
    st.one_of(
        st.ip_addresses(v=4).map(str),
        st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,4}", fullmatch=True),
    ),
    min_size=1,
    max_size=6,
    unique=True,
)


def _sans(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n.value) for n in ext}


@settings(max_examples=15, deadline=None)
@given(names=hosts)
def test_each_certificate_names_exactly_its_hosts_and_chains_to_the_stacks_ca(
    names: list[str],
) -> None:
    certs = stack_certificates("p", {"svc": names})
    ca = certs.ca.certificate
    server = certs.servers["svc"].certificate
    server.verify_directly_issued_by(ca)
    assert _sans(server) == {str(ipaddress.ip_address(h)) if h[0].isdigit() else h for h in names}
    files = certs.files("svc")
    assert b"PRIVATE KEY" not in files["ca.crt"]
    assert files["svc-keystore.pem"].startswith(b"-----BEGIN PRIVATE KEY-----")


def test_a_csr_signed_by_one_ca_does_not_chain_to_another() -> None:
    ca, other = new_ca("a"), new_ca("b")
    key = mock_tls_outputs("tls:index/privateKey:PrivateKey", {})["privateKeyPem"]
    csr = certificate_request(key, ["kafka-1", "127.0.0.1"])
    cert = x509.load_pem_x509_certificate(
        sign_request(ca.cert_pem.decode(), ca.key_pem.decode(), csr).encode()
    )
    cert.verify_directly_issued_by(ca.certificate)
    assert _sans(cert) == {"kafka-1", "127.0.0.1"}
    with pytest.raises(ValueError, match="issuer"):
        cert.verify_directly_issued_by(other.certificate)
