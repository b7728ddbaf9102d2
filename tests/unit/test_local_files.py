"""Config files that hold credentials are private; a missing program names the fix."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from backbone_harness.errors import MissingBinaryError
from backbone_infra.targets.local.files import find_binary, write_private


def test_a_written_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = write_private(tmp_path / "new" / "redis.conf", "requirepass x\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    write_private(path, "user y\n", append=True)
    assert path.read_text() == "requirepass x\nuser y\n"
    write_private(path, "replaced\n")
    assert path.read_text() == "replaced\n"


def test_a_program_on_path_is_found() -> None:
    assert Path(find_binary("sh")).name == "sh"


def test_a_missing_program_names_itself_and_the_setup_command() -> None:
    with pytest.raises(MissingBinaryError, match=r"no-such-server.*make setup"):
        find_binary("no-such-server")
