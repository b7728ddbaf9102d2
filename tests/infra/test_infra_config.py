"""Stack configuration: the example stack files, reading ``pulumi.Config`` once,
overrides that keep images pinned, and the small pure helpers."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pulumi_rendering import PROJECT, RecordingMocks

from backbone_infra.components.kafka_cluster import cluster_id
from backbone_infra.config import SECRET_KEYS, TARGETS, StackConfig, read_config
from backbone_infra.program import make_spec
from backbone_infra.spec import SIZES, TIERS
from backbone_infra.targets.docker import memory_mb

ROOT = Path(__file__).resolve().parents[2]
STACK_FILES = sorted(ROOT.glob("Pulumi.*.yaml"))


def _with_config(values: dict[str, Any], secret_keys: list[str] = ()) -> StackConfig:
    """read_config() as `pulumi up` would run it, with ``values`` as the stack's config."""
    pulumi.runtime.set_mocks(RecordingMocks(), project=PROJECT, stack="cfgtest", preview=False)
    as_strings = {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
    pulumi.runtime.set_all_config(as_strings, list(secret_keys))
    try:
        return read_config()
    finally:
        pulumi.runtime.set_all_config({}, [])


def test_project_file_names_the_python_program_in_infra() -> None:
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == PROJECT
    assert project["runtime"] == {
        "name": "python",
        "options": {"toolchain": "pip", "virtualenv": ".venv"},
    }
    assert (ROOT / project["main"] / "__main__.py").is_file()


def test_example_stacks_exist_for_dev_ci_local_and_prod() -> None:
    assert [p.name for p in STACK_FILES] == [
        "Pulumi.ci.yaml",
        "Pulumi.dev.yaml",
        "Pulumi.local.yaml",
        "Pulumi.prod.yaml",
    ]


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_example_stack_files_are_valid_and_hold_no_secret(path: Path) -> None:
    values = yaml.safe_load(path.read_text())["config"]
    assert all(k.startswith(f"{PROJECT}:") for k in values), sorted(values)
    secret_keys = {f"{PROJECT}:{k}" for k in SECRET_KEYS.values()}
    assert not secret_keys & set(values), "credentials belong in `pulumi config set --secret`"
    config = _with_config(values)
    assert config.target in TARGETS and config.tier in TIERS and config.size in SIZES
    spec = make_spec(config)  # overrides must be known fields, images pinned
    for key, value in config.resource_overrides.items():
        assert getattr(spec.resources, key) == value


def test_read_config_requires_a_target() -> None:
    with pytest.raises(pulumi.ConfigMissingError, match="target"):
        _with_config({f"{PROJECT}:tier": "bootstrap"})


def test_read_config_rejects_an_unknown_target_with_the_fix() -> None:
    with pytest.raises(ValueError, match="pulumi config set target"):
        _with_config({f"{PROJECT}:target": "nomad"})


def test_read_config_takes_secrets_and_defaults() -> None:
    key = f"{PROJECT}:kafkaPassword"
    config = _with_config({f"{PROJECT}:target": "kubernetes", key: "from-config"}, [key])
    assert (config.tier, config.size) == ("institutional", "minimal")
    assert config.k8s_namespace == "backbone-cfgtest"
    assert set(config.secrets) == {"kafka_password"}
    assert isinstance(config.secrets["kafka_password"], pulumi.Output)


@pytest.mark.parametrize("image", ["redis", "redis:latest", "example.com:5000/redis"])
def test_unpinned_image_overrides_are_refused(image: str) -> None:
    config = StackConfig(stack="pins", target="docker", image_overrides={"redis": image})
    with pytest.raises(ValueError, match="not pinned"):
        make_spec(config)


def test_unknown_override_fields_are_refused() -> None:
    config = StackConfig(stack="pins", target="docker", resource_overrides={"gpu": "1"})
    with pytest.raises(ValueError, match="gpu"):
        make_spec(config)


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=30))
def test_kafka_cluster_id_is_a_stable_base64url_uuid(stack: str) -> None:
    cid = cluster_id(stack)
    assert cid == cluster_id(stack) and len(cid) == 22
    assert len(base64.urlsafe_b64decode(cid + "==")) == 16


@given(st.integers(min_value=1, max_value=64 * 1024), st.sampled_from(["Mi", "Gi"]))
def test_memory_quantities_convert_to_mebibytes(n: int, unit: str) -> None:
    assert memory_mb(f"{n}{unit}") == n * (1024 if unit == "Gi" else 1)


def test_memory_quantity_without_unit_says_what_to_write() -> None:
    with pytest.raises(ValueError, match="512Mi"):
        memory_mb("512")


def test_the_entry_point_reads_the_config_and_runs_the_program() -> None:
    import runpy

    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack="entry", preview=False)
    pulumi.runtime.set_all_config({f"{PROJECT}:target": "docker", f"{PROJECT}:size": "minimal"}, [])
    try:

        @pulumi.runtime.test
        def program() -> None:
            runpy.run_path(str(ROOT / "backbone_infra" / "__main__.py"), run_name="__main__")

        program()
    finally:
        pulumi.runtime.set_all_config({}, [])
    kinds = {r.typ for r in mocks.created}
    assert "backbone:infra:KafkaCluster" in kinds and "docker:index/container:Container" in kinds
