"""``postgresql.conf``, ``pg_hba.conf`` and the roles of the database. Pure functions.

One rendering for every target: the local provisioner appends
:func:`postgresql_conf` to its ``initdb`` output and runs
:func:`bootstrap_statements`; the Docker and Kubernetes components mount the
same files and run the same statements from their start script. What differs
per target comes in as arguments: the address the server listens on and the
network clients connect from.

With a standby and ``spec.synchronous``, commits wait for one standby:
``synchronous_standby_names = 'ANY 1 (*)'`` (any one streaming standby, so a
former primary that rejoins under any name counts again). PostgreSQL reports
such a standby's ``sync_state`` as ``quorum`` (see :data:`SYNC_STATES`).

With ``tls`` (every stack's default) the server serves TLS (:func:`ssl_settings`,
part of :func:`postgresql_conf`, so Patroni's parameters carry it too) and
``pg_hba.conf`` admits TCP clients over TLS only (``hostssl``); clients
connect with ``sslmode=verify-full``. Without it (``--no-tls``, for measuring
only) the rules are ``host``.

Passwords reach PostgreSQL as SCRAM verifiers (:func:`scram_verifier`), never in
clear text, so a failing statement logged by the server shows no password.

Roles, one per job (least privilege):

:func:`owner_role` (``<user>_owner``, ``NOLOGIN``)
    Owns the database and every table: migrations run as it (provisioning
    connects as the superuser and ``SET ROLE`` to it, see :func:`as_owner`).
``spec.user`` (the application)
    ``LOGIN`` with no ``SUPERUSER``, ``CREATEROLE``, ``CREATEDB`` or
    ``REPLICATION``; ``CONNECT`` and ``TEMPORARY`` on the database (the store
    stages COPYs in a temp table), and only ``SELECT, INSERT, UPDATE, DELETE``
    on the bar tables and ``USAGE, SELECT`` on their sequences
    (:func:`grant_statements`). It cannot create, alter or drop a table.
:func:`reader_role` (``<user>_reader``)
    ``LOGIN``, ``CONNECT`` on the database and ``SELECT`` on the bar tables:
    readers (reports, dashboards, ad-hoc queries) that must not write.
:func:`monitor_role` (``<user>_monitor``)
    ``LOGIN`` and a member of ``pg_monitor`` (read-only statistics), for
    ``postgres_exporter``; no table privilege.
``spec.replication_user``
    ``REPLICATION LOGIN`` only, for standbys.

The superuser (:data:`SUPERUSER`) is the administrator: only provisioning
(and rotation, ``harness rotate-credentials``) logs in as it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as pysecrets
from collections.abc import Mapping

from backbone_infra.render.certificates import TLSFiles
from backbone_infra.spec import PostgresSpec

__all__ = [
    "INITDB_ARGS",
    "SUPERUSER",
    "SYNC_STATES",
    "as_owner",
    "bootstrap_statements",
    "grant_statements",
    "job_roles",
    "monitor_role",
    "owner_role",
    "password_statement",
    "pg_hba_conf",
    "postgresql_conf",
    "reader_role",
    "scram_verifier",
    "ssl_settings",
    "synchronous_standby_names",
]

SUPERUSER = "postgres"
#: ``initdb`` options of every new primary (the superuser's password comes from
#: ``--pwfile``): SCRAM everywhere, UTF-8, the C locale.
INITDB_ARGS = (
    f"--username={SUPERUSER}",
    "--auth=scram-sha-256",
    "--encoding=UTF8",
    "--locale=C",
    "--no-sync",
    "--no-instructions",
)
#: ``pg_stat_replication.sync_state`` of a standby commits wait for: ``quorum``
#: under ``ANY n (...)``, ``sync`` under ``FIRST n (...)``.
SYNC_STATES = frozenset({"sync", "quorum"})


def scram_verifier(password: str, *, iterations: int = 4096, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password``.

    Sending the verifier instead of the password keeps the clear text out of
    the server's log, even when a statement fails and is logged. ``salt``:
    16 random bytes unless given (a declarative target passes a stable one, so
    an unchanged password renders an unchanged file).
    """
    salt = pysecrets.token_bytes(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def synchronous_standby_names(spec: PostgresSpec) -> str | None:
    """``ANY 1 (*)`` when commits wait for a standby, else ``None``."""
    return "ANY 1 (*)" if spec.standbys and spec.synchronous else None


def ssl_settings(tls: TLSFiles | None) -> list[str]:
    """The server's TLS settings (``ssl = off`` without ``tls``)."""
    if tls is None:
        return ["ssl = off"]
    return [
        "ssl = on",
        f"ssl_cert_file = '{tls.cert}'",
        f"ssl_key_file = '{tls.key}'",
        f"ssl_ca_file = '{tls.ca}'",
        "ssl_min_protocol_version = 'TLSv1.2'",
    ]


def postgresql_conf(
    spec: PostgresSpec,
    *,
    listen: str,
    timescaledb: bool,
    synchronous: bool = True,
    tls: TLSFiles | None = None,
) -> str:
    """Settings appended to ``initdb``'s ``postgresql.conf`` (standbys clone them).

    ``listen``: ``listen_addresses`` (``127.0.0.1`` locally, ``*`` in a
    container). The port is per node, on the command line (``-p``).
    ``synchronous``: include :func:`synchronous_standby_names`; the local
    provisioner leaves it out and sets the same value with ``ALTER SYSTEM``
    once a standby streams (until then its own bootstrap would wait forever).
    ``tls``: serve TLS with these files (:func:`ssl_settings`).
    """
    lines = [
        f"listen_addresses = '{listen}'",
        # No Unix socket: TCP only, and no socket-path length limits.
        "unix_socket_directories = ''",
        "password_encryption = 'scram-sha-256'",
        "wal_level = replica",
        "max_wal_senders = 10",
        "max_replication_slots = 10",
        "wal_keep_size = '256MB'",
        "hot_standby = on",
        "synchronous_commit = on",
        "shared_buffers = '64MB'",
        # A fresh clone starts as "interrupted" and would fsync every file
        # one by one before recovery (seconds); one syncfs() does the same.
        "recovery_init_sync_method = syncfs",
        "logging_collector = off",
        "log_line_prefix = '%m [%p] '",
        *ssl_settings(tls),
    ]
    if timescaledb:
        lines += ["shared_preload_libraries = 'timescaledb'", "timescaledb.telemetry_level = off"]
    names = synchronous_standby_names(spec)
    if synchronous and names is not None:
        lines.append(f"synchronous_standby_names = '{names}'")
    return "\n".join(lines) + "\n"


def pg_hba_conf(spec: PostgresSpec, *, network: str, tls: bool = True) -> str:
    """``pg_hba.conf``: SCRAM for everyone, from ``network`` only (``127.0.0.1/32``
    locally, ``all`` in a container network), and with ``tls`` over TLS only
    (``hostssl``: a plain-text connection matches no rule and is refused)."""
    kind = "hostssl" if tls else "host"
    return (
        f"{kind} all all {network} scram-sha-256\n"
        f"{kind} replication {spec.replication_user} {network} scram-sha-256\n"
    )


def owner_role(spec: PostgresSpec) -> str:
    """The role that owns the database and its schema (migrations run as it)."""
    return f"{spec.user}_owner"


def reader_role(spec: PostgresSpec) -> str:
    """The read-only role (``SELECT`` on the bar tables)."""
    return f"{spec.user}_reader"


def job_roles(spec: PostgresSpec) -> tuple[str, str]:
    """The ingest writer's and the consumer's roles (``<user>_writer``,
    ``<user>_consumer``): ``SELECT, INSERT, UPDATE`` on the bar tables (the
    upsert and the dead-letter paths), ``TEMPORARY`` for the COPY staging table;
    no ``DELETE``, no DDL."""
    return f"{spec.user}_writer", f"{spec.user}_consumer"


def monitor_role(spec: PostgresSpec) -> str:
    """The role ``postgres_exporter`` logs in as (``pg_monitor``, no table access)."""
    return f"{spec.user}_monitor"


#: Attributes every login role but the superuser and replication has: none.
_PLAIN = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"


def bootstrap_statements(
    spec: PostgresSpec,
    *,
    password_verifier: str,
    replication_verifier: str,
    reader_verifier: str,
    monitor_verifier: str,
    job_verifiers: Mapping[str, str] | None = None,
) -> list[str]:
    """What the superuser runs once on a new primary: the owner, application,
    reader, monitor and replication roles, and the database owned by the owner
    role. Passwords are SCRAM verifiers (:func:`scram_verifier`).
    ``job_verifiers``: the per-job roles (:func:`job_roles`) by name, if the
    target creates them (then pass ``job_roles=True`` to :func:`grant_statements`)."""
    owner = owner_role(spec)
    jobs = [
        f"CREATE ROLE {role} LOGIN {_PLAIN} PASSWORD '{verifier}'"
        for role, verifier in (job_verifiers or {}).items()
    ]
    return [
        *jobs,
        f"CREATE ROLE {owner} NOLOGIN {_PLAIN}",
        f"CREATE ROLE {spec.user} LOGIN {_PLAIN} PASSWORD '{password_verifier}'",
        f"CREATE ROLE {reader_role(spec)} LOGIN {_PLAIN} PASSWORD '{reader_verifier}'",
        f"CREATE ROLE {monitor_role(spec)} LOGIN {_PLAIN} PASSWORD '{monitor_verifier}' "
        "IN ROLE pg_monitor",
        f"CREATE ROLE {spec.replication_user} REPLICATION LOGIN PASSWORD '{replication_verifier}'",
        f"CREATE DATABASE {spec.dbname} OWNER {owner}",
    ]


def password_statement(role: str, verifier: str) -> str:
    """``ALTER ROLE`` setting ``role``'s password to a SCRAM ``verifier``
    (rotation: sessions already logged in keep running)."""
    return f"ALTER ROLE {role} PASSWORD '{verifier}'"


def as_owner(statements: list[str], spec: PostgresSpec) -> list[str]:
    """``statements`` (the schema) run as :func:`owner_role` by a superuser
    session, so the owner, not the superuser or the application, owns what they
    create."""
    return [f"SET ROLE {owner_role(spec)}", *statements, "RESET ROLE"]


def grant_statements(spec: PostgresSpec, *, with_job_roles: bool = False) -> list[str]:
    """What the superuser runs in ``spec.dbname`` after the schema: the
    application's grants (DML on the bar tables, nothing else) and the
    reader's (``SELECT``), also for tables the owner creates later; with
    ``with_job_roles`` the writer's and the consumer's (:func:`job_roles`)."""
    owner, app, db = owner_role(spec), spec.user, spec.dbname
    reader = reader_role(spec)
    dml = "SELECT, INSERT, UPDATE, DELETE"
    jobs: list[str] = []
    for role in job_roles(spec) if with_job_roles else ():
        jobs += [
            f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {role}",
            f"GRANT USAGE ON SCHEMA public TO {role}",
            f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {role}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
            f"GRANT SELECT, INSERT, UPDATE ON TABLES TO {role}",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
            f"GRANT USAGE, SELECT ON SEQUENCES TO {role}",
        ]
    return [
        *jobs,
        f"REVOKE ALL ON DATABASE {db} FROM PUBLIC",
        f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {app}",
        f"GRANT CONNECT ON DATABASE {db} TO {reader}",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA public TO {app}, {reader}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
        f"GRANT SELECT ON TABLES TO {reader}",
        f"GRANT {dml} ON ALL TABLES IN SCHEMA public TO {app}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {app}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
        f"GRANT {dml} ON TABLES TO {app}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
        f"GRANT USAGE, SELECT ON SEQUENCES TO {app}",
    ]
