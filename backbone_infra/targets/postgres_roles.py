"""Bootstrapping a new primary's roles, database, schema and grants, as the superuser.

The statements are rendered once (:mod:`backbone_infra.render.postgres`); this
module runs them, in the same order, for every target that bootstraps over a
connection (the local processes, the podman containers). The Pulumi targets
run the same statements from their start script.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from backbone.store.schema import schema_statements
from backbone_infra.render.postgres import (
    as_owner,
    bootstrap_statements,
    grant_statements,
    job_roles,
    scram_verifier,
)
from backbone_infra.spec import PostgresSpec
from backbone_infra.targets.local.secrets import StackSecrets

__all__ = ["Connect", "RunStatement", "bootstrap_roles_and_schema"]

#: ``connect(dbname, autocommit)``: a superuser session on the new primary.
Connect = Callable[[str, bool], psycopg.Connection]
#: ``run(conn, statement)``: how one role/database statement runs (a target whose
#: orchestrator made some roles already, Patroni, tolerates finding them).
RunStatement = Callable[[psycopg.Connection, str], None]


def _execute(conn: psycopg.Connection, statement: str) -> None:
    conn.execute(statement)


def bootstrap_roles_and_schema(
    connect: Connect,
    spec: PostgresSpec,
    secrets: StackSecrets,
    run_statement: RunStatement = _execute,
) -> bool:
    """Create every role (passwords as SCRAM verifiers) and the database, then
    the schema as the owner role and the grants. Returns whether TimescaleDB
    is installed (the schema uses it when it is)."""
    with connect("postgres", True) as conn:
        for statement in bootstrap_statements(
            spec,
            password_verifier=scram_verifier(secrets.postgres_password),
            replication_verifier=scram_verifier(secrets.replication_password),
            reader_verifier=scram_verifier(secrets.postgres_reader_password),
            monitor_verifier=scram_verifier(secrets.postgres_monitor_password),
            job_verifiers={
                role: scram_verifier(password)
                for role, password in zip(
                    job_roles(spec),
                    (secrets.postgres_writer_password, secrets.postgres_consumer_password),
                    strict=True,
                )
            },
        ):
            run_statement(conn, statement)
        row = conn.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
    timescaledb = bool(row and row[0])
    statements = schema_statements(
        timescaledb=timescaledb,
        chunk_interval_days=spec.chunk_interval_days,
        compress_after_days=spec.compress_after_days,
        retention_days=spec.retention_days,
    )
    with connect(spec.dbname, False) as conn:
        if timescaledb:  # the extension is created by the superuser
            conn.execute(statements[0])
            statements = statements[1:]
        # The schema is owned by the owner role; the application gets DML only.
        for stmt in [*as_owner(statements, spec), *grant_statements(spec, with_job_roles=True)]:
            conn.execute(stmt)
        conn.commit()
    return timescaledb
