"""Credentials: every password is a Pulumi secret, none sits in a plain
container env, command, label or ConfigMap, and secret files are owner-only."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi_rendering import (
    CONFIG_MAP,
    DOCKER_CONTAINER,
    DOCKER_IDS,
    INSTITUTIONAL_IDS,
    K8S_SECRET,
    KUBERNETES_IDS,
    STATEFUL_SET,
    Recorded,
    Rendering,
    config_for,
    is_secret,
    name_of,
    pod_spec,
    render,
    unwrap,
)

from backbone_infra.config import SECRET_KEYS


def plain_leaks(value: Any, credentials: dict[str, str], path: str = "") -> list[str]:
    """Paths where a credential appears outside a Pulumi secret."""
    if is_secret(value):
        return []
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in plain_leaks(v, credentials, f"{path}.{k}")]
    if isinstance(value, list):
        return [
            hit for i, v in enumerate(value) for hit in plain_leaks(v, credentials, f"{path}[{i}]")
        ]
    if isinstance(value, str):
        return [f"{path} holds {name}" for name, cred in credentials.items() if cred in value]
    return []


def contains_credential(value: Any, credentials: dict[str, str]) -> bool:
    return bool(plain_leaks(unwrap(value), credentials))


@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_no_credential_appears_outside_a_pulumi_secret(rendering: Rendering) -> None:
    for r in rendering.resources:
        leaks = plain_leaks(r.inputs, rendering.credentials)
        assert not leaks, f"{r}: {leaks}"


@pytest.mark.parametrize("rendering", KUBERNETES_IDS, indirect=True)
def test_config_maps_hold_no_credential_and_secrets_are_secret(rendering: Rendering) -> None:
    for r in rendering.of_type(CONFIG_MAP):
        assert not is_secret(r.inputs.get("data")), f"{r} carries secret data"
        assert not contains_credential(r.inputs, rendering.credentials), str(r)
    secrets = rendering.of_type(K8S_SECRET)
    assert secrets
    for r in secrets:
        assert is_secret(r.inputs["stringData"]), f"{r}: stringData is not a Pulumi secret"
        assert contains_credential(r.inputs, rendering.credentials), f"{r} holds no credential?"


@pytest.mark.parametrize("rendering", KUBERNETES_IDS, indirect=True)
def test_kubernetes_env_never_carries_a_credential(rendering: Rendering) -> None:
    for r in rendering.resources:
        spec = unwrap(r.inputs).get("spec", {}).get("template", {}).get("spec", {})
        for c in [*spec.get("containers", []), *spec.get("initContainers", [])]:
            for env in c.get("env", []):
                assert "valueFrom" not in env or "secretKeyRef" not in env["valueFrom"]
                assert not contains_credential(env, rendering.credentials), f"{r} {env['name']}"


def _uploads(r: Recorded) -> list[dict[str, Any]]:
    return unwrap(r.inputs).get("uploads") or []


@pytest.mark.parametrize("rendering", DOCKER_IDS, indirect=True)
def test_docker_credentials_travel_only_as_owner_readable_files(rendering: Rendering) -> None:
    credential_files = 0
    for r in rendering.of_type(DOCKER_CONTAINER):
        assert not contains_credential(r.inputs.get("envs"), rendering.credentials), f"{r} env"
        assert not contains_credential(r.inputs.get("entrypoints"), rendering.credentials)
        for upload in _uploads(r):
            if contains_credential(upload["content"], rendering.credentials):
                credential_files += 1
                assert upload["permissions"] == "0400", f"{r}: {upload['file']} is not 0400"
                assert upload["file"].startswith("/run/secrets/"), f"{r}: {upload['file']}"
        if any(upload["permissions"] == "0400" for upload in _uploads(r)):
            assert is_secret(r.inputs["uploads"]), f"{r}: uploads are not a Pulumi secret"
    assert credential_files > 0


@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_password_outputs_are_secret_and_others_hold_none(rendering: Rendering) -> None:
    assert {"connections", "grafana_admin_password"} <= rendering.secret_exports
    for key, value in rendering.exports.items():
        if key not in rendering.secret_exports:
            assert not plain_leaks(value, rendering.credentials), f"export {key} leaks"


def test_configured_secrets_are_used_instead_of_generated_ones() -> None:
    given = {name: f"given-{name.replace('_', '-')}-0123456789" for name in SECRET_KEYS}
    rendering = render(config_for("docker", "institutional", "ha", secrets=given))
    assert not rendering.of_type("random:index/randomPassword:RandomPassword")
    doc = rendering.exports["connections"]
    assert doc["redis"]["password"] == given["redis_password"]
    assert doc["kafka"]["password"] == given["kafka_password"]
    assert doc["timescale"]["password"] == given["postgres_password"]
    for r in rendering.resources:
        assert not plain_leaks(r.inputs, given), str(r)


@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_redis_runs_as_its_service_user_without_the_image_entrypoint(rendering: Rendering) -> None:
    """The official Redis image's entrypoint dropped root; the components start
    redis-server themselves, so the target must run it as the redis user."""
    from backbone_infra.components.redis_deployment import REDIS_UID

    if rendering.config.target == "docker":
        expected: object = str(REDIS_UID)
        users = {
            r.plain["hostname"]: r.plain.get("user")
            for r in rendering.of_type(DOCKER_CONTAINER)
            if r.plain.get("hostname", "").startswith("redis")
        }
    else:
        expected = REDIS_UID
        users = {
            name_of(r): pod_spec(r)["containers"][0].get("securityContext", {}).get("runAsUser")
            for r in rendering.of_type(STATEFUL_SET)
            if name_of(r).startswith("redis")
        }
    assert users and all(user == expected for user in users.values()), users
