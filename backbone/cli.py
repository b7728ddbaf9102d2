"""``backbone``: ingest, status, replay and serve-metrics from the command line.

Every bad input ends the same way: one line on stderr naming what was wrong and
what to do, and exit code 2. ``--json`` prints one machine-readable document on
stdout (and nothing else there), for scripts.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from kafka.errors import KafkaError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

# Typer 0.29 vendors click; its usage errors are these classes, not click's.
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from backbone.bars import FX_SYMBOLS, TIMEFRAMES, Bar, read_csv_bars, synthetic_bars
from backbone.connections import ConnectionsError
from backbone.deadletter import DeadLetter
from backbone.logs import LogFormat, LogLevel, configure_logging
from backbone.store.base import StoreError
from backbone.stream.producer import ProduceError
from backbone.tiers import TierError, TierValidationError

__all__ = ["BadInput", "app", "main"]


class BadInput(Exception):
    """A command-line value the backbone cannot use; ``str()`` says what to do."""


#: Failures the user can act on: one line (the message), exit code 2.
_USER_ERRORS: tuple[type[BaseException], ...] = (
    BadInput,
    ConnectionsError,
    TierError,
    TierValidationError,
    StoreError,
    ProduceError,
    KafkaError,
    TimeoutError,
    FileNotFoundError,
    PermissionError,
)


class _App(typer.Typer):
    """Typer app whose usage errors are one line and exit code 2."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        argv = list(args[0]) if args else sys.argv[1:]
        command = typer.main.get_command(self)
        try:
            rv = command.main(argv, prog_name="backbone", standalone_mode=False)
        except NoArgsIsHelpError as exc:
            if exc.ctx is not None:
                _err.print(exc.ctx.get_help())
            sys.exit(2)
        except UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "backbone"
            message = " ".join(exc.format_message().split()).rstrip(".")
            print(f"{where}: {message}; run `{where} --help` for the options", file=sys.stderr)
            sys.exit(2)
        except ClickException as exc:
            _fail(" ".join(exc.format_message().split()))
        except (typer.Abort, KeyboardInterrupt):
            _err.print("aborted")
            sys.exit(130)
        except _USER_ERRORS as exc:
            _fail(str(exc))
        sys.exit(rv if isinstance(rv, int) else 0)


app = _App(
    name="backbone",
    help="The market-data backbone runtime: ingest bars, check health, replay, metrics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_out = Console()
_err = Console(stderr=True)


@app.callback()
def _logging(
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="log threshold")] = (
        LogLevel.info
    ),
    log_format: Annotated[
        LogFormat, typer.Option("--log-format", help="text, or json (one object a line)")
    ] = LogFormat.text,
) -> None:
    """The market-data backbone runtime: ingest bars, check health, replay, metrics."""
    configure_logging(log_level, log_format)


def _fail(message: str) -> None:
    print(f"backbone: {message}", file=sys.stderr)
    sys.exit(2)


# --- shared option parsing --------------------------------------------------------

TierOpt = Annotated[
    str | None,
    typer.Option("--tier", help="bootstrap | institutional (default: BACKBONE_TIER, the document)"),
]
OutputsOpt = Annotated[
    Path | None,
    typer.Option("--outputs", help="connections document (default: BACKBONE_OUTPUTS)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]
SymbolsOpt = Annotated[
    str | None, typer.Option("--symbols", help="comma-separated, e.g. EURUSD,GBPUSD")
]


def parse_symbols(raw: str | None, default: Sequence[str] | None) -> list[str] | None:
    """``EURUSD,GBPUSD`` → ``["EURUSD", "GBPUSD"]``; ``None`` gives ``default``."""
    if raw is None:
        return list(default) if default is not None else None
    names = [s.strip() for s in raw.split(",")]
    if not all(names):
        raise BadInput(f"--symbols {raw!r} has an empty name; pass e.g. --symbols EURUSD,GBPUSD")
    bad = [s for s in names if not s.replace(".", "").replace("-", "").isalnum()]
    if bad:
        raise BadInput(
            f"--symbols: {bad[0]!r} is not a symbol (letters and digits); e.g. EURUSD,GBPUSD"
        )
    return list(dict.fromkeys(names))


def parse_time(raw: str, flag: str) -> datetime:
    """ISO-8601 date or time; without an offset it is UTC."""
    try:
        ts = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise BadInput(
            f"{flag} {raw!r} is not an ISO-8601 time; use e.g. 2024-01-01 or 2024-01-01T09:30Z"
        ) from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _open(tier: str | None, outputs: Path | None) -> Any:
    from backbone.runtime import Backbone

    if outputs is not None and not outputs.is_file():
        raise BadInput(
            f"--outputs {outputs} does not exist; bring a stack up with `harness up` "
            "(it writes .stacks/NAME/outputs.json) or fix the path"
        )
    return Backbone.open(tier=tier, outputs=outputs)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} bars"),
        TimeRemainingColumn(),
        console=_err,
        disable=not enabled,
        transient=True,
    )


def _emit(as_json: bool, document: dict[str, Any], table: Table | None = None) -> None:
    if as_json:
        print(json.dumps(document, indent=2, default=str))
    elif table is not None:
        _out.print(table)


def _kv_table(title: str, rows: Iterable[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, str(value))
    return table


# --- ingest ------------------------------------------------------------------------


def _count_csv(path: Path) -> int:
    with path.open("rb") as fh:
        return max(0, sum(1 for line in fh if line.strip()) - 1)


@app.command()
def ingest(
    tier: TierOpt = None,
    outputs: OutputsOpt = None,
    symbols: SymbolsOpt = None,
    bars: Annotated[int, typer.Option("--bars", help="synthetic bars per symbol")] = 1000,
    timeframe: Annotated[str, typer.Option("--timeframe", help="1d, 1h, 15m, 5m or 1m")] = "1m",
    csv: Annotated[Path | None, typer.Option("--csv", help="ingest this CSV instead")] = None,
    seed: Annotated[int, typer.Option("--seed", help="synthetic generator seed")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Ingest deterministic synthetic FX bars (labelled synthetic) or a CSV file."""
    if timeframe not in TIMEFRAMES:
        raise BadInput(f"--timeframe {timeframe!r} is unknown; use one of {sorted(TIMEFRAMES)}")
    if bars < 1:
        raise BadInput(f"--bars must be at least 1 (got {bars})")
    names = parse_symbols(symbols, FX_SYMBOLS[:4])
    assert names is not None
    items: Iterator[Bar | DeadLetter]
    if csv is not None:
        if not csv.is_file():
            raise BadInput(f"--csv {csv} does not exist or is not a file; check the path")
        total, source = _count_csv(csv), f"csv:{csv}"
        items = iter(read_csv_bars(csv))
    else:
        total, source = bars * len(names), f"synthetic (deterministic, seed {seed})"
        items = synthetic_bars(names, timeframe, bars, seed=seed)
    with _open(tier, outputs) as bb, _progress(not as_json and total >= 5_000) as progress:
        task = progress.add_task(f"ingest → {bb.tier}", total=total)
        result = bb.ingest(items, progress=lambda n: progress.advance(task, n))
    document = {"source": source, **result.as_dict()}
    rows = [(k, v) for k, v in document.items()]
    _emit(as_json, document, _kv_table(f"ingest ({result.tier}, {source})", rows))


# --- status ------------------------------------------------------------------------


@app.command()
def status(
    tier: TierOpt = None,
    outputs: OutputsOpt = None,
    symbols: SymbolsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Health of the active tier: freshness per series, store, cache and consumer state."""
    names = parse_symbols(symbols, FX_SYMBOLS)
    with _open(tier, outputs) as bb:
        report = bb.health(symbols=names, timeframes=sorted(TIMEFRAMES))
    if as_json:
        _emit(True, report)
        return
    _out.print(
        _kv_table(
            f"backbone status ({report['tier']})",
            [
                ("stack", report.get("stack") or "-"),
                ("streaming", "on" if report["streaming_enabled"] else "off"),
                ("store", report["store"]),
                ("cache", report["cache"]),
                *([("consumer", report["consumer"])] if "consumer" in report else []),
            ],
        )
    )
    table = Table(title="freshness per series")
    for col in ("symbol", "timeframe", "latest bar", "freshness (s)"):
        table.add_column(col)
    for s in report["series"]:
        table.add_row(s["symbol"], s["timeframe"], s["latest_ts"], f"{s['freshness_seconds']:,.0f}")
    _out.print(table)


# --- replay ------------------------------------------------------------------------


@app.command()
def replay(
    from_: Annotated[str, typer.Option("--from", help="window start (ISO-8601, inclusive)")],
    to: Annotated[str, typer.Option("--to", help="window end (ISO-8601, exclusive)")],
    symbols: SymbolsOpt = None,
    tier: TierOpt = None,
    outputs: OutputsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Backfill the Kafka topics from the store for a window, skipping bars already there."""
    from backbone.replay import replay as run_replay

    start, end = parse_time(from_, "--from"), parse_time(to, "--to")
    if end <= start:
        raise BadInput(f"--to {to} must be after --from {from_}")
    names = parse_symbols(symbols, None)
    with _open(tier, outputs) as bb:
        if bb.producer is None:
            raise BadInput(
                "replay backfills Kafka topics, which only the institutional tier has; "
                "pass --tier institutional with --outputs (or BACKBONE_OUTPUTS)"
            )
        with _progress(not as_json) as progress:
            task = progress.add_task("replay", total=None)
            result = run_replay(
                bb.store, bb.producer, start, end, names,
                progress=lambda n: progress.advance(task, n),
            )  # fmt: skip
    document = result.as_dict()
    _emit(as_json, document, _kv_table(f"replay {result.run_id}", document.items()))


# --- consume -----------------------------------------------------------------------


@app.command()
def consume(
    outputs: OutputsOpt = None,
    group: Annotated[str, typer.Option("--group", help="consumer group id")] = "backbone-ingest",
    max_records: Annotated[
        int | None, typer.Option("--max-records", help="stop after this many bars/records")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="stop after this many s (default: never)")
    ] = None,
    idle_timeout: Annotated[
        float | None, typer.Option("--idle-timeout", help="stop after this many s without data")
    ] = None,
    start: Annotated[
        str, typer.Option("--start", help="earliest | latest, for a group with no offsets")
    ] = "earliest",
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="serve /metrics here (default: the port the stack's Prometheus scrapes; "
            "-1 serves none)",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run one consumer-group member (Tier 1): Kafka → store → cache → bus, committing
    offsets only after each store commit, serving /metrics and publishing its health
    heartbeat. Runs until SIGTERM or Ctrl-C (or a --max-records/--timeout bound)."""
    if max_records is not None and max_records < 1:
        raise BadInput(f"--max-records must be at least 1 (got {max_records})")
    if timeout is not None and timeout <= 0:
        raise BadInput(f"--timeout must be positive (got {timeout})")
    if start not in ("earliest", "latest"):
        raise BadInput(f"--start {start!r} is unknown; use earliest or latest")
    if metrics_port is not None and not -1 <= metrics_port <= 65535:
        raise BadInput(f"--metrics-port {metrics_port} is not a TCP port; use 0..65535 or -1")
    from backbone.daemon import ConsumerDaemon
    from backbone.runtime import Backbone

    if outputs is not None and not outputs.is_file():
        raise BadInput(f"--outputs {outputs} does not exist; fix the path or run `harness up`")
    with Backbone.open(
        tier="institutional", outputs=outputs, group_id=group, consumer_start=start
    ) as bb:
        port = bb.settings.metrics_port if metrics_port is None else metrics_port
        daemon = ConsumerDaemon(
            bb, metrics_port=None if port < 0 else port, metrics_host=bb.settings.metrics_host
        )
        try:
            daemon.serve()
        except OSError as exc:
            raise BadInput(
                f"cannot serve /metrics on {bb.settings.metrics_host}:{port} ({exc.strerror}); "
                "pass another --metrics-port (or -1 for none)"
            ) from None
        with daemon:
            assert bb.consumer is not None
            assigned = bb.consumer.wait_for_assignment()
            # One line for scripts and tests that wait until the member is ready.
            served = f", metrics {daemon.server.url}" if daemon.server else ""
            print(
                f"consuming: group {group}, {len(assigned)} partitions{served}",
                file=sys.stderr,
                flush=True,
            )
            previous = signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
            try:
                daemon.run(max_records=max_records, timeout_s=timeout, idle_timeout_s=idle_timeout)
            except KeyboardInterrupt:
                pass
            finally:
                signal.signal(signal.SIGTERM, previous)
        # Everything this member moved, including while it waited for its partitions.
        report = {"group": group, **bb.consumer.stats.as_dict()}
    _emit(as_json, report, _kv_table(f"consume ({group})", report.items()))


# --- serve-metrics -----------------------------------------------------------------


@app.command("serve-metrics")
def serve_metrics_command(
    port: Annotated[int, typer.Option("--port", help="0 picks a free port")] = 9464,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    tier: TierOpt = None,
    outputs: OutputsOpt = None,
    symbols: SymbolsOpt = None,
    interval: Annotated[float, typer.Option("--interval", help="health refresh, s")] = 5.0,
    duration: Annotated[
        float | None, typer.Option("--duration", help="stop after this many seconds")
    ] = None,
) -> None:
    """Serve /metrics (freshness, cache, lag, dead letters) until interrupted."""
    from backbone.telemetry import serve_metrics

    if not 0 <= port <= 65535:
        raise BadInput(f"--port {port} is not a TCP port; use 0..65535 (0 picks a free one)")
    if interval <= 0:
        raise BadInput(f"--interval must be positive (got {interval})")
    names = parse_symbols(symbols, FX_SYMBOLS)
    with _open(tier, outputs) as bb:
        try:
            server = serve_metrics(bb.telemetry.registry, port, host=host)
        except OSError as exc:
            raise BadInput(
                f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port"
            ) from None
        with server:
            _err.print(f"serving {server.url} ({bb.tier}); Ctrl-C stops")
            print(server.url, flush=True)
            stop_at = time.monotonic() + duration if duration is not None else None
            try:
                while stop_at is None or time.monotonic() < stop_at:
                    bb.health(symbols=names, timeframes=sorted(TIMEFRAMES))
                    time.sleep(interval)
            except KeyboardInterrupt:
                pass


@app.command("lag-exporter")
def lag_exporter_command(
    port: Annotated[int, typer.Option("--port", help="0 picks a free port")] = 9308,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    outputs: OutputsOpt = None,
    groups: Annotated[
        str | None, typer.Option("--groups", help="comma-separated group ids (default: all)")
    ] = None,
    interval: Annotated[float, typer.Option("--interval", help="measure every N s")] = 5.0,
) -> None:
    """Serve broker-side consumer lag (committed vs. log-end offsets) on /metrics until
    stopped. Kafka settings: --outputs, BACKBONE_OUTPUTS, BACKBONE_CONFIG or BACKBONE_KAFKA__*."""
    from prometheus_client import CollectorRegistry

    from backbone.outputs import OUTPUTS_ENV, load_connections
    from backbone.settings import load_settings
    from backbone.stream.broker_lag import BrokerLagCollector
    from backbone.telemetry import serve_metrics

    if not 0 <= port <= 65535:
        raise BadInput(f"--port {port} is not a TCP port; use 0..65535 (0 picks a free one)")
    if outputs is not None and not outputs.is_file():
        raise BadInput(f"--outputs {outputs} does not exist; fix the path or run `harness up`")
    document = load_connections(outputs) if outputs or os.environ.get(OUTPUTS_ENV) else None
    settings = load_settings(document)
    if settings.kafka is None:
        raise BadInput(
            "no Kafka settings: pass --outputs (a stack's outputs.json), or set "
            "BACKBONE_CONFIG to a config.yaml with a kafka: section"
        )
    if interval <= 0:
        raise BadInput(f"--interval must be positive (got {interval})")
    names = [g.strip() for g in groups.split(",") if g.strip()] if groups else None
    collector = BrokerLagCollector(settings.kafka, groups=names)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        server = serve_metrics(registry, port, host=host)
    except OSError as exc:
        raise BadInput(
            f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port"
        ) from None
    collector.start(interval)
    stopped = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with server:
        print(server.url, flush=True)
        try:
            stopped.wait()
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            collector.close()


def main() -> None:
    """Entry point for ``python -m backbone``."""
    app()
