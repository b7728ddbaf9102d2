"""``harness images`` and ``harness compose``: the project's images and Compose file.

    harness images build [NAME ...]          (build or reuse; progress shown)
    harness compose render --size minimal|ha [--name NAME] [--out DIR]

``compose render`` prints the Compose file's path as its last line. Errors are
one line on stderr with exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from backbone_harness.errors import HarnessError
from backbone_infra.spec import SIZES, build_spec
from backbone_infra.targets.local.state import stacks_root

__all__ = ["compose_app", "images_app"]

images_app = typer.Typer(help="Container images built from images/<service>/Containerfile.")
compose_app = typer.Typer(help="The Docker target's containers as a Compose file.")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True, markup=True)
    return typer.Exit(2)


@images_app.command("build")
def images_build(
    names: Annotated[list[str] | None, typer.Argument(help="Images (default: all).")] = None,
) -> None:
    """Build each image, or reuse it when its content-addressed tag exists."""
    from backbone_harness.containers.engine import no_engine_reason
    from backbone_harness.containers.images import build_all

    reason = no_engine_reason()
    if reason is not None:
        raise _fail(reason)
    try:
        results = build_all(names or None, lambda msg: out.print(msg, markup=False))
    except HarnessError as exc:
        raise _fail(str(exc)) from None
    built = sum(r.built for r in results)
    out.print(f"{len(results)} images ready, {built} built")


@compose_app.command("render")
def compose_render(
    size: Annotated[str, typer.Option(help="minimal | ha")] = "minimal",
    name: Annotated[str, typer.Option("--name", "-n", help="Stack name.")] = "compose",
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder (default: .stacks/compose/NAME).")
    ] = None,
) -> None:
    """Write compose.yaml (and the files it mounts) for an institutional stack."""
    from backbone_harness.containers.compose import render_plan, write_compose

    if size not in SIZES:
        raise _fail(f"unknown --size {size!r}; choose one of: {', '.join(SIZES)}")
    try:
        build_spec(name, size=size)
    except ValidationError:
        raise _fail(
            f"invalid --name {name!r}: use lowercase letters, digits and '-', "
            "at most 39 characters, starting with a letter or digit"
        ) from None
    target = out_dir or stacks_root() / "compose" / name
    path = write_compose(render_plan(name, size), target)
    out.print(
        f"Compose file for stack {name} ({size}); start it with: docker compose -f {path} up",
        soft_wrap=True,
    )
    # The path goes out last and unadorned, so scripts can take `tail -1`.
    print(path, flush=True)
