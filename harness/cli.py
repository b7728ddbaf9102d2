"""``harness``: bring stacks up and down, look at them, control their nodes.

    harness up --env local [--size minimal|ha] [--tier institutional|bootstrap] [--name NAME]
    harness up --env local --via pulumi [--name ci-XXXXXX]    (an ephemeral Pulumi stack)
    harness down --via pulumi --name NAME                      (destroy and remove it)
    harness status [--name NAME]
    harness down [--name NAME] [--all]
    harness node list|roles [--name NAME]
    harness node kill|stop|pause|resume|restart NODE [--name NAME]
    harness bench up [--runs N]
    harness bench perf [--bars N] [--skip-tier1]

Every error is one line on stderr saying what was wrong and what to do, with
exit code 2; a failed ``up`` leaves nothing running. Stack directories live
under ``$HARNESS_STACKS_DIR`` (default ``<repo>/.stacks``).
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from harness.drills.cli import drill_app
from harness.errors import USER_ERRORS, ServiceStartError, UsageError
from harness.load.cli import load_app
from infra.spec import SIZES, TIERS, build_spec
from infra.targets.local import provisioner
from infra.targets.local.process import ProcessNode
from infra.targets.local.state import stacks_root

__all__ = ["app"]

ENVIRONMENTS = ("local", "docker", "kubernetes")
VIAS = ("provisioner", "pulumi")
DEFAULT_NAME = "dev"

app = typer.Typer(
    name="harness",
    help="Bring backbone stacks up and down, inspect them and control their nodes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
node_app = typer.Typer(help="Per-node control of a running stack (for outage drills).")
bench_app = typer.Typer(help="Benchmarks of the harness itself.")
app.add_typer(node_app, name="node")
app.add_typer(bench_app, name="bench")
app.add_typer(drill_app, name="drill")
app.add_typer(load_app, name="load")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

NameOpt = Annotated[str, typer.Option("--name", "-n", help="Stack name.")]
ViaOpt = Annotated[
    str, typer.Option("--via", help="provisioner | pulumi (an ephemeral Pulumi stack)")
]
F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(2)


def _user_errors(func: F) -> F:
    """Turn a :class:`HarnessError` into one line on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ServiceStartError as exc:
            first, _, tail = str(exc).partition("\n")
            err.print(f"[bold red]error:[/] {first}", soft_wrap=True)
            if tail:
                err.print(tail, markup=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except USER_ERRORS as exc:
            raise _fail(str(exc)) from None
        except KeyError as exc:  # an unknown node or service name
            raise _fail(str(exc.args[0]) if exc.args else str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _choice(value: str, choices: tuple[str, ...], option: str) -> str:
    if value not in choices:
        raise UsageError(f"unknown {option} {value!r}; choose one of: {', '.join(choices)}")
    return value


# -- up / down / status ----------------------------------------------------------------


@app.command()
@_user_errors
def up(
    env: Annotated[str, typer.Option(help="local | docker | kubernetes")] = "local",
    size: Annotated[str, typer.Option(help="minimal | ha")] = "minimal",
    tier: Annotated[str, typer.Option(help="institutional | bootstrap")] = "institutional",
    name: Annotated[str | None, typer.Option("--name", "-n", help="Stack name.")] = None,
    via: ViaOpt = "provisioner",
) -> None:
    """Bring a stack up; prints each service's time to ready and, last, the
    path of its outputs document."""
    _choice(via, VIAS, "--via")
    if via == "pulumi":
        _up_via_pulumi(env, size, tier, name)
        return
    name = name or DEFAULT_NAME
    _choice(env, ENVIRONMENTS, "--env")
    _choice(size, SIZES, "--size")
    _choice(tier, TIERS, "--tier")
    if env != "local":
        what, pulumi_stack = (
            ("a Docker engine", "dev") if env == "docker" else ("a Kubernetes cluster", "prod")
        )
        raise UsageError(
            f"--env {env} needs {what}: from the repository root run `pulumi up -s {pulumi_stack}` "
            f"(Pulumi.{pulumi_stack}.yaml targets {env}; see docs/environments.md), "
            "or use --env local"
        )
    try:
        spec = build_spec(name, tier=tier, size=size)  # type: ignore[arg-type]
    except ValidationError:
        raise UsageError(
            f"invalid --name {name!r}: use lowercase letters, digits and '-', "
            "at most 39 characters, starting with a letter or digit"
        ) from None
    began = time.monotonic()
    out.print(f"bringing up stack [bold]{name}[/] ({tier}, {size}) on loopback ...")
    stack = provisioner.up(spec, echo=lambda line: out.print(line, markup=False))
    out.print(f"stack {name} ready in {time.monotonic() - began:.1f}s")
    # The path goes out last and unadorned, so scripts can take `tail -1`.
    print(stack.outputs_path, flush=True)


@app.command()
@_user_errors
def down(
    name: NameOpt = DEFAULT_NAME,
    all_: Annotated[bool, typer.Option("--all", help="Every stack under the root.")] = False,
    via: ViaOpt = "provisioner",
) -> None:
    """Stop every node of a stack (idempotent; the state directory stays)."""
    if _choice(via, VIAS, "--via") == "pulumi":
        from harness.pulumi_stacks import down_via_pulumi

        began = time.monotonic()
        down_via_pulumi(name, echo=lambda line: out.print(line, markup=False))
        out.print(f"pulumi stack {name} destroyed and removed in {time.monotonic() - began:.1f}s")
        return
    names = provisioner.list_stacks() if all_ else [name]
    if not all_ and name not in provisioner.list_stacks():
        out.print(f"no stack named {name!r} under {stacks_root()}; nothing to stop")
        return
    for each in names:
        began = time.monotonic()
        provisioner.down(each)
        out.print(f"stack {each} stopped in {time.monotonic() - began:.1f}s")


def _up_via_pulumi(env: str, size: str, tier: str, name: str | None) -> None:
    """``up --via pulumi``: an ephemeral Pulumi stack (``ci-XXXXXX`` unless named)."""
    from harness.pulumi_stacks import up_via_pulumi

    if _choice(env, ENVIRONMENTS, "--env") != "local":
        raise UsageError("--via pulumi drives the local target only; use --env local")
    _choice(size, SIZES, "--size")
    _choice(tier, TIERS, "--tier")
    try:
        spec = build_spec(name or "unnamed", tier=tier, size=size)  # type: ignore[arg-type]
    except ValidationError:
        raise UsageError(f"invalid --name {name!r}: lowercase letters, digits and '-'") from None
    began = time.monotonic()
    stack, doc = up_via_pulumi(spec, name=name, echo=lambda line: out.print(line, markup=False))
    out.print(f"pulumi stack {stack} ({doc.tier}) up in {time.monotonic() - began:.1f}s")
    print(provisioner.load(stack).outputs_path, flush=True)


def _load(name: str) -> provisioner.LocalStack:
    return provisioner.load(name)


def _node_state(node: ProcessNode) -> str:
    if not node.running():
        return "down"
    return "paused" if node.paused() else "running"


@app.command()
@_user_errors
def status(name: NameOpt = DEFAULT_NAME) -> None:
    """Nodes of a stack with pids, roles and whether they run."""
    stack = _load(name)
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


def _monitoring_panel(stack: provisioner.LocalStack) -> None:
    """Hook: the monitoring view of a stack, when ``harness.observe`` offers one."""
    try:
        from harness import observe
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
def node_roles(name: NameOpt = DEFAULT_NAME) -> None:
    """Current role of every node, asked of the services themselves."""
    stack = _load(name)
    for node, role in stack.roles().items():
        out.print(f"{node:<22} {role}", markup=False)


def _control(action: str, node: str, name: str) -> None:
    stack = _load(name)
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
) -> None:
    """Time `up` and `down` for minimal and ha, compare with each service's own
    start path, and write docs/status/stack-startup.md and .json."""
    from harness.bench.startup import run_startup_bench

    md, js = run_startup_bench(runs=runs, output=output, echo=lambda m: out.print(m, markup=False))
    out.print(f"wrote {md} and {js}")


@bench_app.command("perf")
@_user_errors
def bench_perf(
    output: Annotated[
        Path, typer.Option("--out", help="Where performance.md and .json go.")
    ] = Path("docs/status"),
    bars: Annotated[int, typer.Option("--bars", help="Bars per throughput run.")] = 200_000,
    skip_tier1: Annotated[
        bool, typer.Option("--skip-tier1", help="Tier 0 only (no local stack).")
    ] = False,
) -> None:
    """Measure bars/s end to end on both tiers, p99 latency at 5,000 bars/s, and Kafka's
    own ProducerPerformance; writes performance.md and performance.json."""
    from harness.bench.performance import run_bench

    if bars < 10_000:
        raise UsageError(f"--bars {bars} is too few to measure a rate; use at least 10000")
    run_bench(output, bars=bars, tier1=not skip_tier1, log=lambda m: out.print(m, markup=False))
    out.print(f"wrote {output / 'performance.md'} and {output / 'performance.json'}")


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
