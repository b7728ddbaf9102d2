"""State, caches and status pages live in the project, never in the installed package."""

from __future__ import annotations

from pathlib import Path

import pytest

from backbone_infra.paths import cache_dir, project_home, status_dir
from backbone_infra.targets.local.state import stacks_root


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("BACKBONE_HOME", "HARNESS_STACKS_DIR", "HARNESS_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_backbone_home_names_the_project(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("BACKBONE_HOME", str(tmp_path))
    assert project_home() == tmp_path.resolve()
    assert stacks_root() == tmp_path.resolve() / ".stacks"
    assert cache_dir() == tmp_path.resolve() / ".cache"
    assert status_dir() == tmp_path.resolve() / "docs" / "status"


def test_a_checkout_is_found_from_any_folder_inside_it(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    (tmp_path / "Pulumi.yaml").write_text("name: x\n")
    deep = tmp_path / "backbone_infra" / "targets"
    deep.mkdir(parents=True)
    clean_env.chdir(deep)
    assert project_home() == tmp_path.resolve()
    assert stacks_root() == tmp_path.resolve() / ".stacks"


def test_outside_a_checkout_the_current_folder_is_the_project(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.chdir(tmp_path)
    assert project_home() == tmp_path.resolve()
    package = Path(__import__("backbone_infra").__file__).resolve().parent
    assert package not in stacks_root().parents


def test_the_environment_still_moves_stacks_and_caches(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("HARNESS_STACKS_DIR", str(tmp_path / "s"))
    clean_env.setenv("HARNESS_CACHE_DIR", str(tmp_path / "c"))
    assert stacks_root() == (tmp_path / "s").resolve()
    assert cache_dir() == (tmp_path / "c").resolve()
