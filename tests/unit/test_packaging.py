"""What ``pip install market-data-backbone`` ships: the wheel built from this checkout.

The client is the core distribution; provisioning, the harness and the load test are
extras. These tests build the wheel the way pip does (an isolated build of the tracked
files) and read its own metadata, so a dependency or a top-level name that slips into
the core install fails here rather than on a user's machine.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]

#: What the client must never pull in: the Pulumi SDKs, Locust and its gevent,
#: process control and plotting belong to the extras.
HEAVY = {
    "pulumi",
    "pulumi-docker",
    "pulumi-kubernetes",
    "pulumi-random",
    "locust",
    "gevent",
    "mirakuru",
    "matplotlib",
    "grafana-foundation-sdk",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel of the tracked files (a copy, so the build leaves the checkout clean)."""
    source = tmp_path_factory.mktemp("source")
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        origin = REPO / name
        if origin.is_file():
            target = source / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(origin.read_bytes())
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source), "-w", str(out)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("*.whl")
    return zipfile.ZipFile(built)


def _metadata(wheel: zipfile.ZipFile) -> list[tuple[str, str]]:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return list(Parser().parsestr(wheel.read(name).decode()).items())


def test_the_wheel_installs_only_project_prefixed_top_level_packages(
    wheel: zipfile.ZipFile,
) -> None:
    tops = {n.split("/")[0] for n in wheel.namelist() if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"backbone", "backbone_infra", "backbone_harness"}


def test_the_core_install_pulls_in_no_provisioning_or_load_dependency(
    wheel: zipfile.ZipFile,
) -> None:
    core = [
        Requirement(value)
        for key, value in _metadata(wheel)
        if key == "Requires-Dist" and "extra ==" not in value
    ]
    assert core, "the client declares its own dependencies"
    assert {r.name for r in core} & HEAVY == set()


def test_each_heavy_dependency_is_behind_an_extra(wheel: zipfile.ZipFile) -> None:
    extras = {
        Requirement(value).name
        for key, value in _metadata(wheel)
        if key == "Requires-Dist" and "extra ==" in value
    }
    assert {"pulumi", "locust", "mirakuru", "matplotlib"} <= extras


def test_the_client_is_typed_licensed_and_both_commands_are_declared(
    wheel: zipfile.ZipFile,
) -> None:
    names = wheel.namelist()
    assert "backbone/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "backbone = backbone.cli:main" in text
    assert "harness = backbone_harness.cli:app" in text
    assert ("License-Expression", "Apache-2.0") in _metadata(wheel)
