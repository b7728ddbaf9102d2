"""The operators' names: the tier by ``data_backbone_mode`` / ``DATA_BACKBONE_MODE`` /
``BACKBONE_TIER``, credentials that make the default tier institutional, and
unknown ``config.yaml`` keys refused by name — in the library and in the CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from backbone.runtime import Backbone
from backbone.settings import SettingsError, load_settings
from backbone.tiers import TierValidationError

REFUSAL = "cannot switch to the institutional tier"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer config.yaml or BACKBONE_* variable leaks into these tests."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("BACKBONE_") or name == "DATA_BACKBONE_MODE":
            monkeypatch.delenv(name)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unreachable_services_yaml() -> str:
    """Every service configured with credentials, on loopback ports nothing answers."""
    return (
        f"redis:\n  url: redis://backbone:redis-pw@127.0.0.1:{closed_port()}/0\n"
        f"kafka:\n  bootstrap_servers: 127.0.0.1:{closed_port()}\n"
        "  security_protocol: SASL_PLAINTEXT\n  sasl_mechanism: SCRAM-SHA-512\n"
        "  username: backbone\n  password: kafka-pw\n"
        f"timescale:\n  hosts: 127.0.0.1:{closed_port()}\n  dbname: marketdata\n"
        "  user: backbone\n  password: pg-pw\n"
        "validation_timeout_seconds: 1\n"
    )


# --- naming the tier -------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["data_backbone_mode", "tier"])
def test_config_yaml_names_the_tier(key: str, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(f"{key}: Institutional\n")
    assert load_settings().tier == "institutional"


@pytest.mark.parametrize("variable", ["DATA_BACKBONE_MODE", "BACKBONE_TIER"])
def test_the_environment_names_the_tier_and_beats_config_yaml(
    variable: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "config.yaml").write_text("data_backbone_mode: institutional\n")
    monkeypatch.setenv(variable, "bootstrap")
    assert load_settings().tier == "bootstrap"


def test_two_names_that_disagree_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATA_BACKBONE_MODE", "bootstrap")
    monkeypatch.setenv("BACKBONE_TIER", "institutional")
    with pytest.raises(SettingsError, match="BACKBONE_TIER and DATA_BACKBONE_MODE disagree"):
        load_settings()
    monkeypatch.delenv("DATA_BACKBONE_MODE")
    monkeypatch.delenv("BACKBONE_TIER")
    (tmp_path / "config.yaml").write_text("tier: bootstrap\ndata_backbone_mode: institutional\n")
    with pytest.raises(SettingsError, match="tier and data_backbone_mode disagree"):
        load_settings()


def test_an_unknown_tier_name_is_refused_with_the_choices(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("data_backbone_mode: gold\n")
    with pytest.raises(SettingsError, match="tier: Input should be 'bootstrap' or 'institutional'"):
        load_settings()


# --- credentials decide the default tier -------------------------------------------------


def test_redis_credentials_from_the_environment_make_the_default_institutional(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BACKBONE_REDIS__URL", f"redis://:pw@127.0.0.1:{closed_port()}")
    monkeypatch.setenv("BACKBONE_VALIDATION_TIMEOUT_SECONDS", "1")
    with pytest.raises(TierValidationError, match=REFUSAL) as caught:
        Backbone.open()
    # The cache is degradable, so the refusal names the required services that are
    # missing; the point here is that Redis credentials chose the institutional tier.
    assert "kafka at " in str(caught.value) and ":pw@" not in str(caught.value)


def test_kafka_credentials_from_config_yaml_make_the_default_institutional(
    tmp_path: Path,
) -> None:
    (tmp_path / "config.yaml").write_text(
        f"kafka:\n  bootstrap_servers: 127.0.0.1:{closed_port()}\n"
        "  security_protocol: SASL_PLAINTEXT\n  sasl_mechanism: PLAIN\n"
        "  username: u\n  password: kafka-pw\nvalidation_timeout_seconds: 1\n"
    )
    with pytest.raises(TierValidationError, match=r"kafka at 127\.0\.0\.1"):
        Backbone.open()


def test_without_credentials_or_a_name_the_default_is_bootstrap(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A Redis address alone (no password) is not a credential.
    monkeypatch.setenv("BACKBONE_REDIS__URL", f"redis://127.0.0.1:{closed_port()}")
    with Backbone.open(settings=load_settings(duckdb_path=str(tmp_path / "t0.duckdb"))) as bb:
        assert bb.tier == "bootstrap"


def test_a_named_bootstrap_tier_wins_over_credentials(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        unreachable_services_yaml()
        + f"data_backbone_mode: bootstrap\nduckdb_path: {tmp_path / 't0.duckdb'}\n"
    )
    with Backbone.open() as bb:
        assert bb.tier == "bootstrap"


# --- unknown keys -------------------------------------------------------------------------------


def test_an_unknown_key_in_config_yaml_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "data_backbone_mode: bootstrap\nredis_url: redis://h:1\nredis:\n  pool_size: 3\n"
    )
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "redis_url: unknown setting" in message
    assert "redis.pool_size: unknown setting" in message
    assert "redis://h:1" not in message


# --- the CLI ----------------------------------------------------------------------------------


def backbone_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKBONE_")}
    env.pop("DATA_BACKBONE_MODE", None)
    return subprocess.run(
        [sys.executable, "-m", "backbone", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_cli_refuses_an_unknown_config_key_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("data_backbone_mod: institutional\n")
    done = backbone_cli("ingest", "--bars", "10", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "data_backbone_mod: unknown setting" in done.stderr
    assert not (tmp_path / ".backbone").exists(), "it must not have ingested anything"


@pytest.mark.parametrize("services", ["none configured", "configured, unreachable"])
def test_institutional_in_config_yaml_refuses_and_never_runs_on_bootstrap(
    services: str, tmp_path: Path
) -> None:
    """The issue's done-when: `data_backbone_mode: institutional`, no reachable services."""
    text = "data_backbone_mode: institutional\n"
    if services != "none configured":
        text += unreachable_services_yaml()
    (tmp_path / "config.yaml").write_text(text)
    done = backbone_cli("ingest", "--bars", "10", "--json", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert REFUSAL in done.stderr and "2 of 2 required checks failed" in done.stderr
    for service in ("kafka", "postgresql"):
        assert f"  - {service} at " in done.stderr
    assert done.stdout == ""
    # The bootstrap tier would have created its DuckDB file and printed the counts.
    assert not (tmp_path / ".backbone").exists()
    for secret in ("redis-pw", "kafka-pw", "pg-pw"):
        assert secret not in done.stderr
