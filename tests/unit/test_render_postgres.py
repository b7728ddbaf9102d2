"""The PostgreSQL renderer: settings, access rules and roles every target uses."""

from __future__ import annotations

import base64
import hashlib
import hmac

from hypothesis import given, settings
from hypothesis import strategies as st

from backbone_infra.render.postgres import (
    as_owner,
    bootstrap_statements,
    grant_statements,
    job_roles,
    monitor_role,
    owner_role,
    pg_hba_conf,
    postgresql_conf,
    reader_role,
    scram_verifier,
    synchronous_standby_names,
)
from backbone_infra.spec import build_spec


def _settings(text: str) -> dict[str, str]:
    return dict(
        (k.strip(), v.strip()) for k, _, v in (ln.partition("=") for ln in text.splitlines())
    )


# PBKDF2 with 4096 rounds twice per example: no per-example deadline on a shared box.
@settings(deadline=None)
@given(password=st.text(min_size=1, max_size=40), salt=st.binary(min_size=16, max_size=16))
def test_scram_verifier_proves_the_password(password: str, salt: bytes) -> None:
    """RFC 5802: the stored key is H(HMAC(salted, "Client Key")); recompute it."""
    verifier = scram_verifier(password, salt=salt)
    head, keys = verifier.split("$", 1)[1].split("$")
    iterations, salt_b64 = head.split(":")
    stored_b64, _server = keys.split(":")
    assert base64.b64decode(salt_b64) == salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert base64.b64decode(stored_b64) == hashlib.sha256(client_key).digest()


def test_commits_wait_for_any_one_standby_only_when_there_is_one() -> None:
    ha, minimal = build_spec("t", size="ha").postgres, build_spec("t").postgres
    assert synchronous_standby_names(ha) == "ANY 1 (*)"
    assert synchronous_standby_names(minimal) is None
    assert (
        _settings(postgresql_conf(ha, listen="*", timescaledb=True))["synchronous_standby_names"]
        == "'ANY 1 (*)'"
    )
    assert "synchronous_standby_names" not in _settings(
        postgresql_conf(ha, listen="*", timescaledb=True, synchronous=False)
    )
    assert "synchronous_standby_names" not in _settings(
        postgresql_conf(minimal, listen="*", timescaledb=True)
    )


def test_timescale_is_preloaded_and_silent_only_with_the_extension() -> None:
    spec = build_spec("t").postgres
    with_ts = _settings(postgresql_conf(spec, listen="127.0.0.1", timescaledb=True))
    without = _settings(postgresql_conf(spec, listen="127.0.0.1", timescaledb=False))
    assert with_ts["shared_preload_libraries"] == "'timescaledb'"
    assert with_ts["timescaledb.telemetry_level"] == "off"
    assert "shared_preload_libraries" not in without
    assert with_ts["listen_addresses"] == "'127.0.0.1'"


def test_hba_and_roles_use_scram_and_the_spec_names() -> None:
    spec = build_spec("t").postgres
    hba = pg_hba_conf(spec, network="all").splitlines()
    # TLS by default: a plain-text connection matches no rule and is refused.
    assert hba == [
        "hostssl all all all scram-sha-256",
        f"hostssl replication {spec.replication_user} all scram-sha-256",
    ]
    assert pg_hba_conf(spec, network="all", tls=False).splitlines() == [
        "host all all all scram-sha-256",
        f"host replication {spec.replication_user} all scram-sha-256",
    ]
    create_owner, create_app, create_reader, create_monitor, create_repl, create_db = (
        bootstrap_statements(
            spec,
            password_verifier="SCRAM-A",
            replication_verifier="SCRAM-R",
            reader_verifier="SCRAM-S",
            monitor_verifier="SCRAM-M",
        )
    )
    owner = owner_role(spec)
    assert create_owner.startswith(f"CREATE ROLE {owner} NOLOGIN ")
    # Least privilege: the application role logs in and can do nothing administrative.
    assert create_app.startswith(f"CREATE ROLE {spec.user} LOGIN ")
    for role in (create_app, create_reader, create_monitor):
        for denied in ("NOSUPERUSER", "NOCREATEDB", "NOCREATEROLE", "NOREPLICATION"):
            assert denied in role.split()
    assert create_app.endswith("PASSWORD 'SCRAM-A'")
    assert create_reader.startswith(f"CREATE ROLE {reader_role(spec)} LOGIN ")
    assert create_reader.endswith("PASSWORD 'SCRAM-S'")
    # The exporter's role reads statistics (pg_monitor) and nothing else.
    assert create_monitor.startswith(f"CREATE ROLE {monitor_role(spec)} LOGIN ")
    assert create_monitor.endswith("PASSWORD 'SCRAM-M' IN ROLE pg_monitor")
    assert "REPLICATION" in create_repl and "'SCRAM-R'" in create_repl
    # The database (and so its schema) belongs to the owner, not the application.
    assert create_db == f"CREATE DATABASE {spec.dbname} OWNER {owner}"


def test_the_application_gets_dml_on_the_bar_tables_and_nothing_more() -> None:
    spec = build_spec("t").postgres
    reader = reader_role(spec)
    grants = [g for g in grant_statements(spec) if g.startswith(("GRANT", "ALTER DEFAULT"))]
    assert grants and all(g.endswith((f"TO {spec.user}", f"TO {reader}")) or
                          g.endswith(f"TO {spec.user}, {reader}") for g in grants)  # fmt: skip
    # The reader may only connect and SELECT.
    for g in grants:
        if g.endswith(f"TO {reader}"):
            assert g.startswith(("GRANT CONNECT ON", "GRANT SELECT ON")) or " GRANT SELECT ON " in g
    text = " ".join(grants)
    for power in ("CREATE", "TRUNCATE", "REFERENCES", "TRIGGER", "ALL PRIVILEGES"):
        assert f" {power}" not in text.replace("CREATE ON SCHEMA", "")
    schema = as_owner(["CREATE TABLE x (a int)"], spec)
    assert schema[0] == f"SET ROLE {owner_role(spec)}" and schema[-1] == "RESET ROLE"


def test_the_job_roles_insert_and_update_but_never_delete_or_own() -> None:
    spec = build_spec("t").postgres
    writer, consumer = job_roles(spec)
    assert grant_statements(spec) == grant_statements(spec, with_job_roles=False)
    assert not any(writer in s or consumer in s for s in grant_statements(spec))
    grants = [s for s in grant_statements(spec, with_job_roles=True) if writer in s]
    assert any("SELECT, INSERT, UPDATE ON ALL TABLES" in s for s in grants)
    assert any("CONNECT, TEMPORARY" in s for s in grants)
    assert not any(w in s for s in grants for w in ("DELETE", "TRUNCATE", "CREATE ON", "ALL PRIV"))
    created = bootstrap_statements(
        spec, password_verifier="v", replication_verifier="v", reader_verifier="v",
        monitor_verifier="v", job_verifiers={writer: "SCRAM-w", consumer: "SCRAM-c"},
    )  # fmt: skip
    for role, verifier in ((writer, "SCRAM-w"), (consumer, "SCRAM-c")):
        (line,) = [s for s in created if s.startswith(f"CREATE ROLE {role} ")]
        assert "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION" in line
        assert line.endswith(f"PASSWORD '{verifier}'")
