"""A per-stack certificate authority and server certificates (groundwork for TLS).

Each stack gets its own CA, so a certificate of one stack is worthless against
another (a client that trusts stack A's CA refuses stack B's servers). Server
certificates name every address a client may dial (IP SANs for addresses,
DNS SANs for host names), so clients can verify host names
(``sslmode=verify-full``, ``ssl_check_hostname``). Keys are ECDSA P-256, PEM,
PKCS#8 without a passphrase: the form Redis, PostgreSQL and Kafka
(``ssl.keystore.type=PEM``) read directly. The key files must be written
0600; the outputs document may carry the CA certificate, never a key.

Pure functions apart from randomness (key generation, serial numbers); no I/O.
Every target issues one CA per stack and one server certificate per service
(:func:`stack_certificates`); where the files live is :class:`TLSFiles`, the
paths the renderers put into each service's configuration. See ``docs/tls.md``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_FILE",
    "CA_VALID_DAYS",
    "SERVER_VALID_DAYS",
    "TLS_SERVICES",
    "CertifiedKey",
    "StackCertificates",
    "TLSFiles",
    "ca_cert_for_key",
    "certificate_request",
    "issue_server_cert",
    "new_ca",
    "new_private_key_pem",
    "sign_request",
    "stack_certificates",
    "tls_files",
]

#: The services that serve TLS, each with its own server certificate.
TLS_SERVICES = ("redis", "kafka", "postgres")
#: The CA bundle's file name in a stack's TLS directory (clients get its path).
CA_FILE = "ca.crt"

#: A stack's CA outlives its server certificates, which are re-issued on rotation.
CA_VALID_DAYS = 3650
SERVER_VALID_DAYS = 397
#: Tolerated clock skew between the machine that issues and the one that checks.
_BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True)
class CertifiedKey:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:
        return "CertifiedKey(<certificate>, <private key hidden>)"

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


#: A CA signs certificates and CRLs, nothing else.
_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
_SERVER_USAGE = x509.ExtendedKeyUsage(
    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    # X.509 caps a common name at 64 characters; clients check the SANs anyway
    # (a Kubernetes pod's DNS name is often longer).
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "market-data-backbone"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def new_ca(
    stack: str, *, now: datetime | None = None, valid_days: int = CA_VALID_DAYS
) -> CertifiedKey:
    """A self-signed CA for ``stack`` that may sign server certificates only
    (``path_length=0``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _ca_cert(key, f"backbone {stack} CA", now=now, valid_days=valid_days)
    return CertifiedKey(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _ca_cert(
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    now: datetime | None = None,
    valid_days: int = CA_VALID_DAYS,
) -> x509.Certificate:
    now = now or datetime.now(UTC)
    name = _name(common_name)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue_server_cert(
    ca: CertifiedKey,
    hosts: Sequence[str],
    *,
    now: datetime | None = None,
    valid_days: int = SERVER_VALID_DAYS,
) -> CertifiedKey:
    """A certificate for a server reached at any of ``hosts`` (addresses or
    names; the first is its common name), signed by ``ca``. Good for server and
    client authentication (Kafka brokers and Redis replicas are both)."""
    if not hosts:
        raise ValueError("a server certificate needs at least one host name or address")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _server_cert(ca, key.public_key(), hosts, now=now, valid_days=valid_days)
    return CertifiedKey(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _ec_key(pem: bytes | str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(
        pem.encode() if isinstance(pem, str) else pem, password=None
    )
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("not an ECDSA private key (the stack's keys are P-256)")
    return key


def _server_cert(
    ca: CertifiedKey,
    public_key: ec.EllipticCurvePublicKey,
    hosts: Sequence[str],
    *,
    now: datetime | None = None,
    valid_days: int = SERVER_VALID_DAYS,
) -> x509.Certificate:
    now = now or datetime.now(UTC)
    ca_cert = ca.certificate
    ca_key = _ec_key(ca.key_pem)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


# -- the steps one at a time (pulumi-tls's resources, as Pulumi's mocks play them) --


def new_private_key_pem() -> str:
    """A new P-256 key, PKCS#8 PEM."""
    return _key_pem(ec.generate_private_key(ec.SECP256R1())).decode()


def ca_cert_for_key(key_pem: str, common_name: str) -> str:
    """A CA certificate (as :func:`new_ca` makes) for an existing key."""
    return _ca_cert(_ec_key(key_pem), common_name).public_bytes(serialization.Encoding.PEM).decode()


def certificate_request(key_pem: str, hosts: Sequence[str]) -> str:
    """A CSR for ``key_pem`` naming ``hosts`` (the first is the common name)."""
    key = _ec_key(key_pem)
    hosts = list(dict.fromkeys(hosts))  # a name once, however often it is given
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(hosts[0]))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def sign_request(ca_cert_pem: str, ca_key_pem: str, csr_pem: str) -> str:
    """The server certificate (as :func:`issue_server_cert` makes) for a CSR."""
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise TypeError("the request's key is not ECDSA")
    sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    hosts = [str(n.value) for n in sans]
    ca = CertifiedKey(ca_cert_pem.encode(), ca_key_pem.encode())
    cert = _server_cert(ca, public_key, hosts)
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class TLSFiles:
    """Where one server finds its TLS material, as paths the server itself
    sees (a local directory, or a container's mount point)."""

    #: The stack's CA bundle: what the server verifies its peers with.
    ca: str
    cert: str
    #: The private key (0600, or a mounted secret).
    key: str
    #: Key and certificate in one PEM file: Kafka's ``ssl.keystore.type=PEM``.
    keystore: str


def tls_files(directory: str, service: str) -> TLSFiles:
    """The layout every target uses: ``ca.crt``, ``SERVICE.crt``, ``SERVICE.key``
    and ``SERVICE-keystore.pem`` (key, then certificate)."""
    base = directory.rstrip("/")
    return TLSFiles(
        ca=f"{base}/{CA_FILE}",
        cert=f"{base}/{service}.crt",
        key=f"{base}/{service}.key",
        keystore=f"{base}/{service}-keystore.pem",
    )


@dataclass(frozen=True)
class StackCertificates:
    """One stack's CA and one server certificate per service."""

    ca: CertifiedKey
    servers: Mapping[str, CertifiedKey]

    def __repr__(self) -> str:
        return f"StackCertificates(services={sorted(self.servers)}, <private keys hidden>)"

    def files(self, service: str) -> dict[str, bytes]:
        """File name -> content of what ``service`` mounts (:func:`tls_files` names).
        Holds a private key: write it 0600 / mount it as a secret."""
        server = self.servers[service]
        return {
            CA_FILE: self.ca.cert_pem,
            f"{service}.crt": server.cert_pem,
            f"{service}.key": server.key_pem,
            f"{service}-keystore.pem": server.key_pem + server.cert_pem,
        }


def stack_certificates(
    stack: str, hosts: Mapping[str, Sequence[str]], *, now: datetime | None = None
) -> StackCertificates:
    """A new CA for ``stack`` and a certificate per service naming ``hosts[service]``
    (every address or name a client or peer dials)."""
    ca = new_ca(stack, now=now)
    return StackCertificates(
        ca=ca,
        servers={svc: issue_server_cert(ca, names, now=now) for svc, names in hosts.items()},
    )
