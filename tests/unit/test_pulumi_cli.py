"""Finding the Pulumi CLI: errors that name the version and the fix, and an
environment that keeps the passphrase out of every variable."""

from __future__ import annotations

import os
import stat
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from backbone_harness import pulumi_cli
from backbone_harness.errors import HarnessError
from backbone_harness.pulumi_cli import (
    PULUMI_VERSION,
    PulumiCLIMissingError,
    PulumiCLIVersionError,
    passphrase_file,
    pulumi_bin,
    pulumi_env,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BACKBONE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / f"pulumi-v{PULUMI_VERSION}"


def _fake_cli(cache: Path, prints: str) -> Path:
    """A stand-in binary that answers `version` like the CLI does."""
    path = cache / "bin" / "pulumi"
    path.parent.mkdir(parents=True)
    path.write_text(f"#!/bin/sh\necho '{prints}'\n")
    path.chmod(0o755)
    return path


def test_a_missing_cli_names_the_expected_version_and_the_setup_command(cache: Path) -> None:
    with pytest.raises(PulumiCLIMissingError) as err:
        pulumi_bin()
    message = str(err.value)
    assert f"v{PULUMI_VERSION}" in message
    assert "scripts/build-pulumi.sh" in message
    assert str(cache / "bin" / "pulumi") in message
    assert isinstance(err.value, HarnessError)


def test_a_missing_cli_after_a_failed_build_says_why_it_failed(cache: Path) -> None:
    cache.mkdir(parents=True)
    (cache / "FAILED").write_text("go build ./cmd/pulumi failed (see build.log)\n")
    with pytest.raises(PulumiCLIMissingError, match=r"last build failed: go build \./cmd/pulumi"):
        pulumi_bin()
    assert pulumi_cli.build_failure() == "go build ./cmd/pulumi failed (see build.log)"


def test_a_cli_of_another_version_is_refused_with_both_versions(cache: Path) -> None:
    _fake_cli(cache, "v3.100.0")
    with pytest.raises(PulumiCLIVersionError) as err:
        pulumi_bin()
    assert "v3.100.0" in str(err.value)
    assert f"expected v{PULUMI_VERSION}" in str(err.value)
    assert "scripts/build-pulumi.sh" in str(err.value)


def test_a_cli_that_prints_nothing_is_refused(cache: Path) -> None:
    _fake_cli(cache, "")
    with pytest.raises(PulumiCLIVersionError, match="no version"):
        pulumi_bin()


def test_the_cli_of_the_pinned_version_is_found(cache: Path) -> None:
    path = _fake_cli(cache, f"v{PULUMI_VERSION}")
    assert pulumi_bin() == path
    assert pulumi_cli.build_failure() is None


def test_the_build_script_builds_the_version_of_the_installed_sdk() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PULUMI_CLI_VERSION"}
    printed = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-pulumi.sh"), "--print-version"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    assert printed == PULUMI_VERSION == metadata.version("pulumi")


def test_the_environment_points_at_the_file_backend_and_holds_no_passphrase(
    cache: Path, tmp_path: Path
) -> None:
    root = tmp_path / "stacks"
    env = pulumi_env("ci-abc123", root)
    phrase_path = Path(env["PULUMI_CONFIG_PASSPHRASE_FILE"])
    phrase = phrase_path.read_text()
    assert len(phrase) >= 32
    assert all(phrase not in value for value in env.values())
    assert "PULUMI_CONFIG_PASSPHRASE" not in env
    assert env["PULUMI_BACKEND_URL"] == f"file://{root.resolve()}/pulumi-backend"
    assert env["PATH"].split(os.pathsep)[0] == str(cache / "bin")
    assert Path(env["PULUMI_HOME"]).is_relative_to(root.resolve())
    for switch in ("PULUMI_SKIP_UPDATE_CHECK", "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"):
        assert env[switch] == "true"


def test_each_stack_has_its_own_owner_only_passphrase_that_stays_the_same(
    tmp_path: Path,
) -> None:
    first = passphrase_file("ci-one", tmp_path)
    again = passphrase_file("ci-one", tmp_path)
    other = passphrase_file("ci-two", tmp_path)
    assert first == again and first.read_text() == again.read_text()
    assert first.read_text() != other.read_text()
    assert stat.S_IMODE(first.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("argv", "stack"),
    [
        (["up", "-s", "local", "--yes"], "local"),
        (["stack", "output", "--stack=ci-1", "--json"], "ci-1"),
        (["destroy", "--stack", "ci-2"], "ci-2"),
        (["stack", "init", "ci-3", "--secrets-provider", "passphrase"], "ci-3"),
        (["stack", "rm", "--yes", "ci-4"], "ci-4"),
        (["version"], None),
    ],
)
def test_the_wrapper_finds_the_stack_whose_passphrase_it_hands_over(
    argv: list[str], stack: str | None
) -> None:
    assert pulumi_cli._stack_arg(argv) == stack


def test_a_failed_build_fails_the_script_not_the_setup_and_the_finder_says_why(
    cache: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "BACKBONE_CACHE": str(cache.parent), "GO": str(tmp_path / "no-go")}
    build = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-pulumi.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 1
    setup = subprocess.run(
        ["bash", str(REPO / "scripts" / "setup.d" / "50-pulumi.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert setup.returncode == 0
    assert "pulumi_cli tests will skip" in setup.stdout
    with pytest.raises(PulumiCLIMissingError, match="last build failed: no Go toolchain found"):
        pulumi_bin()
