"""load_connections: explicit path > BACKBONE_OUTPUTS > `pulumi stack output` > a clear error."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from backbone.connections import ConnectionsError, dump_document, write_document
from backbone.outputs import load_connections
from tests.unit.test_settings import PG_PW, REDIS_PW, document


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BACKBONE_OUTPUTS", raising=False)


def test_an_explicit_path_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit = write_document(document(stack="explicit"), tmp_path / "a.json")
    from_env = write_document(document(stack="env"), tmp_path / "b.json")
    monkeypatch.setenv("BACKBONE_OUTPUTS", str(from_env))
    assert load_connections(explicit).stack == "explicit"
    assert load_connections().stack == "env"


def _fake_pulumi(bin_dir: Path, body: str) -> Path:
    """A stand-in `pulumi` executable (the real CLI is not installed in unit tests)."""
    bin_dir.mkdir()
    exe = bin_dir / "pulumi"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_a_named_stack_is_read_with_pulumi_stack_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc_file = tmp_path / "doc.json"
    doc_file.write_text(json.dumps(dump_document(document(stack="prod"), reveal_secrets=True)))
    argv_file = tmp_path / "argv"
    _fake_pulumi(tmp_path / "bin", f'echo "$@" > {argv_file}\ncat {doc_file}\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    doc = load_connections(stack="prod")
    assert doc.stack == "prod" and doc.redis is not None
    assert doc.redis.password.get_secret_value() == REDIS_PW
    assert argv_file.read_text().split() == [
        "stack", "output", "--json", "connections", "--show-secrets", "--stack", "prod",
    ]  # fmt: skip


def test_a_failing_pulumi_says_which_stack_and_leaks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_pulumi(tmp_path / "bin", "echo 'error: no stack named prod found' >&2\nexit 255\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ConnectionsError, match="no stack named prod found") as caught:
        load_connections(stack="prod")
    assert "'prod'" in str(caught.value)


def test_an_invalid_document_names_fields_not_values(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(dump_document(document(), reveal_secrets=True)))
    bad["timescale"]["hosts"] = []
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ConnectionsError, match=r"timescale\.hosts") as caught:
        load_connections(path)
    assert PG_PW not in str(caught.value)


def test_with_nothing_given_the_error_lists_the_three_ways(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ConnectionsError) as caught:
        load_connections()
    message = str(caught.value)
    assert "--outputs PATH" in message and "BACKBONE_OUTPUTS" in message
    assert "pulumi" in message
    monkeypatch.setenv("PATH", str(tmp_path))  # no pulumi on PATH
    with pytest.raises(ConnectionsError, match="`pulumi` CLI is not on PATH"):
        load_connections(stack="prod")
