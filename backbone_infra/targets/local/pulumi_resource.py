"""Local target: ``pulumi up`` brings up the local process stack for real.

One Pulumi *dynamic* resource (``LocalStackResource``) stands for one whole local stack.
Its provider runs inside the ``pulumi-python`` dynamic-provider process (no
plugin binary) and calls the local provisioner: ``create`` is
``backbone_infra.targets.local.provisioner.up``, ``read`` checks that every process of the
stack still runs, ``delete`` is ``backbone_infra.targets.local.provisioner.down``.

Why one resource per stack and not one per service: the provisioner brings a
stack up as a unit. Its services are prepared together (ports, credentials,
the outputs document), started in dependency order, and on a failed start
everything started so far is stopped. Per-service resources would need a
per-service provisioner API and would let Pulumi's state claim a half-started
stack that the provisioner itself never leaves behind.

The outputs document is the resource's ``connections`` output, marked secret
(``additional_secret_outputs``) so its credentials stay encrypted in the
Pulumi state. Credentials given with ``pulumi config set --secret`` are not
used here: the local provisioner generates each stack's own (0600 files
under ``.stacks/NAME``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pulumi
import pulumi.dynamic as dyn

from backbone.connections import ConnectionsError, dump_document, load_document
from backbone_infra.spec import StackSpec

__all__ = ["LocalStackProvider", "LocalStackResource", "deploy", "stacks_root_override"]

#: The output keys ``deploy`` returns (stable snake_case, like every target).
OUTPUT_KEYS = ("connections", "stack_dir", "outputs_path")


#: Set by :func:`stacks_root_override` (the Automation API driver's inline
#: program); ``None`` means the provisioner's default root.
_ROOT_OVERRIDE: Path | None = None


@contextmanager
def stacks_root_override(root: Path | None) -> Iterator[None]:
    """Make :func:`deploy` calls inside the block use ``root`` (when not ``None``)."""
    global _ROOT_OVERRIDE
    previous, _ROOT_OVERRIDE = _ROOT_OVERRIDE, root
    try:
        yield
    finally:
        _ROOT_OVERRIDE = previous


def _spec_of(props: dict[str, Any]) -> StackSpec:
    return StackSpec.model_validate(props["spec"])


def _root_of(props: dict[str, Any]) -> Path | None:
    root = props.get("root")
    return Path(root) if root else None


def _stack_running(name: str, root: Path | None) -> bool:
    """True when the stack's state says running and every recorded process lives."""
    from backbone_infra.targets.local.process import ProcessNode
    from backbone_infra.targets.local.state import load_state, stack_dir

    try:
        state = load_state(stack_dir(name, root))
    except (FileNotFoundError, ValueError, KeyError):
        return False
    if state.status != "running":
        return False
    records = [r for recs in state.records.values() for r in recs]
    return bool(records) and all(ProcessNode(r).running() for r in records)


def _outs(document: dict[str, Any], stack_dir: Path, outputs_path: Path) -> dict[str, Any]:
    return {
        "connections": document,
        "stack_dir": str(stack_dir),
        "outputs_path": str(outputs_path),
    }


class LocalStackProvider(dyn.ResourceProvider):
    """Create/read/delete one local stack through ``backbone_infra.targets.local.provisioner``.

    Serialised by value into the Pulumi state (dill); it holds no data and
    imports the provisioner lazily, inside the provider process.
    """

    def create(self, props: dict[str, Any]) -> dyn.CreateResult:
        from backbone_infra.targets.local import provisioner

        spec = _spec_of(props)
        stack = provisioner.up(spec, root=_root_of(props))
        doc = dump_document(stack.document, reveal_secrets=True)
        outputs_path = Path(stack.outputs_path)
        return dyn.CreateResult(id_=spec.name, outs=_outs(doc, outputs_path.parent, outputs_path))

    def read(self, id_: str, props: dict[str, Any]) -> dyn.ReadResult:
        from backbone_infra.targets.local.state import OUTPUTS_FILE, stack_dir

        root = _root_of(props)
        if not _stack_running(id_, root):
            # Gone (or no longer complete): a refresh drops it from the state,
            # and the next `up` creates it again.
            return dyn.ReadResult(id_="", outs={})
        directory = stack_dir(id_, root)
        outputs_path = directory / OUTPUTS_FILE
        try:
            doc = dump_document(load_document(outputs_path), reveal_secrets=True)
        except ConnectionsError:
            return dyn.ReadResult(id_="", outs={})
        return dyn.ReadResult(id_=id_, outs={**props, **_outs(doc, directory, outputs_path)})

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.DiffResult:
        changed = [k for k in ("spec", "root") if olds.get(k) != news.get(k)]
        # A stack is brought up as a unit under its name: any change replaces
        # it, and the old one must be gone first (same name, same directory).
        return dyn.DiffResult(
            changes=bool(changed),
            replaces=changed,
            delete_before_replace=bool(changed),
        )

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        from backbone_infra.targets.local import provisioner

        provisioner.down(id_, root=_root_of(props))


class LocalStackResource(dyn.Resource):
    """One local process stack; ``connections`` is its outputs document (secret)."""

    connections: pulumi.Output[dict[str, Any]]
    stack_dir: pulumi.Output[str]
    outputs_path: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        spec: StackSpec,
        *,
        root: Path | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        secret_opts = pulumi.ResourceOptions(
            additional_secret_outputs=["connections"], delete_before_replace=True
        )
        super().__init__(
            LocalStackProvider(),
            name,
            {
                "spec": spec.model_dump(mode="json"),
                "root": str(root) if root else None,
                "connections": None,
                "stack_dir": None,
                "outputs_path": None,
            },
            pulumi.ResourceOptions.merge(secret_opts, opts),
        )


def deploy(
    spec: StackSpec, config: object | None = None, *, root: Path | None = None
) -> pulumi.Output[dict[str, Any]]:
    """Declare the local stack for ``spec``; the Output holds ``connections``
    (the ``backbone.connections/v1`` document, secret), ``stack_dir`` and
    ``outputs_path``.

    ``config`` (a ``backbone_infra.config.StackConfig``) is accepted for the common
    target signature; the local target needs nothing from it beyond the spec.
    ``root`` moves the stacks root (default: the :func:`stacks_root_override`
    in force, else ``$HARNESS_STACKS_DIR`` or ``<repo>/.stacks``); it is
    resolved now and kept in the resource, so a later destroy finds the stack.
    """
    from backbone_infra.targets.local.state import stacks_root

    del config
    resource = LocalStackResource(
        f"local-{spec.name}", spec, root=stacks_root(root or _ROOT_OVERRIDE)
    )
    # additional_secret_outputs encrypts it in the state; the explicit secret
    # keeps every Output derived from it secret in this program too.
    connections: pulumi.Output[dict[str, Any]] = pulumi.Output.secret(resource.connections)
    return pulumi.Output.all(
        connections=connections,
        stack_dir=resource.stack_dir,
        outputs_path=resource.outputs_path,
    )
