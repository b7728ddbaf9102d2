"""The local target's dynamic resource, without the CLI: what it declares
(under Pulumi's mocks) and how its provider answers diff and read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pytest

from backbone_infra.spec import build_spec
from backbone_infra.targets.local.pulumi_resource import (
    LocalStackProvider,
    deploy,
    stacks_root_override,
)


class _Recorder(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        outs = {**args.inputs, "connections": {"stack": args.inputs["spec"]["name"]}}
        outs["stack_dir"] = f"{args.inputs['root']}/{args.inputs['spec']['name']}"
        outs["outputs_path"] = f"{outs['stack_dir']}/outputs.json"
        return args.inputs["spec"]["name"], outs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


@pytest.fixture
def recorder() -> _Recorder:
    mocks = _Recorder()
    pulumi.runtime.set_mocks(mocks, project="market-data-backbone", stack="ci-unit", preview=False)
    return mocks


@pulumi.runtime.test
def test_deploy_declares_one_resource_for_the_whole_stack_with_a_secret_document(
    recorder: _Recorder, tmp_path: Path
) -> None:
    spec = build_spec("ci-unit", size="ha")
    with stacks_root_override(tmp_path):
        out = deploy(spec, None)

    def check(args: list[Any]) -> None:
        outputs, secret = args
        assert len(recorder.resources) == 1
        declared = recorder.resources[0]
        assert declared.typ == "pulumi-python:dynamic:Resource"
        assert declared.inputs["spec"] == spec.model_dump(mode="json")
        assert declared.inputs["root"] == str(tmp_path.resolve())
        assert outputs["connections"] == {"stack": "ci-unit"}
        assert outputs["outputs_path"] == f"{tmp_path.resolve()}/ci-unit/outputs.json"
        assert secret, "the connections document must be a secret output"

    return pulumi.Output.all(out, pulumi.Output.is_secret(out)).apply(check)


def test_an_unchanged_spec_is_no_change_and_a_changed_one_replaces_the_stack_first() -> None:
    provider = LocalStackProvider()
    old = {"spec": build_spec("ci-a").model_dump(mode="json"), "root": "/x"}
    same = provider.diff("ci-a", old, dict(old))
    assert same.changes is False and same.replaces == []
    bigger = {**old, "spec": build_spec("ci-a", size="ha").model_dump(mode="json")}
    changed = provider.diff("ci-a", old, bigger)
    assert changed.changes is True
    assert changed.replaces == ["spec"]
    assert changed.delete_before_replace is True


def test_reading_a_stack_that_is_not_running_reports_it_gone(tmp_path: Path) -> None:
    result = LocalStackProvider().read("ci-gone", {"root": str(tmp_path)})
    assert result.id == ""
    assert result.outs == {}
