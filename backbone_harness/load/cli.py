"""``harness load run [--users N] [--seconds S] [--profile P] [--workers N] [--hit-ratio H] ...``.

A bounded Locust run on a running stack (default ``dev``), or on a minimal
stack it brings up and down itself (``--up``): feed handlers producing bar
batches through ``BarProducer`` and/or trading users reading through
``Backbone`` (``--profile``), in one process or Locust's distributed mode
(``--workers``); then Kafka's ``ProducerPerformance`` and ``redis-benchmark``
GET against the same stack. Writes ``docs/status/load.md``, ``.json`` and the
plots (PNG) beside them.
"""

from __future__ import annotations

import secrets
import shutil
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from backbone.clikit import emit_json, fail
from backbone_harness.errors import USER_ERRORS, HarnessError
from backbone_infra.paths import status_dir
from backbone_infra.spec import build_spec
from backbone_infra.targets.local import provisioner

__all__ = ["load_app"]

#: What ends a load command with exit code 2 and a message, not a traceback.
_LOAD_ERRORS: tuple[type[Exception], ...] = (*USER_ERRORS, RuntimeError)

#: The committed status pages of the project (``backbone_infra.paths``), never the package's folder.
STATUS_DIR = status_dir()


class Profile(StrEnum):
    """Who the Locust users are."""

    produce = "produce"
    read = "read"
    both = "both"


load_app = typer.Typer(help="Throughput test with Locust (bounded, reported).")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


@load_app.command("run")
def run(
    users: Annotated[int, typer.Option(min=1, max=64, help="Concurrent Locust users.")] = 4,
    spawn_rate: Annotated[float, typer.Option(min=0.1, help="Users started per second.")] = 2.0,
    seconds: Annotated[float, typer.Option(min=1, max=3600, help="Run time.")] = 30.0,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Stack name.")] = None,
    bring_up: Annotated[
        bool, typer.Option("--up", help="Bring a minimal stack up for the run and down after.")
    ] = False,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare/--no-compare",
            help="Also run ProducerPerformance (producers) and redis-benchmark GET (readers).",
        ),
    ] = True,
    profile: Annotated[
        Profile, typer.Option(help="Feed handlers (produce), trading readers (read), or both.")
    ] = Profile.both,
    workers: Annotated[
        int,
        typer.Option(min=0, max=16, help="Locust worker processes (0: one local process)."),
    ] = 0,
    hit_ratio: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of reads asking for hot (cached) data.")
    ] = 0.9,
    out_dir: Annotated[Path, typer.Option("--out", help="Where the reports go.")] = STATUS_DIR,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as one JSON document on stdout.")
    ] = False,
) -> None:
    """Run the load test and write its report."""
    from backbone_harness.load.report import run_load_test, write_report

    progress = err if as_json else out

    def say(line: str) -> None:
        progress.print(line, markup=False)

    stack_name = name or (f"load-{secrets.token_hex(3)}" if bring_up else "dev")
    try:
        if bring_up:
            say(f"bringing up minimal stack {stack_name} ...")
            stack = provisioner.up(build_spec(stack_name, size="minimal"), echo=say)
        else:
            stack = provisioner.load(stack_name)
            if stack.status != "running" or stack.document.kafka is None:
                raise HarnessError(
                    f"stack {stack_name!r} is {stack.status} or has no Kafka; bring one up "
                    "(`harness up --name NAME`) or pass --up"
                )
        try:
            report = run_load_test(
                stack, users=users, spawn_rate=spawn_rate, seconds=seconds, compare=compare,
                log=say, profile=profile.value, workers=workers, hit_ratio=hit_ratio,
            )  # fmt: skip
        finally:
            if bring_up:
                say(f"taking down {stack_name}")
                provisioner.down(stack_name)
                shutil.rmtree(stack.dir, ignore_errors=True)
    except _LOAD_ERRORS as exc:
        raise fail("harness", str(exc)) from None
    written = write_report(report, out_dir)
    if as_json:
        emit_json({**report, "report": str(written)})
    else:
        say(str(written))
    if report["locust"]["failures"]:
        raise typer.Exit(1)
