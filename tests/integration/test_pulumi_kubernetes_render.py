"""A real ``pulumi up`` of the kubernetes target without a cluster.

The Kubernetes provider plugin (built by ``scripts/build-pulumi-kubernetes.sh``,
opt-in) writes every object to a directory instead of applying it
(``kubernetes:renderYamlToDirectory``); each manifest is then validated against
the Kubernetes schemas. Credentials are given as config secrets, so the
program needs no other provider plugin.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from pulumi import automation as auto

from backbone_harness.pulumi_cli import PulumiCLIError, cli_dir, pulumi_bin, pulumi_env
from backbone_harness.pulumi_stacks import PROJECT
from backbone_infra.config import SECRET_KEYS

pytestmark = [pytest.mark.pulumi_cli, pytest.mark.slow]

#: The release the manifests are validated against (as the mock-based tests do).
KUBERNETES_VERSION = "1.31"


@pytest.fixture(scope="module", autouse=True)
def _plugin() -> None:
    try:
        pulumi_bin()
    except PulumiCLIError as exc:
        pytest.skip(str(exc))
    if not (cli_dir() / "bin" / "pulumi-resource-kubernetes").exists():
        pytest.skip(
            "the Kubernetes provider plugin is not built (opt-in, ~15 min cold): "
            "bash scripts/build-pulumi-kubernetes.sh"
        )


def _program() -> None:
    from backbone_infra.config import read_config
    from backbone_infra.program import run

    run(read_config())


def test_pulumi_up_renders_manifests_that_validate_against_the_kubernetes_schemas(
    tmp_path: Path,
) -> None:
    name = f"render-{secrets.token_hex(3)}"
    out_dir = tmp_path / "manifests"
    env = pulumi_env(name, tmp_path / "stacks")
    work_dir = tmp_path / "workspace"
    work_dir.mkdir()
    stack = auto.create_stack(
        name,
        project_name=PROJECT,
        program=_program,
        opts=auto.LocalWorkspaceOptions(
            work_dir=str(work_dir),
            pulumi_home=env["PULUMI_HOME"],
            env_vars=env,
            secrets_provider="passphrase",
            pulumi_command=auto.PulumiCommand(root=str(cli_dir()), skip_version_check=True),
            project_settings=auto.ProjectSettings(
                name=PROJECT,
                runtime="python",
                backend=auto.ProjectBackend(url=env["PULUMI_BACKEND_URL"]),
            ),
        ),
    )
    config = {
        "target": auto.ConfigValue("kubernetes"),
        "tier": auto.ConfigValue("institutional"),
        "size": auto.ConfigValue("ha"),
        "kubernetes:renderYamlToDirectory": auto.ConfigValue(str(out_dir)),
    }
    for key in SECRET_KEYS.values():
        config[key] = auto.ConfigValue(secrets.token_urlsafe(16), secret=True)
    stack.set_all_config(config)
    try:
        result = stack.up(color="never")
        assert result.summary.result == "succeeded"
        manifests = sorted(out_dir.rglob("*.yaml"))
        kinds = set()
        for path in manifests:
            for obj in yaml.safe_load_all(path.read_text()):
                if not obj:
                    continue
                kinds.add(obj["kind"])
                try:
                    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    pytest.fail(f"{path.name}: {exc.message}")
        assert {"StatefulSet", "Service", "NetworkPolicy", "Secret"} <= kinds, kinds
    finally:
        stack.destroy(color="never")
        stack.workspace.remove_stack(name)
