"""``harness drill``: list the outage drills, run them on a local or compose stack.

    harness drill list
    harness drill run NAME|all [--env local|compose] [--size minimal|ha] [--name STACK]
                               [--up] [--hold S] [--out DIR]
                               [--load [--load-users N] [--load-profile P]]

Without ``--up`` the drill runs on the running stack ``--name`` (default
``dev``), whichever environment runs it; with ``--up`` it brings a stack of
``--env`` and ``--size`` (default local, ha) up itself and always takes it
down. Drills pick their target by role at run time. A drill the environment
cannot make ("not applicable on ENV": Toxiproxy path drills on compose, the
container partition on local) is reported as such and fails nothing; with
``all``, drills that need a bigger stack than ``--size`` are skipped. The
report is merged into ``docs/status/drills.md`` and ``.json``, one column per
environment. ``--load`` runs the Locust load test across each drill's fault and
writes its curve (``drill-NAME-load.png``) beside the report, the figures into
the JSON. Exit code 0: every drill that ran passed; 1: one ran and failed; 2:
it could not run.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from backbone.clikit import emit_json, fail
from backbone_harness.errors import USER_ERRORS, HarnessError
from backbone_harness.load.cli import Profile
from backbone_harness.stacks import ENVIRONMENTS, down_stack, load_stack, up_stack
from backbone_infra.paths import status_dir
from backbone_infra.spec import SIZES, build_spec

if TYPE_CHECKING:
    from backbone_harness.drills.report import DrillReport

__all__ = ["STATUS_DIR", "drill_app"]

#: What ends a drill command with exit code 2 and a message, not a traceback.
_DRILL_ERRORS: tuple[type[Exception], ...] = (
    *USER_ERRORS,
    KeyError,
    TimeoutError,
    RuntimeError,
    ValueError,
)

#: The committed status pages of the project (``backbone_infra.paths``), never the package's folder.
STATUS_DIR = status_dir()

drill_app = typer.Typer(help="Scripted outage drills: nothing acknowledged may be lost.")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


@drill_app.command("list")
def list_drills() -> None:
    """Every drill: name, fault (by role) and what it proves."""
    from backbone_harness.drills.runner import DRILLS

    for name, cls in sorted(DRILLS.items()):
        budget = cls.max_unavailable_s
        ceiling = "no ceiling" if budget is None else f"writes may stop at most {budget:g} s"
        out.print(
            f"[bold]{name}[/]  {cls.fault.kind} {cls.fault.role}\n    {cls.summary}\n"
            f"    ({ceiling})"
        )


@drill_app.command("run")
def run(
    drill: Annotated[
        str, typer.Argument(help="The drill's name (`harness drill list`), or `all`.")
    ],
    name: Annotated[str | None, typer.Option("--name", "-n", help="Stack name.")] = None,
    bring_up: Annotated[
        bool, typer.Option("--up", help="Bring a stack up for the drill and down after.")
    ] = False,
    env: Annotated[
        str,
        typer.Option("--env", help=f"With --up: where the stack runs ({', '.join(ENVIRONMENTS)})."),
    ] = "local",
    size: Annotated[
        str, typer.Option("--size", help="With --up: the stack size (minimal, ha).")
    ] = "ha",
    hold: Annotated[
        float,
        typer.Option(help="Keep each fault at least this many seconds, so alerts can fire."),
    ] = 45.0,
    out_dir: Annotated[Path, typer.Option("--out", help="Where the reports go.")] = STATUS_DIR,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the reports as one JSON document on stdout.")
    ] = False,
    load: Annotated[
        bool,
        typer.Option(
            "--load",
            help="Run the Locust load across the fault; plot its latency and error curve.",
        ),
    ] = False,
    load_users: Annotated[
        int, typer.Option(min=1, max=64, help="Locust users of --load (readers 3 : 1 feeds).")
    ] = 4,
    load_profile: Annotated[
        Profile, typer.Option(help="Who the --load users are: produce, read or both.")
    ] = Profile.both,
) -> None:
    """Run one drill (or all, one after the other on the same stack) and write the report."""
    from backbone_harness.drills.load import LoadOptions
    from backbone_harness.drills.report import write_report
    from backbone_harness.drills.runner import DRILLS, drill_class, errored_report, run_drill

    load_options = (
        LoadOptions(users=load_users, spawn_rate=float(load_users), profile=load_profile.value)
        if load
        else None
    )

    progress = err if as_json else out

    def say(line: str) -> None:
        progress.print(line, markup=False)

    reports: list[DrillReport] = []
    try:
        if env not in ENVIRONMENTS or size not in SIZES:
            raise HarnessError(
                f"--env {env} --size {size}: use --env {'|'.join(ENVIRONMENTS)} "
                f"and --size {'|'.join(SIZES)}"
            )
        classes = [DRILLS[n] for n in DRILLS] if drill == "all" else [drill_class(drill)]
        stack_name = name or (f"drill-{secrets.token_hex(3)}" if bring_up else "dev")
        if bring_up:
            say(f"bringing up {size} stack {stack_name} ({env}) ...")
            stack = up_stack(env, build_spec(stack_name, size=size), echo=say)
        else:
            stack = load_stack(stack_name)
        # A drill the environment cannot make is reported as such, whatever the size.
        unfit = [
            c.name
            for c in classes
            if stack.spec.size not in c.stack_sizes and c.not_applicable(stack) is None
        ]
        if stack.status != "running" or (unfit and drill != "all"):
            if bring_up:
                down_stack(stack_name)
            raise HarnessError(
                f"stack {stack_name!r} is {stack.status} and {stack.spec.size}; "
                f"{', '.join(unfit) or 'drills'} need a running ha stack: "
                f"`harness up --env {stack.environment} --size ha --name NAME`, or pass --up"
            )
        try:
            for cls in classes:
                if cls.name in unfit:
                    say(
                        f"{cls.name}: skipped, needs a stack of size {' or '.join(cls.stack_sizes)}"
                    )
                    continue
                try:
                    report = run_drill(cls, stack, hold_s=hold, log=say, load=load_options)
                except Exception as exc:
                    if drill != "all" and isinstance(exc, _DRILL_ERRORS):
                        raise
                    # A drill that errors (a timeout waiting for a role, a client that
                    # met the killed node) is that drill's failure, reported as one:
                    # not a traceback, and not the end of the other drills' run.
                    report = errored_report(cls, stack, exc)
                    say(f"{cls.name}: FAIL ({report.reason})")
                reports.append(report)
                write_report(report, out_dir)
        finally:
            if bring_up:
                say(f"taking down {stack_name}")
                down_stack(stack_name)
                if reports and not any(r.failed for r in reports):
                    shutil.rmtree(stack.dir, ignore_errors=True)  # kept for logs otherwise
    except _DRILL_ERRORS as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise fail("harness", message) from None
    if as_json:
        emit_json({"reports": [r.as_dict() for r in reports], "report": str(out_dir / "drills.md")})
        if any(r.failed for r in reports):
            raise typer.Exit(1)
        return
    for report in reports:
        if not report.applicable:
            say(f"{report.drill}: {report.reason}")
            continue
        say(
            f"{report.drill}: acknowledged {report.acknowledged}, lost "
            f"{report.lost_acknowledged}, duplicates {report.duplicates}, unavailable "
            f"{report.unavailable_seconds:.1f}s{_ceiling(report)}, recovered "
            f"{report.recovery_seconds:.1f}s — {_word(report)}"
        )
        if report.load:
            say(f"{report.drill}: load curve {out_dir / report.load['plot']}")
    say(str(out_dir / "drills.md"))
    if any(r.failed for r in reports):
        raise typer.Exit(1)


def _ceiling(report: DrillReport) -> str:
    budget = report.unavailable_budget_s
    return "" if budget is None else f" (ceiling {budget:g}s)"


def _word(report: DrillReport) -> str:
    if not report.passed:
        return "FAIL"
    return "PASS" if report.within_budget else "OVER CEILING (writes stopped too long)"
