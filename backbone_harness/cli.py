"""``harness``: bring stacks up and down, look at them, control their nodes.

    harness up --env local [--size minimal|ha] [--tier institutional|bootstrap] [--name NAME]
    harness up --env compose --size minimal [--name NAME]      (the project's images on podman)
    harness up --env local --via pulumi [--name ci-XXXXXX]    (an ephemeral Pulumi stack)
    harness down --via pulumi --name NAME                      (destroy and remove it)
    harness status [--name NAME]
    harness outputs [--name NAME] [--job writer|consumer|reader|monitor] [--out FILE]
    harness outputs --outputs FILE --job JOB [--out FILE]     (a saved Pulumi `connections`)
    harness rotate-credentials [--name NAME] [--principal P ...] [--grace S]
        (P: redis|kafka|postgres, the application's, or application for all three;
         writer|consumer|reader, a job's; monitor, the exporters'; default: all but monitor)
    harness down [--name NAME] [--all]
    harness node list|roles [--name NAME]
    harness node kill|stop|pause|resume|restart NODE [--name NAME]
    harness node disconnect|reconnect NODE [--name NAME]       (compose stacks: a partition)
    harness bench up [--runs N] [--env local|compose|all]
    harness bench perf [--quick] [--out DIR]
    harness bench sprint-close [--status DIR]
    harness bench contract [--rows N,N] [--outputs PATH]
    harness images build [NAME ...]
    harness compose render --size minimal|ha [--name NAME] [--out DIR]

Every error is one line on stderr saying what was wrong and what to do, with
exit code 2; a failed ``up`` leaves nothing running. Stack directories live
under ``$HARNESS_STACKS_DIR`` (default ``<repo>/.stacks``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from backbone.clikit import emit_json, fail, make_app, user_errors
from backbone.connections import JOBS, ConnectionsError, load_document, write_document
from backbone.logs import LogLevel
from backbone_harness.containers.cli import compose_app, images_app
from backbone_harness.drills.cli import drill_app
from backbone_harness.errors import USER_ERRORS, UsageError
from backbone_harness.load.cli import load_app
from backbone_infra.spec import SIZES, TIERS, build_spec
from backbone_infra.targets.local import provisioner
from backbone_infra.targets.local.process import ProcessNode
from backbone_infra.targets.local.state import stacks_root

__all__ = ["app"]

DEFAULT_NAME = "dev"


class Env(StrEnum):
    """Where a stack runs."""

    local = "local"
    compose = "compose"
    docker = "docker"
    kubernetes = "kubernetes"


class SizeChoice(StrEnum):
    """How many nodes of each service (``backbone_infra.spec.SIZES``)."""

    minimal = "minimal"
    ha = "ha"


class JobChoice(StrEnum):
    """A job with its own principals (``backbone.connections.JOBS``)."""

    writer = "writer"
    consumer = "consumer"
    reader = "reader"
    monitor = "monitor"


class TierChoice(StrEnum):
    """Which tier the stack serves (``backbone_infra.spec.TIERS``)."""

    institutional = "institutional"
    bootstrap = "bootstrap"


class Via(StrEnum):
    """Who brings the stack up: the provisioner directly, or an ephemeral Pulumi stack."""

    provisioner = "provisioner"
    pulumi = "pulumi"


assert {s.value for s in SizeChoice} == set(SIZES) and {t.value for t in TierChoice} == set(TIERS)
assert {j.value for j in JobChoice} == set(JOBS)

app = make_app(
    "harness",
    "Bring backbone stacks up and down, inspect them and control their nodes.",
    log_level=LogLevel.warning,
)
node_app = typer.Typer(help="Per-node control of a running stack (for outage drills).")
bench_app = typer.Typer(help="Benchmarks of the harness itself.")
app.add_typer(node_app, name="node")
app.add_typer(bench_app, name="bench")
app.add_typer(drill_app, name="drill")
app.add_typer(load_app, name="load")
app.add_typer(images_app, name="images")
app.add_typer(compose_app, name="compose")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


NameOpt = Annotated[str, typer.Option("--name", "-n", help="Stack name.")]
ViaOpt = Annotated[Via, typer.Option("--via", help="An ephemeral Pulumi stack, or not.")]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout instead of text.")
]
F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str) -> typer.Exit:
    return fail("harness", message)


#: Every command: a failure the user can act on is one message and exit code 2.
_user_errors = user_errors("harness", (*USER_ERRORS, KeyError))


# -- up / down / status ----------------------------------------------------------------


@app.command()
@_user_errors
def up(
    env: Annotated[Env, typer.Option(help="Where the stack runs.")] = Env.local,
    size: Annotated[SizeChoice, typer.Option(help="Nodes per service.")] = SizeChoice.minimal,
    tier: Annotated[TierChoice, typer.Option(help="The tier served.")] = TierChoice.institutional,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Stack name.")] = None,
    via: ViaOpt = Via.provisioner,
    as_json: JsonOpt = False,
    no_tls: Annotated[
        bool,
        typer.Option(
            "--no-tls",
            help="Plain-text listeners, for measuring what TLS costs only; never for data "
            "that matters (docs/tls.md).",
        ),
    ] = False,
) -> None:
    """Bring a stack up; prints each service's time to ready and, last, the
    path of its outputs document. TLS is on unless ``--no-tls`` (for measuring only)."""
    env_, size_, tier_ = env.value, size.value, tier.value
    if via is Via.pulumi:
        _up_via_pulumi(env_, size_, tier_, name, as_json)
        return
    name = name or DEFAULT_NAME
    if env is Env.compose:
        _up_compose(name, size_, tier_, tls=not no_tls)
        return
    if env is not Env.local:
        what, pulumi_stack = (
            ("a Docker engine", "dev") if env is Env.docker else ("a Kubernetes cluster", "prod")
        )
        raise UsageError(
            f"--env {env_} needs {what}: from the repository root run "
            f"`pulumi up -s {pulumi_stack}` (Pulumi.{pulumi_stack}.yaml targets {env_}; "
            "see docs/environments.md), or use --env local"
        )
    try:
        spec = build_spec(name, tier=tier_, size=size_, tls=not no_tls)  # type: ignore[arg-type]
    except ValidationError:
        raise UsageError(
            f"invalid --name {name!r}: use lowercase letters, digits and '-', "
            "at most 39 characters, starting with a letter or digit"
        ) from None
    began = time.monotonic()
    say = _progress(as_json)
    say(
        f"bringing up stack {name} ({tier_}, {size_}) on loopback"
        + (" WITHOUT TLS (for measuring only)" if no_tls else "")
        + " ..."
    )
    stack = provisioner.up(spec, echo=say)
    took = time.monotonic() - began
    if as_json:
        emit_json(_stack_json(stack) | {"seconds_to_ready": round(took, 2)})
        return
    out.print(f"stack {name} ready in {took:.1f}s")
    # The path goes out last and unadorned, so scripts can take `tail -1`.
    print(stack.outputs_path, flush=True)


@app.command()
@_user_errors
def down(
    name: NameOpt = DEFAULT_NAME,
    all_: Annotated[bool, typer.Option("--all", help="Every stack under the root.")] = False,
    via: ViaOpt = Via.provisioner,
) -> None:
    """Stop every node of a stack (idempotent; the state directory stays)."""
    if via is Via.pulumi:
        from backbone_harness.pulumi_stacks import down_via_pulumi

        began = time.monotonic()
        down_via_pulumi(name, echo=lambda line: out.print(line, markup=False))
        out.print(f"pulumi stack {name} destroyed and removed in {time.monotonic() - began:.1f}s")
        return
    from backbone_harness.containers.stack import ContainerStack, is_container_stack

    for each in _container_stacks() if all_ else [name] if is_container_stack(name) else []:
        began = time.monotonic()
        ContainerStack(each).down()
        out.print(f"stack {each} (containers) removed in {time.monotonic() - began:.1f}s")
        if not all_:
            return
    names = provisioner.list_stacks() if all_ else [name]
    if not all_ and name not in provisioner.list_stacks():
        out.print(f"no stack named {name!r} under {stacks_root()}; nothing to stop")
        return
    for each in names:
        began = time.monotonic()
        provisioner.down(each)
        out.print(f"stack {each} stopped in {time.monotonic() - began:.1f}s")


def _up_compose(name: str, size: str, tier: str, *, tls: bool = True) -> None:
    """``up --env compose``: the project's images as containers on podman."""
    from backbone_harness.containers import stack as containers

    try:
        spec = build_spec(name, tier=tier, size=size, tls=tls)  # type: ignore[arg-type]
    except ValidationError:
        raise UsageError(
            f"invalid --name {name!r}: use lowercase letters, digits and '-', "
            "at most 39 characters, starting with a letter or digit"
        ) from None
    began = time.monotonic()
    out.print(
        f"bringing up stack [bold]{name}[/] ({tier}, {size}) as containers on podman"
        + ("" if tls else " WITHOUT TLS (for measuring only)")
        + " ..."
    )
    path = containers.up(spec, echo=lambda line: out.print(line, markup=False))
    out.print(f"stack {name} ready in {time.monotonic() - began:.1f}s")
    print(path, flush=True)


def _container_stacks() -> list[str]:
    root = stacks_root()
    if not root.is_dir():
        return []
    from backbone_harness.containers.stack import STATE_FILE

    return sorted(p.name for p in root.iterdir() if (p / STATE_FILE).is_file())


def _up_via_pulumi(env: str, size: str, tier: str, name: str | None, as_json: bool) -> None:
    """``up --via pulumi``: an ephemeral Pulumi stack (``ci-XXXXXX`` unless named)."""
    from backbone_harness.pulumi_stacks import up_via_pulumi

    if env != Env.local.value:
        raise UsageError("--via pulumi drives the local target only; use --env local")
    try:
        spec = build_spec(name or "unnamed", tier=tier, size=size)  # type: ignore[arg-type]
    except ValidationError:
        raise UsageError(f"invalid --name {name!r}: lowercase letters, digits and '-'") from None
    began = time.monotonic()
    stack, doc = up_via_pulumi(spec, name=name, echo=_progress(as_json))
    took = time.monotonic() - began
    if as_json:
        emit_json(_stack_json(provisioner.load(stack)) | {"seconds_to_ready": round(took, 2)})
        return
    out.print(f"pulumi stack {stack} ({doc.tier}) up in {took:.1f}s")
    print(provisioner.load(stack).outputs_path, flush=True)


def _load(name: str) -> provisioner.LocalStack:
    return provisioner.load(name)


def _progress(as_json: bool) -> Callable[[str], None]:
    """Progress lines: on stdout for people, on stderr when stdout carries JSON."""
    console = err if as_json else out
    return lambda line: console.print(line, markup=False)


def _stack_json(stack: provisioner.LocalStack) -> dict[str, Any]:
    """A stack as ``--json`` shows it: nodes, roles and paths, never a secret."""
    roles = stack.roles() if stack.node_names() else {}
    nodes = [
        {
            "node": rec.name,
            "service": svc_name,
            "pid": rec.pid,
            "ports": dict(rec.ports),
            "state": _node_state(ProcessNode(rec)),
            "role": roles.get(rec.name),
        }
        for svc_name, svc in stack.services.items()
        for rec in svc.records
    ]
    return {
        "stack": stack.name,
        "tier": stack.spec.tier,
        "size": stack.spec.size,
        "status": stack.status,
        "dir": str(stack.dir),
        "outputs": str(stack.outputs_path) if stack.outputs_path.exists() else None,
        "nodes": nodes,
    }


def _node_state(node: ProcessNode) -> str:
    if not node.running():
        return "down"
    return "paused" if node.paused() else "running"


@app.command()
@_user_errors
def status(name: NameOpt = DEFAULT_NAME, as_json: JsonOpt = False) -> None:
    """Nodes of a stack with pids, roles and whether they run."""
    from backbone_harness.containers.stack import ContainerStack, is_container_stack

    if is_container_stack(name):
        cstack = ContainerStack(name)
        out.print(f"stack [bold]{name}[/] (containers) — {cstack.state.status} — {cstack.dir}")
        table = Table("node", "container", "ports", "state")
        for row in cstack.status_rows():
            table.add_row(*row)
        out.print(table)
        out.print(f"outputs: {cstack.outputs_path}")
        return
    stack = _load(name)
    if as_json:
        emit_json(_stack_json(stack))
        return
    out.print(
        f"stack [bold]{stack.name}[/] ({stack.spec.tier}, {stack.spec.size}) — {stack.status} — "
        f"{stack.dir}"
    )
    roles = stack.roles() if stack.node_names() else {}
    table = Table("node", "service", "pid", "ports", "state", "role")
    for svc_name, svc in stack.services.items():
        for rec in svc.records:
            node = ProcessNode(rec)
            ports = " ".join(f"{k}={v}" for k, v in rec.ports.items())
            table.add_row(
                rec.name,
                svc_name,
                str(rec.pid or "-"),
                ports,
                _node_state(node),
                roles.get(rec.name, "-"),
            )
    out.print(table)
    _monitoring_panel(stack)
    if stack.outputs_path.exists():
        out.print(f"outputs: {stack.outputs_path}")


class PrincipalChoice(StrEnum):
    """The application's login to one service (``application``: to all three), one
    job's logins to every service it uses, or the exporters' (``monitor``)
    (``backbone_infra.rotation.PRINCIPALS``)."""

    application = "application"
    redis = "redis"
    kafka = "kafka"
    postgres = "postgres"
    writer = "writer"
    consumer = "consumer"
    reader = "reader"
    monitor = "monitor"


@app.command("outputs")
@_user_errors
def outputs_command(
    name: NameOpt = DEFAULT_NAME,
    job: Annotated[
        JobChoice | None,
        typer.Option("--job", "-j", help="Write the document of this job only."),
    ] = None,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where the job's document goes (0600)."),
    ] = None,
    outputs: Annotated[
        Path | None,
        typer.Option(
            "--outputs",
            help="A full document saved from a Pulumi stack "
            "(`pulumi stack output --json connections --show-secrets`), instead of --name.",
        ),
    ] = None,
) -> None:
    """Print the path of the stack's outputs document; with ``--job``, write a
    document holding only that job's sections and credentials (0600, default
    ``.stacks/NAME/outputs.JOB.json``, or ``outputs.JOB.json`` beside ``--outputs``)
    and print its path. Never prints a secret."""
    from backbone.job_outputs import job_document
    from backbone_harness.containers.stack import ContainerStack, is_container_stack

    if outputs is not None:
        # A Docker or Kubernetes stack of the Pulumi program: no local stack
        # directory, only the document its operator saved.
        full = outputs
    elif is_container_stack(name):
        full = ContainerStack(name).outputs_path
    else:
        full = _load(name).outputs_path
    if job is None:
        if out_file is not None:
            raise UsageError("--out needs --job: the full document stays where it is")
        print(full, flush=True)
        return
    try:
        doc = job_document(load_document(full), job.value)
    except ConnectionsError as exc:
        raise UsageError(str(exc)) from None
    target = out_file or full.with_name(f"outputs.{job.value}.json")
    print(write_document(doc, target), flush=True)


@app.command("rotate-credentials")
@_user_errors
def rotate_credentials_command(
    name: NameOpt = DEFAULT_NAME,
    principal: Annotated[
        list[PrincipalChoice] | None,
        typer.Option(
            "--principal",
            "-p",
            help="Rotate only this one (repeatable); default every client's (all but monitor).",
        ),
    ] = None,
    grace: Annotated[
        float,
        typer.Option(
            "--grace",
            min=0.0,
            help="Seconds Redis accepts both passwords after the new document is published.",
        ),
    ] = 5.0,
    as_json: JsonOpt = False,
) -> None:
    """Rotate the application's and the jobs' passwords on a running stack (local or
    compose) without refusing a client: the services accept the new password, then outputs.json
    and secrets.json are rewritten, then Redis forgets the old one (see
    docs/credential-rotation.md)."""
    from backbone_harness.stacks import load_stack
    from backbone_infra.rotation import APPLICATION, CLIENTS, rotate_credentials

    stack = load_stack(name)
    if not stack.spec.has_services:
        raise UsageError(f"stack {name!r} is a bootstrap-tier stack: it has no credentials")
    chosen: list[str] = []
    for p in principal or [PrincipalChoice(c) for c in CLIENTS]:
        chosen += APPLICATION if p is PrincipalChoice.application else [p.value]
    say = (lambda _m: None) if as_json else (lambda m: out.print(m, markup=False))
    result = rotate_credentials(stack, chosen, grace_s=grace, echo=say)  # type: ignore[arg-type]
    report = {
        "stack": name,
        "principals": list(result.principals),
        "users": list(result.users),
        "seconds_to_publish": round(result.seconds_to_publish, 2),
        "grace_s": result.grace_s,
        "outputs": str(stack.outputs_path),
    }
    if as_json:
        emit_json(report)
        return
    out.print(
        f"rotated {', '.join(result.principals)} on {name}; clients read the new passwords "
        f"from {stack.outputs_path}",
        markup=False,
    )


def _monitoring_panel(stack: provisioner.LocalStack) -> None:
    """Hook: the monitoring view of a stack, when ``backbone_harness.observe`` offers one."""
    try:
        from backbone_harness import observe
    except ImportError:
        return
    panel = getattr(observe, "status_panel", None)
    if callable(panel):
        try:
            rendered = panel(stack)
        except USER_ERRORS as exc:
            out.print(f"monitoring: {exc}")
            return
        if rendered is not None:
            out.print(rendered)


# -- node control -----------------------------------------------------------------------


@node_app.command("list")
@_user_errors
def node_list(name: NameOpt = DEFAULT_NAME) -> None:
    """Every node of the stack with its pid and whether it runs."""
    stack = _load(name)
    table = Table("node", "service", "pid", "state")
    for svc_name, svc in stack.services.items():
        for rec in svc.records:
            table.add_row(rec.name, svc_name, str(rec.pid or "-"), _node_state(ProcessNode(rec)))
    out.print(table)


@node_app.command("roles")
@_user_errors
def node_roles(name: NameOpt = DEFAULT_NAME, as_json: JsonOpt = False) -> None:
    """Current role of every node, asked of the services themselves."""
    from backbone_harness.stacks import load_stack

    stack = load_stack(name)
    if as_json:
        emit_json(stack.roles())
        return
    for node, role in stack.roles().items():
        out.print(f"{node:<22} {role}", markup=False)


def _control(action: str, node: str, name: str) -> None:
    from backbone_harness.stacks import load_stack

    stack = load_stack(name)
    began = time.monotonic()
    getattr(stack, f"{action}_node")(node)
    out.print(f"{action} {node}: done in {time.monotonic() - began:.1f}s")


NodeArg = Annotated[str, typer.Argument(help="Node name, e.g. redis-1 (see `harness node list`).")]


@node_app.command("kill")
@_user_errors
def node_kill(node: NodeArg, name: NameOpt = DEFAULT_NAME) -> None:
    """SIGKILL the node (a crash)."""
    _control("kill", node, name)


@node_app.command("stop")
@_user_errors
def node_stop(node: NodeArg, name: NameOpt = DEFAULT_NAME) -> None:
    """Stop the node cleanly."""
    _control("stop", node, name)


@node_app.command("pause")
@_user_errors
def node_pause(node: NodeArg, name: NameOpt = DEFAULT_NAME) -> None:
    """SIGSTOP the node: it holds its sockets and answers nothing."""
    _control("pause", node, name)


@node_app.command("resume")
@_user_errors
def node_resume(node: NodeArg, name: NameOpt = DEFAULT_NAME) -> None:
    """SIGCONT a paused node."""
    _control("resume", node, name)


@node_app.command("disconnect")
@_user_errors
def node_disconnect(node: NodeArg, name: NameOpt = DEFAULT_NAME) -> None:
    """Take the node's container off the stack network (compose stacks): a partition."""
    _control("disconnect", node, name)


@node_app.command("reconnect")
@_user_errors
def node_reconnect(node: NodeArg, name: NameOpt = DEFAULT_NAME) -> None:
    """Put a disconnected node's container back on the stack network."""
    _control("reconnect", node, name)


@node_app.command("restart")
@_user_errors
def node_restart(node: NodeArg, name: NameOpt = DEFAULT_NAME) -> None:
    """Stop the node if it runs and start it again; waits until it answers."""
    _control("restart", node, name)


# -- bench --------------------------------------------------------------------------------


@bench_app.command("up")
@_user_errors
def bench_up(
    runs: Annotated[int, typer.Option(min=1, help="Runs per size.")] = 3,
    output: Annotated[
        Path, typer.Option(help="Report path without suffix (.md and .json are written).")
    ] = Path("docs/status/stack-startup"),
    env: Annotated[
        str,
        typer.Option(
            "--env",
            help="local, compose (merged beside the report's local figures) or all.",
        ),
    ] = "local",
    as_json: JsonOpt = False,
) -> None:
    """Time `up` and `down` for minimal and ha, compare with each service's own
    start path, and write docs/status/stack-startup.md and .json."""
    from backbone_harness.bench.startup import ENVS, run_startup_bench

    envs = ENVS if env == "all" else (env,)
    md, js = run_startup_bench(runs=runs, output=output, echo=_progress(as_json), envs=envs)
    if as_json:
        emit_json(json.loads(js.read_text()))
        return
    out.print(f"wrote {md} and {js}")


@bench_app.command("perf")
@_user_errors
def bench_perf(
    output: Annotated[
        Path, typer.Option("--out", help="Where performance.md, .json and the plots go.")
    ] = Path("docs/status"),
    quick: Annotated[
        bool, typer.Option("--quick", help="Every path briefly (minutes, not a measurement).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Every path next to its ceiling in one run (producer vs ProducerPerformance, store
    vs COPY, end to end, replay, cache reads), plots against batch size and consumer
    count, bottlenecks from cProfile; writes performance.md/.json and PNGs."""
    from backbone_harness.bench.performance import FULL, QUICK, run_bench

    report = run_bench(output, plan=QUICK if quick else FULL, log=_progress(as_json))
    if as_json:
        emit_json(report)
        return
    out.print(f"wrote {output / 'performance.md'} and {output / 'performance.json'}")


@bench_app.command("tls")
@_user_errors
def bench_tls(
    output: Annotated[
        Path, typer.Option("--out", help="Where tls.json goes and performance.md's section.")
    ] = Path("docs/status"),
    bars: Annotated[
        int, typer.Option("--bars", min=1000, help="Bars per end-to-end run.")
    ] = 20_000,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Rounds per variant.")] = 3,
    as_json: JsonOpt = False,
) -> None:
    """What TLS costs: two minimal stacks (TLS, and --no-tls for this measurement only)
    measured in alternating rounds; writes tls.json and performance.md's TLS section."""
    from backbone_harness.bench.tls_cost import run_tls_bench

    report = run_tls_bench(output, bars=bars, rounds=rounds, log=_progress(as_json))
    if as_json:
        emit_json(report)
        return
    out.print(f"wrote {output / 'tls.json'} and the TLS section of {output / 'performance.md'}")


@bench_app.command("contract")
@_user_errors
def bench_contract(
    output: Annotated[Path, typer.Option("--out", help="Where contract.md and .json go.")] = Path(
        "docs/status"
    ),
    rows: Annotated[
        str, typer.Option("--rows", help="CSV sizes to measure, comma-separated rows.")
    ] = "250000,1000000",
    bars: Annotated[int, typer.Option("--bars", help="Bars per compression run.")] = 200_000,
    outputs: Annotated[
        Path | None, typer.Option("--outputs", help="A running stack's outputs document.")
    ] = None,
    skip_tier1: Annotated[
        bool, typer.Option("--skip-tier1", help="CSV memory only (no Kafka).")
    ] = False,
    skip_csv: Annotated[
        bool, typer.Option("--skip-csv", help="Compression only; keep the last CSV section.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure the contract's costs: CSV peak memory vs file size, and Kafka record
    compression (bytes and bars/s per codec); writes contract.md and contract.json.
    Without --outputs it brings a minimal local stack up and down itself."""
    from backbone.outputs import load_connections
    from backbone_harness.bench.contract import run_contract_bench

    try:
        sizes = tuple(int(n) for n in rows.split(","))
    except ValueError:
        raise UsageError(
            f"--rows {rows!r} is not comma-separated numbers, e.g. 250000,1000000"
        ) from None
    if not sizes or min(sizes) < 1000:
        raise UsageError(f"--rows {rows!r}: use sizes of at least 1000 rows")
    if bars < 10_000:
        raise UsageError(f"--bars {bars} is too few to measure a rate; use at least 10000")
    document = load_connections(outputs) if outputs is not None else None
    report = run_contract_bench(
        output,
        rows=() if skip_csv else sizes,
        bars=bars,
        document=document,
        tier1=not skip_tier1,
        log=_progress(as_json),
    )
    if as_json:
        emit_json(report)
        return
    out.print(f"wrote {output / 'contract.md'} and {output / 'contract.json'}")


@bench_app.command("sprint-close")
@_user_errors
def bench_sprint_close(
    status: Annotated[
        Path, typer.Option("--status", help="Folder of the measured status pages (*.json).")
    ] = Path("docs/status"),
    output: Annotated[
        Path | None, typer.Option("--out", help="Where to write (default: STATUS/sprint-close.md).")
    ] = None,
) -> None:
    """The sprint-close summary: before (Tier 0 alone) / after, from the status pages."""
    from backbone_harness.bench.sprint_close import write_sprint_close

    target = write_sprint_close(status, output or status / "sprint-close.md")
    out.print(f"wrote {target}")


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
