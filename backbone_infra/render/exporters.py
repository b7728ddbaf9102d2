"""The exporters' command lines: ``redis_exporter`` and ``postgres_exporter``.

Rendered once, like the services' configs: the local monitoring starts the
Debian binaries with these arguments, the container targets pass the same
arguments to the exporter images (whose entrypoint is the binary). Passwords
travel only as files (``--redis.password-file``, ``DATA_SOURCE_PASS_FILE``).
"""

from __future__ import annotations

import json

from backbone_infra.render.postgres import monitor_role
from backbone_infra.render.redis import EXPORTER_USER
from backbone_infra.spec import PostgresSpec, RedisSpec

__all__ = [
    "postgres_exporter_args",
    "postgres_exporter_env",
    "redis_exporter_args",
    "redis_exporter_passwords",
    "redis_exporter_uri",
]


def redis_exporter_uri(host: str, port: int, *, tls: bool) -> str:
    """The address ``redis_exporter`` scrapes: ``rediss://`` with TLS."""
    return f"{'rediss' if tls else 'redis'}://{host}:{port}"


def redis_exporter_args(
    spec: RedisSpec,
    *,
    redis_uri: str,
    listen: str,
    password_file: str,
    sentinel: bool,
    ca_file: str | None = None,
) -> list[str]:
    """Arguments of ``redis_exporter`` watching ``redis_uri``.

    Servers are read as the read-only :data:`EXPORTER_USER` (its ACL allows
    ``INFO`` and the like, no keys); Sentinels know ``requirepass`` only, so
    no user is given for them. ``ca_file``: the CA the server's certificate is
    verified with (a ``rediss://`` URI).
    """
    args = [f"--redis.addr={redis_uri}"]
    if not sentinel:
        args.append(f"--redis.user={EXPORTER_USER}")
    if ca_file is not None:
        args.append(f"--tls-ca-cert-file={ca_file}")
    return [*args, f"--redis.password-file={password_file}", f"--web.listen-address={listen}"]


def redis_exporter_passwords(redis_uri: str, password: str) -> str:
    """The ``--redis.password-file`` content: redis_exporter looks the password
    up by the URI it scrapes. Holds a password: write it 0600 / mount it secret."""
    return json.dumps({redis_uri: password})


def postgres_exporter_args(*, listen: str) -> list[str]:
    """Arguments of ``postgres_exporter`` (its connection comes from the environment)."""
    return [f"--web.listen-address={listen}"]


def postgres_exporter_env(
    spec: PostgresSpec, *, server: str, password_file: str, sslrootcert: str | None = None
) -> dict[str, str]:
    """``postgres_exporter``'s connection: the read-only monitoring role
    (:func:`~backbone_infra.render.postgres.monitor_role`, ``pg_monitor``) on
    database ``postgres`` of ``server`` (``host:port``), the password read
    from ``password_file``; with ``sslrootcert`` (the CA bundle) over TLS with
    ``sslmode=verify-full``."""
    ssl = (
        "sslmode=disable"
        if sslrootcert is None
        else f"sslmode=verify-full&sslrootcert={sslrootcert}"
    )
    return {
        "DATA_SOURCE_URI": f"{server}/postgres?{ssl}",
        "DATA_SOURCE_USER": monitor_role(spec),
        "DATA_SOURCE_PASS_FILE": password_file,
    }
