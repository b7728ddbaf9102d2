"""The shell both command-line tools share: version, completion, JSON, errors.

``backbone`` and ``harness`` are Typer apps built by :func:`make_app`, so both
answer ``--version``, offer shell completion (``--install-completion``), print
machine-readable output the same way (:func:`emit_json`) and turn a failure the
user can act on into one line on stderr with exit code 2 (:func:`user_errors`).
Only Typer's public API is used: ``typer.TyperException`` is the base of the
usage errors Typer raises, and its ``exit_code``/``format_message`` are public.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from backbone.logs import LogFormat, LogLevel, configure_logging
from backbone.version import DISTRIBUTION, package_version

__all__ = [
    "DISTRIBUTION",
    "emit_json",
    "fail",
    "make_app",
    "package_version",
    "run_app",
    "user_errors",
]

F = TypeVar("F", bound=Callable[..., Any])
_err = Console(stderr=True, highlight=False)


def _show_version(ctx: typer.Context, value: bool) -> None:
    if value:
        print(f"{ctx.find_root().info_name} {package_version()}")
        raise typer.Exit(0)


def make_app(name: str, help: str, *, log_level: LogLevel = LogLevel.info) -> typer.Typer:
    """A Typer app with ``--version``, ``--log-level``/``--log-format`` (logging set up
    once, secrets redacted: :mod:`backbone.logs`), shell completion and no pretty
    tracebacks. ``log_level`` is the tool's default threshold."""
    default_level = log_level
    app = typer.Typer(
        name=name,
        help=help,
        no_args_is_help=True,
        add_completion=True,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root(
        version: Annotated[
            bool,
            typer.Option(
                "--version",
                help="Print the version and exit.",
                callback=_show_version,
                is_eager=True,
            ),
        ] = False,
        log_level: Annotated[
            LogLevel, typer.Option("--log-level", help="Log threshold.")
        ] = default_level,
        log_format: Annotated[
            LogFormat, typer.Option("--log-format", help="text, or json (one object a line).")
        ] = LogFormat.text,
    ) -> None:
        """Root options shared by every command."""
        configure_logging(log_level, log_format)

    _root.__doc__ = help
    return app


def _message(exc: BaseException) -> str:
    # A KeyError's str() is the repr of its key; its first argument is the message.
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


def fail(prog: str, message: str) -> typer.Exit:
    """Print ``PROG: error: MESSAGE`` on stderr (first line bold, the rest as is) and
    return the exit to raise, code 2."""
    first, _, rest = message.partition("\n")
    _err.print(f"[bold red]{prog}: error:[/] {first}", soft_wrap=True, markup=True)
    if rest:
        _err.print(rest, markup=False, soft_wrap=True)
    return typer.Exit(2)


def user_errors(prog: str, errors: tuple[type[BaseException], ...]) -> Callable[[F], F]:
    """Decorator: an exception of ``errors`` becomes :func:`fail` (one message, exit 2)."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except errors as exc:
                raise fail(prog, _message(exc)) from None

        return wrapper  # type: ignore[return-value]

    return decorate


def run_app(
    app: typer.Typer,
    prog: str,
    argv: list[str] | None = None,
    *,
    user_errors: tuple[type[BaseException], ...] = (),
) -> int:
    """Run ``app``: usage errors and ``user_errors`` become one message and exit code 2
    (Typer's own codes otherwise); returns the exit code instead of calling ``sys.exit``."""
    command = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else argv
    try:
        rv = command.main(args, prog_name=prog, standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        print(f"{prog}: aborted", file=sys.stderr)
        return 130
    except typer.TyperException as exc:
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else prog
        message = " ".join(str(exc.format_message()).split()).rstrip(".")
        if not message and ctx is not None:  # a group called with no arguments
            print(ctx.get_help(), file=sys.stderr)
        else:
            print(f"{where}: {message}; run `{where} --help` for the options", file=sys.stderr)
        return 2
    except user_errors as exc:
        return int(fail(prog, _message(exc)).exit_code)
    return rv if isinstance(rv, int) else 0


def emit_json(data: Any) -> None:
    """One JSON document on stdout (the ``--json`` output of every command)."""
    print(json.dumps(data, indent=2, sort_keys=True, default=str))
