"""docs/library.md is a specification: its examples run as written."""

from __future__ import annotations

import doctest
import os
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "library.md"


def test_the_library_page_examples_run_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No config.yaml or BACKBONE_* of the caller's may change what the page shows.
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("BACKBONE_", "DATA_BACKBONE_")):
            monkeypatch.delenv(name)
    result = doctest.testfile(str(DOC), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 15, "the page lost its examples"
    assert result.failed == 0
