"""Run the Pulumi program under Pulumi's mocks and keep what it declared.

Each rendering records every resource registration (type, name, parent URN
and the raw inputs, with Pulumi's secret markers intact) and the resolved
stack exports with their secretness, so tests can assert on the resource
graph and on what is secret.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import rpc

from backbone_infra.components.certificates import mock_tls_outputs
from backbone_infra.config import SECRET_KEYS, StackConfig
from backbone_infra.program import ProgramResult, run
from backbone_infra.spec import SIZES, TIERS

PROJECT = "market-data-backbone"
CONTAINER_TARGETS = ("docker", "kubernetes")
COMBOS: list[tuple[str, str, str]] = list(itertools.product(CONTAINER_TARGETS, TIERS, SIZES))


def combo_id(combo: tuple[str, str, str]) -> str:
    return "-".join(combo)


ALL_IDS = [combo_id(c) for c in COMBOS]
INSTITUTIONAL_IDS = [combo_id(c) for c in COMBOS if c[1] == "institutional"]
BOOTSTRAP_IDS = [combo_id(c) for c in COMBOS if c[1] == "bootstrap"]
KUBERNETES_IDS = [i for i in INSTITUTIONAL_IDS if i.startswith("kubernetes")]
DOCKER_IDS = [i for i in INSTITUTIONAL_IDS if i.startswith("docker")]


def config_for(target: str, tier: str, size: str, **extra: Any) -> StackConfig:
    return StackConfig(
        stack=f"t-{target[:4]}-{tier[:4]}-{size}",
        target=target,  # type: ignore[arg-type]
        tier=tier,  # type: ignore[arg-type]
        size=size,  # type: ignore[arg-type]
        **extra,
    )


def fake_password(name: str) -> str:
    """The deterministic value the mocks give a RandomPassword (to find leaks by value)."""
    return "pw" + hashlib.sha256(name.encode()).hexdigest()[:30]


def is_secret(value: Any) -> bool:
    return rpc.is_rpc_secret(value)


def unwrap(value: Any) -> Any:
    """The value with every secret marker removed (for reading, not for leak checks)."""
    if is_secret(value):
        return unwrap(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


@dataclass(frozen=True)
class Recorded:
    typ: str
    name: str
    inputs: dict[str, Any]

    @property
    def plain(self) -> dict[str, Any]:
        return unwrap(self.inputs)

    def __str__(self) -> str:
        return f"{self.typ} {self.name!r}"


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.created: list[Recorded] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.created.append(Recorded(args.typ, args.name, dict(args.inputs)))
        # pulumi-tls: real keys and certificates, as the provider would make.
        outputs = {**args.inputs, **mock_tls_outputs(args.typ, args.inputs)}
        if args.typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = fake_password(args.name)
        if args.typ == "docker:index/remoteImage:RemoteImage":
            outputs["imageId"] = (
                "sha256:" + hashlib.sha256(args.inputs["name"].encode()).hexdigest()
            )
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


@dataclass
class Rendering:
    config: StackConfig
    resources: list[Recorded]
    exports: dict[str, Any]
    secret_exports: set[str]
    result: ProgramResult
    #: Every credential the program was given or generated, by name.
    credentials: dict[str, str] = field(default_factory=dict)
    #: The URNs the mock engine registered (they carry the parent chain).
    urns: list[str] = field(default_factory=list)

    def of_type(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.typ == typ]

    def count(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.resources:
            counts[r.typ] = counts.get(r.typ, 0) + 1
        return counts


@dataclass
class Renderings:
    by_id: dict[str, Rendering]
    seconds: float


def render(config: StackConfig) -> Rendering:
    """Run ``backbone_infra.program.run(config)`` under fresh mocks and wait for everything."""
    mocks = RecordingMocks()
    monitor = pulumi.runtime.mocks.MockMonitor(mocks)
    pulumi.runtime.set_mocks(
        mocks, project=PROJECT, stack=config.stack, preview=False, monitor=monitor
    )
    holder: dict[str, Any] = {}

    @pulumi.runtime.test
    def declare() -> pulumi.Output[Any]:
        result = run(config, export=False)
        holder["result"] = result

        async def resolve() -> dict[str, Any]:
            values, secret = {}, set()
            for key, out in result.exports.items():
                values[key] = await out.future()
                if await out.is_secret():
                    secret.add(key)
            return {"values": values, "secret": secret}

        return pulumi.Output.from_input(resolve()).apply(lambda got: holder.update(got))

    declare()
    generated = {
        name: fake_password(f"{config.stack}-{name.replace('_', '-')}") for name in SECRET_KEYS
    }
    return Rendering(
        config=config,
        resources=list(mocks.created),
        exports=holder["values"],
        secret_exports=holder["secret"],
        result=holder["result"],
        credentials=generated,
        urns=sorted(monitor.get_registered_resources()),
    )


# -- views of the rendered resources ---------------------------------------------

STATEFUL_SET = "kubernetes:apps/v1:StatefulSet"
K8S_JOB = "kubernetes:batch/v1:Job"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
K8S_SECRET = "kubernetes:core/v1:Secret"
K8S_SERVICE = "kubernetes:core/v1:Service"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
DOCKER_CONTAINER = "docker:index/container:Container"
DOCKER_IMAGE = "docker:index/remoteImage:RemoteImage"
DOCKER_VOLUME = "docker:index/volume:Volume"


def integral(value: Any) -> Any:
    """Pulumi's wire format carries numbers as floats; Kubernetes schemas want integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral(v) for v in value]
    return value


def k8s_object(r: Recorded) -> dict[str, Any]:
    """A rendered Kubernetes resource as the manifest the provider would apply."""
    return integral(r.plain)


def pod_spec(r: Recorded) -> dict[str, Any]:
    return k8s_object(r)["spec"]["template"]["spec"]


def name_of(r: Recorded) -> str:
    return r.plain["metadata"]["name"]


def config_files(rendering: Rendering) -> dict[str, str]:
    """Every non-secret file the stack mounts: path (or ConfigMap key) -> content."""
    files: dict[str, str] = {}
    for r in rendering.of_type(CONFIG_MAP):
        files.update(r.plain.get("data") or {})
    for r in rendering.of_type(DOCKER_CONTAINER):
        for upload in r.plain.get("uploads") or []:
            if upload["permissions"] == "0444":
                files[upload["file"]] = upload["content"]
    return files


def secret_files(rendering: Rendering) -> dict[str, str]:
    """Every secret file the stack mounts, unwrapped (for reading, not for leak checks)."""
    files: dict[str, str] = {}
    for r in rendering.of_type(K8S_SECRET):
        files.update(r.plain.get("stringData") or {})
    for r in rendering.of_type(DOCKER_CONTAINER):
        for upload in r.plain.get("uploads") or []:
            if upload["permissions"] == "0400":
                files[upload["file"]] = upload["content"]
    return files


def file_named(rendering: Rendering, suffix: str, *, secret: bool = False) -> str:
    """The content of the one mounted config file whose path/key ends with ``suffix``
    (with ``secret``: of the one secret file)."""
    # ConfigMap keys are the mount paths with "/" turned into "_".
    wanted = suffix.replace("/", "_")
    files = secret_files(rendering) if secret else config_files(rendering)
    hits = {k: v for k, v in files.items() if k.replace("/", "_").endswith(wanted)}
    assert len(hits) == 1, f"expected one config file ending {suffix!r}, found {sorted(hits)}"
    return next(iter(hits.values()))
