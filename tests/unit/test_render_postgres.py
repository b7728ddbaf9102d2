"""The PostgreSQL renderer: settings, access rules and roles every target uses."""

from __future__ import annotations

import base64
import hashlib
import hmac

from hypothesis import given, settings
from hypothesis import strategies as st

from backbone_infra.render.postgres import (
    bootstrap_statements,
    pg_hba_conf,
    postgresql_conf,
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
    create_app, create_repl, create_db = bootstrap_statements(
        spec, password_verifier="SCRAM-A", replication_verifier="SCRAM-R"
    )
    assert create_app == f"CREATE ROLE {spec.user} LOGIN PASSWORD 'SCRAM-A'"
    assert "REPLICATION" in create_repl and "'SCRAM-R'" in create_repl
    assert create_db == f"CREATE DATABASE {spec.dbname} OWNER {spec.user}"
