"""The ``local`` target: the program hands the spec to ``backbone_infra.targets.local``
and re-exports the document that target reports, still secret."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
from pulumi_rendering import PROJECT, RecordingMocks, config_for

from backbone.connections import parse_document
from backbone_infra.program import run
from backbone_infra.spec import StackSpec

DYNAMIC = "pulumi-python:dynamic:Resource"


class LocalMocks(RecordingMocks):
    """Stands in for the local provisioner: reports a document for the spec it got."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        rid, outputs = super().new_resource(args)
        if args.typ == DYNAMIC:
            spec = StackSpec.model_validate(args.inputs["spec"])
            outputs["connections"] = {
                "schema": "backbone.connections/v1",
                "stack": spec.name,
                "environment": "local",
                "tier": spec.tier,
                "size": spec.size,
                "duckdb": {"path": f"/tmp/{spec.name}/bars.duckdb"},
                "monitoring": {"prometheus_url": "http://127.0.0.1:19090"},
            }
            outputs["stack_dir"] = f"/tmp/{spec.name}"
            outputs["outputs_path"] = f"/tmp/{spec.name}/outputs.json"
        return rid, outputs


@pytest.mark.parametrize("size", ["minimal", "ha"])
def test_local_target_delegates_to_the_local_stack_resource(size: str) -> None:
    config = config_for("local", "bootstrap", size)
    mocks = LocalMocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=config.stack, preview=False)
    seen: dict[str, Any] = {}

    @pulumi.runtime.test
    def declare() -> pulumi.Output[Any]:
        result = run(config, export=False)

        async def resolve() -> None:
            seen["secret"] = await result.exports["connections"].is_secret()
            seen["doc"] = await result.exports["connections"].future()
            seen["prometheus_url"] = await result.exports["prometheus_url"].future()

        return pulumi.Output.from_input(resolve())

    declare()
    (local,) = [r for r in mocks.created if r.typ == DYNAMIC]
    assert StackSpec.model_validate(local.plain["spec"]).size == size
    assert [r.typ for r in mocks.created] == [DYNAMIC], "the local target declares one resource"
    assert seen["secret"] is True
    assert parse_document(seen["doc"]).environment == "local"
    assert seen["prometheus_url"] == "http://127.0.0.1:19090"
