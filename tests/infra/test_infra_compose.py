"""One container model, two renderings: the Pulumi Docker resources and the Compose file.

Both come from the Docker backend's plan (``backbone_infra.targets.containers``); these
tests hold them to carrying the same containers, with the same images,
commands, published ports, health checks and shared network namespaces, and
check that ``harness compose render`` writes a file that holds no credential.
"""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi_rendering import DOCKER_CONTAINER, DOCKER_IDS, DOCKER_IMAGE, Rendering
from typer.testing import CliRunner

from backbone_harness.cli import app
from backbone_infra.targets.compose import compose_document
from backbone_infra.targets.docker import DockerBackend


def _compose(rendering: Rendering) -> dict[str, Any]:
    backend = rendering.result.backend
    assert isinstance(backend, DockerBackend)
    return compose_document(backend.plan, stack=rendering.config.stack)


def _image_names(rendering: Rendering) -> dict[str, str]:
    """RemoteImage id (what a docker.Container gets) -> the pinned reference."""
    ids: dict[str, str] = {}
    for r in rendering.of_type(DOCKER_IMAGE):
        ids["sha256:" + hashlib.sha256(r.plain["name"].encode()).hexdigest()] = r.plain["name"]
    return ids


@pytest.mark.parametrize("rendering", DOCKER_IDS, indirect=True)
def test_both_renderings_carry_the_same_containers(rendering: Rendering) -> None:
    services = _compose(rendering)["services"]
    by_name = {svc["container_name"]: svc for svc in services.values()}
    containers = {r.plain["name"]: r.plain for r in rendering.of_type(DOCKER_CONTAINER)}
    assert set(by_name) == set(containers) and containers
    images = _image_names(rendering)
    for name, docker in containers.items():
        svc = by_name[name]
        assert images[docker["image"]] == svc["image"], name
        assert docker.get("entrypoints") == svc.get("entrypoint"), name
        assert docker.get("command") == svc.get("command"), name
        assert docker.get("hostname") == svc.get("hostname"), name
        ports = [
            f"{p['ip']}:{int(p['external'])}:{int(p['internal'])}"
            for p in docker.get("ports") or []
        ]
        assert ports == svc.get("ports", []), name
        health = docker.get("healthcheck")
        assert (health or {}).get("tests") == svc.get("healthcheck", {}).get("test"), name
        files = sorted(u["file"] for u in docker.get("uploads") or [])
        mounted = sorted(v.split(":")[1] for v in svc.get("volumes", []) if v.startswith("./"))
        assert files == mounted, name
        assert docker.get("restart") == svc["restart"], name
        assert int(docker["memory"]) == int(svc["mem_limit"].removesuffix("m")), name


@pytest.mark.parametrize("rendering", DOCKER_IDS, indirect=True)
def test_sidecars_share_their_replicas_network_in_both(rendering: Rendering) -> None:
    services = _compose(rendering)["services"]
    containers = {r.plain["name"]: r.plain for r in rendering.of_type(DOCKER_CONTAINER)}
    shared = {svc["container_name"] for svc in services.values() if "network_mode" in svc}
    assert shared == {n for n, c in containers.items() if "networkMode" in c}
    assert shared, "every stateful service has an exporter sidecar"
    for svc in services.values():
        if "network_mode" in svc:
            owner = svc["network_mode"].removeprefix("service:")
            assert "networks" in services[owner], f"{owner} is not on the stack network"


def test_compose_render_writes_a_file_without_credentials(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["compose", "render", "--size", "minimal", "--name", "c9", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip().splitlines()[-1])
    assert path == tmp_path / "compose.yaml"
    doc = yaml.safe_load(path.read_text())
    assert set(doc["services"]) >= {"redis-1", "kafka-1", "timescale-1", "prometheus-1"}
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    secret_files = [p for p in (tmp_path / "files").rglob("*") if "/run/secrets/" in str(p)]
    assert secret_files
    text = path.read_text()
    for secret in secret_files:
        if secret.is_file():
            assert stat.S_IMODE(secret.stat().st_mode) in (0o400, 0o444)
            for line in secret.read_text().splitlines():
                # No credential line of a secret file appears in the Compose document.
                if len(line.strip()) >= 16:
                    assert line.strip() not in text, f"{secret.name} leaks into compose.yaml"


def test_compose_render_refuses_an_unknown_size(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["compose", "render", "--size", "huge", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "unknown --size 'huge'" in result.output
