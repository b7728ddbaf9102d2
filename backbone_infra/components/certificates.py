"""``StackCertificates``: the CA and server certificates of a Docker or Kubernetes stack.

**Choice: pulumi-tls, on Docker and Kubernetes alike** (not cert-manager).
The certificates are Pulumi resources (``tls.PrivateKey``,
``tls.SelfSignedCert``, ``tls.CertRequest``, ``tls.LocallySignedCert``): the
same declaration serves both targets, needs no controller or CRDs in the
cluster, and the keys live in the stack's state as encrypted secrets, so they
stay the same from one ``pulumi up`` to the next and are re-issued only when
the names a certificate carries change. cert-manager would rotate on its own,
but only on Kubernetes, and only after its operator is installed. The shape is
the one :mod:`backbone_infra.render.certificates` issues locally: an ECDSA P-256
CA that signs server certificates only, server certificates good for server
and client authentication (Kafka brokers and Redis replicas are both), keys
as PKCS#8 (what Kafka's PEM keystore reads).

Every service mounts its files at :data:`TLS_DIR` (:func:`tls_files` names);
keys and keystores as secrets.

:func:`mock_tls_outputs` is pulumi-tls as Pulumi's mocks see it: real keys and
certificates made with ``cryptography``, so a program evaluated under mocks
(``harness compose render``, the infra tests) mounts certificates that work.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_tls as tls

from backbone_infra.render.certificates import (
    CA_FILE,
    CA_VALID_DAYS,
    SERVER_VALID_DAYS,
    TLSFiles,
    ca_cert_for_key,
    certificate_request,
    new_private_key_pem,
    sign_request,
    tls_files,
)
from backbone_infra.targets.workload import File, secret_file

__all__ = [
    "TLS_DIR",
    "StackCertificates",
    "StackCertificatesArgs",
    "mock_tls_outputs",
    "service_tls_files",
]

#: Where every container finds the stack's CA and its service's certificate and key.
TLS_DIR = "/run/secrets/tls"
_ORG = "market-data-backbone"
_SERVER_USES = ["digital_signature", "key_encipherment", "server_auth", "client_auth"]


def service_tls_files(service: str) -> TLSFiles:
    """The paths the renderers write into ``service``'s configuration."""
    return tls_files(TLS_DIR, service)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class StackCertificatesArgs:
    stack: str
    #: Service -> every host name or address its clients and peers dial.
    hosts: Mapping[str, Sequence[str]]


class StackCertificates(pulumi.ComponentResource):
    """One CA per stack and one server certificate per service (pulumi-tls)."""

    ca_cert_pem: pulumi.Output[str]

    def __init__(
        self, name: str, args: StackCertificatesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("backbone:infra:StackCertificates", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        ca = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=ca_key.private_key_pem,
            is_ca_certificate=True,
            max_path_length=0,
            allowed_uses=["cert_signing", "crl_signing"],
            subject=tls.SelfSignedCertSubjectArgs(
                common_name=f"backbone {args.stack} CA", organization=_ORG
            ),
            validity_period_hours=CA_VALID_DAYS * 24,
            opts=child,
        )
        self.ca_cert_pem = ca.cert_pem
        self._servers: dict[str, tuple[pulumi.Output[str], pulumi.Output[str]]] = {}
        for service, hosts in args.hosts.items():
            key = tls.PrivateKey(
                f"{name}-{service}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child
            )
            request = tls.CertRequest(
                f"{name}-{service}-csr",
                private_key_pem=key.private_key_pem,
                dns_names=[h for h in hosts if not _is_ip(h)],
                ip_addresses=[h for h in hosts if _is_ip(h)],
                # The names are the SANs; the common name is the service (a pod's
                # DNS name may exceed the 64 characters X.509 allows there).
                subject=tls.CertRequestSubjectArgs(common_name=service, organization=_ORG),
                opts=child,
            )
            cert = tls.LocallySignedCert(
                f"{name}-{service}-cert",
                cert_request_pem=request.cert_request_pem,
                ca_private_key_pem=ca_key.private_key_pem,
                ca_cert_pem=ca.cert_pem,
                allowed_uses=_SERVER_USES,
                validity_period_hours=SERVER_VALID_DAYS * 24,
                opts=child,
            )
            self._servers[service] = (
                cert.cert_pem,
                pulumi.Output.secret(key.private_key_pem_pkcs8),
            )
        self.register_outputs({"ca_cert_pem": self.ca_cert_pem, "services": sorted(self._servers)})

    def files(self, service: str) -> tuple[File, ...]:
        """What ``service``'s containers mount at :data:`TLS_DIR`: the CA, its
        certificate, its key and its keystore (key then certificate), the last
        two as secrets."""
        cert, key = self._servers[service]
        keystore = pulumi.Output.all(key, cert).apply(lambda kc: f"{kc[0]}{kc[1]}")
        return (
            File(TLS_DIR, CA_FILE, self.ca_cert_pem),
            File(TLS_DIR, f"{service}.crt", cert),
            secret_file(TLS_DIR, f"{service}.key", key),
            secret_file(TLS_DIR, f"{service}-keystore.pem", keystore),
        )

    def ca_file(self) -> File:
        """The CA alone, for a container that only verifies (an exporter)."""
        return File(TLS_DIR, CA_FILE, self.ca_cert_pem)


_SECRET_SIG = "4dabf18193072939515e22adb298388d"


def _plain(value: Any) -> Any:
    # Mocks see a secret input in its wire form: {<secret signature>: ..., "value": v}.
    if isinstance(value, dict) and _SECRET_SIG in value:
        return value.get("value")
    return value


def mock_tls_outputs(typ: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The outputs pulumi-tls would give a resource, for Pulumi's mocks
    (wire names, camelCase); ``{}`` for any other resource type."""
    inputs = {k: _plain(v) for k, v in inputs.items()}
    if typ == "tls:index/privateKey:PrivateKey":
        pem = new_private_key_pem()
        return {"privateKeyPem": pem, "privateKeyPemPkcs8": pem}
    if typ == "tls:index/selfSignedCert:SelfSignedCert":
        subject = inputs.get("subject") or {}
        return {
            "certPem": ca_cert_for_key(inputs["privateKeyPem"], subject.get("commonName", "CA"))
        }
    if typ == "tls:index/certRequest:CertRequest":
        hosts = [*inputs.get("dnsNames", []), *inputs.get("ipAddresses", [])]
        subject = inputs.get("subject") or {}
        common = subject.get("commonName") or hosts[0]
        return {"certRequestPem": certificate_request(inputs["privateKeyPem"], [common, *hosts])}
    if typ == "tls:index/locallySignedCert:LocallySignedCert":
        return {
            "certPem": sign_request(
                inputs["caCertPem"], inputs["caPrivateKeyPem"], inputs["certRequestPem"]
            )
        }
    return {}
