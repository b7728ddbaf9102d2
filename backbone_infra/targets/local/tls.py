"""A local stack's certificates: its CA and one server certificate per service,
issued at ``up`` into ``.stacks/NAME/tls/``.

Local clients dial ``127.0.0.1`` (or ``localhost``), through a Toxiproxy
proxy as well, on the same address, so every server certificate names both.
Certificates and the CA bundle are 0644 (public); keys and keystores 0600.
The directory is 0711: services and clients find their files by path, nobody
lists it. The outputs document carries :func:`ca_file`'s path, never a key.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from backbone_infra.render.certificates import (
    CA_FILE,
    TLS_SERVICES,
    TLSFiles,
    stack_certificates,
    tls_files,
)
from backbone_infra.spec import StackSpec

__all__ = [
    "LOCAL_HOSTS",
    "TLS_DIR",
    "ca_file",
    "ensure_local_certificates",
    "issue_local_certificates",
    "local_tls_files",
]

TLS_DIR = "tls"
#: What local clients dial: the loopback address and its name.
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)


def issue_local_certificates(
    spec: StackSpec, stack_dir: Path, hosts: Mapping[str, Sequence[str]] | None = None
) -> Path | None:
    """A new CA and server certificates for the stack, written to its ``tls/``
    directory; ``None`` (and nothing written) when the stack runs without TLS.
    ``hosts``: the names each service's certificate carries (default: the
    loopback address and ``localhost`` for every service)."""
    if not spec.tls:
        return None
    directory = stack_dir / TLS_DIR
    directory.mkdir(mode=0o711, parents=True, exist_ok=True)
    os.chmod(directory, 0o711)
    certs = stack_certificates(
        spec.name, hosts if hosts is not None else dict.fromkeys(TLS_SERVICES, LOCAL_HOSTS)
    )
    for service in TLS_SERVICES:
        for name, data in certs.files(service).items():
            private = name.endswith((".key", "-keystore.pem"))
            _write(directory / name, data, 0o600 if private else 0o644)
    return directory


_ISSUING = threading.Lock()


def ensure_local_certificates(spec: StackSpec, stack_dir: Path) -> None:
    """Issue the stack's certificates unless it has them: services preparing in
    parallel (or on their own, in tests) share one CA."""
    if not spec.tls:
        return
    with _ISSUING:
        if not (stack_dir / TLS_DIR / CA_FILE).exists():
            issue_local_certificates(spec, stack_dir)


def local_tls_files(spec: StackSpec, stack_dir: Path, service: str) -> TLSFiles | None:
    """Where ``service`` finds its TLS files in a local stack; ``None`` without TLS."""
    return tls_files(str(stack_dir / TLS_DIR), service) if spec.tls else None


def ca_file(spec: StackSpec, stack_dir: Path) -> str | None:
    """The CA bundle clients verify the stack's servers with; ``None`` without TLS."""
    return str(stack_dir / TLS_DIR / CA_FILE) if spec.tls else None
