"""``harness compose render``: the Docker target's containers as a Compose file.

The stack's containers are described once, by the components of the Pulumi
program rendered with the Docker backend (:mod:`backbone_infra.targets.containers`).
Evaluating the components needs Pulumi's runtime but no engine and no CLI:
Pulumi's mocks run the program in-process here, exactly as the infra unit
tests do, and the Docker backend's plan is written as Compose
(:mod:`backbone_infra.targets.compose`). The credentials are generated here and given
to the program, so they end up only in the 0700 ``files/`` folder next to the
Compose file, never in the Compose document.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml

from backbone_infra.components.certificates import mock_tls_outputs
from backbone_infra.config import SECRET_KEYS, StackConfig
from backbone_infra.program import run
from backbone_infra.targets.compose import compose_document, mounted_file
from backbone_infra.targets.containers import PlannedContainer
from backbone_infra.targets.docker import DockerBackend

__all__ = ["ComposeRendering", "render_plan", "write_compose"]

COMPOSE_FILE = "compose.yaml"
PROJECT = "market-data-backbone"


class _Mocks(pulumi.runtime.Mocks):
    """Resources get their inputs as outputs: enough to evaluate the components;
    the certificates are real (:func:`mock_tls_outputs`)."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        # pulumi-tls resources get real keys and certificates: the files work.
        return f"{args.name}-id", {**args.inputs, **mock_tls_outputs(args.typ, args.inputs)}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


@dataclass(frozen=True)
class ComposeRendering:
    """The plan of one stack and the resolved content of every file it mounts."""

    stack: str
    plan: list[PlannedContainer]
    #: (container key, path in the container) -> content.
    contents: dict[tuple[str, str], str]


def render_plan(stack: str, size: str, *, tier: str = "institutional") -> ComposeRendering:
    """Evaluate the program for the Docker target under Pulumi's mocks; keep its plan."""
    config = StackConfig(
        stack=stack,
        target="docker",
        tier=tier,  # type: ignore[arg-type]
        size=size,  # type: ignore[arg-type]
        secrets={name: secrets.token_urlsafe(24) for name in SECRET_KEYS},
    )
    holder: dict[str, Any] = {}
    pulumi.runtime.set_mocks(_Mocks(), project=PROJECT, stack=stack, preview=False)

    @pulumi.runtime.test
    def declare() -> pulumi.Output[Any]:
        result = run(config, export=False)
        backend = result.backend
        if not isinstance(backend, DockerBackend):
            raise RuntimeError("the Docker target rendered no container plan")
        plan = list(backend.plan)
        holder["plan"] = plan
        keys = [(c.key, f.path) for c in plan for f in c.files]
        contents = [f.content for c in plan for f in c.files]
        return pulumi.Output.all(*contents).apply(
            lambda texts: holder.update(contents=dict(zip(keys, texts, strict=True)))
        )

    declare()
    return ComposeRendering(stack=stack, plan=holder["plan"], contents=holder["contents"])


def _write(path: Path, text: str, *, secret: bool, uid: int | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.chmod(0o600)
    path.write_text(text)
    mode = 0o444
    if secret and uid is not None:
        # As the Pulumi target uploads it: 0400, owned by the image's service user.
        with contextlib.suppress(PermissionError):
            os.chown(path, uid, uid)
            mode = 0o400
    path.chmod(mode)


def write_compose(rendering: ComposeRendering, out_dir: Path) -> Path:
    """Write ``compose.yaml`` and its mounted files under ``out_dir``; returns the file.

    ``out_dir`` is made 0700: the mounted files hold credentials.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir.chmod(0o700)
    for c in rendering.plan:
        for f in c.files:
            text = rendering.contents[(c.key, f.path)]
            _write(out_dir / mounted_file(c.key, f.path), text, secret=f.secret, uid=c.uid)
    document = compose_document(rendering.plan, stack=rendering.stack)
    target = out_dir / COMPOSE_FILE
    header = (
        f"# Rendered by `harness compose render` for stack {rendering.stack}: the Docker\n"
        "# target's containers (backbone_infra/targets/containers.py).\n"
        "# Files are mounted from files/.\n"
    )
    target.write_text(header + yaml.safe_dump(document, sort_keys=False, width=100))
    return target
