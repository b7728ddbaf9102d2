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

from backbone.bars import FX_SYMBOLS, TIMEFRAMES, Bar, synthetic_bars
from backbone.clikit import fail, make_app, run_app
from backbone.connections import ConnectionsError
from backbone.csvfile import CsvBarFile, CsvHeaderError
from backbone.deadletter import DeadLetter
from backbone.job_logins import JobScopeError
from backbone.settings import SettingsError
from backbone.store.base import StoreError
from backbone.stream.producer import ProduceError
from backbone.tiers import TierError, TierValidationError

__all__ = ["BadInput", "app", "main"]


class BadInput(Exception):
    """A command-line value the backbone cannot use; ``str()`` says what to do."""


#: Failures the user can act on: one line (the message), exit code 2.
_USER_ERRORS: tuple[type[BaseException], ...] = (
    BadInput,
    CsvHeaderError,
    ConnectionsError,
    SettingsError,
    TierError,
    TierValidationError,
    JobScopeError,
    StoreError,
    ProduceError,
    KafkaError,
    TimeoutError,
    FileNotFoundError,
    PermissionError,
)


app = make_app(
    "backbone", "The market-data backbone runtime: ingest bars, check health, replay, metrics."
)
_out = Console()
_err = Console(stderr=True)


def _fail(message: str) -> None:
    raise fail("backbone", message)


# --- shared option parsing --------------------------------------------------------

TierOpt = Annotated[
    str | None,
    typer.Option(
        "--tier",
        help="bootstrap | institutional (default: BACKBONE_TIER, DATA_BACKBONE_MODE, "
        "config.yaml's data_backbone_mode, credentials, the document)",
    ),
]
OutputsOpt = Annotated[
    Path | None,
    typer.Option("--outputs", help="connections document (default: BACKBONE_OUTPUTS)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]
RequireCacheOpt = Annotated[
    bool | None,
    typer.Option(
        "--require-cache/--allow-cache-degraded",
        help="refuse the institutional tier when Redis does not answer (default: the "
        "require_cache setting; otherwise start cache-degraded, reads from the store)",
        show_default=False,
    ),
]
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


def _open(tier: str | None, outputs: Path | None, require_cache: bool | None = None) -> Any:
    from backbone.runtime import Backbone

    if outputs is not None and not outputs.is_file():
        raise BadInput(
            f"--outputs {outputs} does not exist; bring a stack up with `harness up` "
            "(it writes .stacks/NAME/outputs.json) or fix the path"
        )
    return Backbone.open(tier=tier, outputs=outputs, require_cache=require_cache)


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
    require_cache: RequireCacheOpt = None,
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
    csv_file: CsvBarFile | None = None
    if csv is not None:
        if not csv.is_file():
            raise BadInput(f"--csv {csv} does not exist or is not a file; check the path")
        # The whole-file checks run before anything opens or any row is read: a
        # wrong header raises CsvHeaderError here (exit 2) and nothing is stored.
        csv_file = CsvBarFile(csv)
        total, source = _count_csv(csv), f"csv:{csv}"
    else:
        total, source = bars * len(names), f"synthetic (deterministic, seed {seed})"
        items = synthetic_bars(names, timeframe, bars, seed=seed)
    with (
        _open(tier, outputs, require_cache) as bb,
        _progress(not as_json and total >= 5_000) as progress,
    ):
        if csv_file is not None:
            csv_file.contract = bb.contract  # the configured rules, with line numbers
            if csv_file.empty is not None:
                print(
                    f"backbone: {csv} is {csv_file.empty}; it holds no bars, nothing to ingest",
                    file=sys.stderr,
                )
            items = iter(csv_file)
        task = progress.add_task(f"ingest → {bb.tier}", total=total)
        try:
            result = bb.ingest(items, progress=lambda n: progress.advance(task, n))
        finally:
            if csv_file is not None:
                csv_file.close()
    document = {"source": source, **result.as_dict()}
    rows = [(k, v) for k, v in document.items()]
    _emit(as_json, document, _kv_table(f"ingest ({result.tier}, {source})", rows))


# --- status ------------------------------------------------------------------------


@app.command()
def status(
    tier: TierOpt = None,
    outputs: OutputsOpt = None,
    symbols: SymbolsOpt = None,
    require_cache: RequireCacheOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Health of the active tier: freshness per series, store, cache and consumer state."""
    names = parse_symbols(symbols, FX_SYMBOLS)
    with _open(tier, outputs, require_cache) as bb:
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
                ("dead letters", report.get("dead_letters", {})),
                ("cache", _cache_line(report["cache"])),
                ("cache counters", _cache_counters(report["cache"])),
                *[
                    (name, f"degraded ({d['degraded_reason']})")
                    for name, d in report.get("degraded", {}).items()
                    if name != "cache"
                ],
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


def _cache_line(cache: dict[str, Any]) -> str:
    """``attached`` or ``degraded (since …, reason …)``."""
    if cache.get("state") != "degraded":
        return str(cache.get("state", "attached"))
    return f"degraded (since {cache['degraded_since']}, reason {cache['degraded_reason']})"


def _cache_counters(cache: dict[str, Any]) -> str:
    keys = ("backing", "hits", "misses", "hit_ratio", "size", "evictions")
    return ", ".join(f"{k} {cache[k]}" for k in keys if k in cache)


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
                progress=lambda n: progress.advance(task, n), contract=bb.contract,
                # The writer sends; the consumer's login reads what the topics hold.
                scan=bb.consumer.kafka if bb.consumer is not None else None,
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
    heartbeat. Runs until SIGTERM or Ctrl-C (or a --max-records/--timeout bound).
    SIGHUP re-reads the outputs document's credentials (after a rotation)."""
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
            # SIGHUP: re-read the outputs document's credentials (after a rotation).
            previous_hup = signal.signal(signal.SIGHUP, lambda *_: daemon.request_reload())
            try:
                daemon.run(max_records=max_records, timeout_s=timeout, idle_timeout_s=idle_timeout)
            except KeyboardInterrupt:
                pass
            finally:
                signal.signal(signal.SIGTERM, previous)
                signal.signal(signal.SIGHUP, previous_hup)
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


# --- dead-letters ------------------------------------------------------------------

dead_letters_app = typer.Typer(
    help="List, show and re-submit dead letters where the tier keeps them "
    "(Tier 0: the store's table; Tier 1: the Kafka dead-letter topic and the store's table).",
    no_args_is_help=True,
)
app.add_typer(dead_letters_app, name="dead-letters")


def _queues(bb: Any) -> list[Any]:
    from backbone.deadletter_queue import queues_for

    return queues_for(bb)


@dead_letters_app.command("list")
def dead_letters_list(
    tier: TierOpt = None,
    outputs: OutputsOpt = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="only this reason code, e.g. ts_in_future")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="newest entries to list")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Counts by reason code and origin, per place, and the latest entries."""
    from backbone.contract import REASON_CODES

    if reason is not None and reason not in REASON_CODES and reason != "unclassified":
        raise BadInput(f"--reason {reason!r} is not a reason code; see docs/data-contract.md")
    if limit < 0:
        raise BadInput(f"--limit must be >= 0 (got {limit})")
    places: list[dict[str, Any]] = []
    with _open(tier, outputs) as bb:
        for queue in _queues(bb):
            groups: dict[tuple[str, str], int] = {}
            latest: list[dict[str, Any]] = []
            for entry in queue.entries():
                if reason is not None and entry.code != reason:
                    continue
                key = (entry.code, entry.origin_kind)
                groups[key] = groups.get(key, 0) + 1
                latest = [*latest[-(limit - 1) :], entry.summary()] if limit else []
            places.append(
                {
                    "where": queue.where,
                    "count": sum(groups.values()),
                    "by_reason": [
                        {"code": c, "origin": o, "count": n}
                        for (c, o), n in sorted(groups.items(), key=lambda kv: -kv[1])
                    ],
                    "latest": latest,
                }
            )
    document = {"tier": bb.tier, "places": places}
    if as_json:
        _emit(True, document)
        return
    for place in places:
        table = Table(title=f"dead letters in {place['where']}: {place['count']}")
        for col in ("code", "origin", "count"):
            table.add_column(col)
        for row in place["by_reason"]:
            table.add_row(row["code"], row["origin"], str(row["count"]))
        _out.print(table)
        latest_table = Table(title="latest")
        for col in ("id", "received", "code", "origin", "replayed"):
            latest_table.add_column(col)
        for e in place["latest"]:
            latest_table.add_row(
                e["id"], e["received_at"] or "-", e["code"], e["origin"], e["replayed_at"] or "-"
            )
        _out.print(latest_table)


def _find(bb: Any, ids: Sequence[str]) -> list[Any]:
    """The entries with ``ids`` (row ids in the store, ``P@OFFSET`` in Kafka), in order."""
    found: dict[str, Any] = {}
    for queue in _queues(bb):
        kafka = queue.where.startswith("kafka:")
        mine = [i for i in ids if ("@" in i) == kafka]
        if mine:
            try:
                entries = queue.get(mine)
            except ValueError as exc:
                raise BadInput(str(exc)) from None
            found.update({(e.id): e for e in entries})
    missing = [i for i in ids if i not in found]
    if missing:
        raise BadInput(
            f"no dead letter with id {', '.join(missing)} on the {bb.tier} tier; "
            "list them with `backbone dead-letters list`"
        )
    return [found[i] for i in ids]


@dead_letters_app.command("show")
def dead_letters_show(
    dead_letter_id: Annotated[str, typer.Argument(metavar="ID", help="row id or PARTITION@OFFSET")],
    tier: TierOpt = None,
    outputs: OutputsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One dead letter with its reason and its raw payload."""
    with _open(tier, outputs) as bb:
        (entry,) = _find(bb, [dead_letter_id])
    document = {**entry.summary(), "payload": entry.payload.decode("utf-8", "backslashreplace")}
    if as_json:
        _emit(True, document)
        return
    _out.print(_kv_table(f"dead letter {entry.id} ({entry.where})", document.items()))


@dead_letters_app.command("replay")
def dead_letters_replay(
    ids: Annotated[list[str] | None, typer.Argument(metavar="[ID]...")] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="every not-yet-replayed one with this code")
    ] = None,
    tier: TierOpt = None,
    outputs: OutputsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-submit dead letters after a fix (a config change, an upgraded consumer):
    their bars go through ingest and the contract again; still-bad ones come back
    as new dead letters with today's reason."""
    from backbone.deadletter_queue import bars_from_payload

    if not ids and reason is None:
        raise BadInput("name the dead letters: IDs (from `backbone dead-letters list`) or --reason")
    with _open(tier, outputs) as bb:
        if ids:
            entries = _find(bb, ids)
        else:
            entries = [
                e
                for q in _queues(bb)
                for e in q.entries()
                if e.code == reason and e.replayed_at is None
            ]
        items: list[Bar | DeadLetter] = []
        unreadable: list[str] = []
        for entry in entries:
            got = bars_from_payload(entry)
            if isinstance(got, DeadLetter):
                unreadable.append(f"{entry.id}: {got.payload.decode()}")
            else:
                items.extend(got)
        result = bb.ingest(items)
        for queue in _queues(bb):
            kafka = queue.where.startswith("kafka:")
            queue.mark_replayed([e.id for e in entries if ("@" in e.id) == kafka])
    document = {
        "replayed": [e.id for e in entries],
        "not_replayable": unreadable,
        **result.as_dict(),
    }
    _emit(as_json, document, _kv_table("dead-letters replay", document.items()))


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
    """Entry point for the ``backbone`` console script and ``python -m backbone``."""
    sys.exit(run_app(app, "backbone", user_errors=_USER_ERRORS))
