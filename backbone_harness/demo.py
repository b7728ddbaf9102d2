"""``make demo``: the main job, end to end, on this machine.

1. Tier 0 (bootstrap): a stack with no services; the backbone ingests synthetic
   bars into embedded DuckDB through the in-memory cache and in-process bus.
2. The tier toggle: the institutional stack's outputs document makes
   ``institutional`` the default; the validation hooks run; a document pointing
   at a dead endpoint is refused with every failing check named.
3. Tier 1 (institutional): a local stack of real Redis, Kafka and PostgreSQL
   processes (plus Prometheus and exporters); the same bars go
   generate → Kafka → consumer → PostgreSQL → Redis → event bus.
4. Telemetry: the backbone serves ``/metrics``; the stack's Prometheus scrapes it.
5. A report of what ran and where the data is; then every stack goes down.

Every stack is torn down in ``finally``, whatever failed.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain
from pathlib import Path

from rich.console import Console
from rich.table import Table

from backbone.bars import Bar, synthetic_bars
from backbone.connections import ConnectionsDocument, HostPort, dump_document, parse_document
from backbone.runtime import Backbone, IngestResult
from backbone.stream.bridge import BUS_TOPIC_INTRADAY, BarsEvent
from backbone.telemetry import serve_metrics
from backbone.tiers import TierValidationError, resolve_tier, switch_to_institutional
from backbone_harness import observe
from backbone_harness.errors import USER_ERRORS
from backbone_infra.spec import Size, build_spec
from backbone_infra.targets.local import provisioner

__all__ = ["main"]

#: What ends the demo with exit code 2 and a message, not a traceback.
_DEMO_ERRORS: tuple[type[Exception], ...] = (*USER_ERRORS, TierValidationError)

SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD")
DAILY_BARS = 500
INTRADAY_BARS = 2_500


def _bars() -> Iterator[Bar]:
    """Deterministic synthetic FX bars plus a few hostile ones for the dead-letter path."""
    good = chain(
        synthetic_bars(SYMBOLS, "1d", DAILY_BARS, seed=7),
        synthetic_bars(SYMBOLS, "1m", INTRADAY_BARS, seed=7),
    )
    ts = datetime(2024, 6, 3, tzinfo=UTC)
    hostile = [
        Bar("EURUSD", "1m", ts, float("nan"), 1.1, 1.0, 1.05, 10, "synthetic"),
        Bar("EURUSD", "1m", ts + timedelta(minutes=1), 1.05, 1.1, 1.0, 1.05, -5, "synthetic"),
        Bar("GBPUSD", "1m", ts, 1.25, 1.2, 1.3, 1.25, 10, "synthetic"),
        Bar("GBPUSD", "7m", ts, 1.25, 1.3, 1.2, 1.25, 10, "synthetic"),
    ]
    return chain(good, hostile)


@dataclass
class DemoReport:
    started: float = field(default_factory=time.time)
    rows: list[tuple[str, str]] = field(default_factory=list)
    ingests: dict[str, IngestResult] = field(default_factory=dict)
    places: list[tuple[str, str]] = field(default_factory=list)

    def add(self, what: str, result: str) -> None:
        self.rows.append((what, result))


def _counts(result: IngestResult) -> str:
    return (
        f"{result.records_in} in = {result.stored} stored + {result.dead_lettered} dead-lettered"
        f" + {result.duplicates} duplicates + {result.corrections} corrections"
        f" + {result.conflicts} conflicts ({result.bars_per_second:,.0f} bars/s)"
    )


def _delivered(events: list[BarsEvent]) -> str:
    bars = sum(len(event.bars) for event in events)
    return f"{bars} intraday bars reached a subscriber in {len(events)} batch event(s)"


def _run_tier0(console: Console, report: DemoReport, root: Path, name: str) -> None:
    console.rule("[bold]Tier 0 — bootstrap: DuckDB, in-memory cache, in-process bus")
    stack = provisioner.up(build_spec(name, tier="bootstrap"), root=root)
    doc = stack.document
    assert doc.duckdb is not None
    received: list[BarsEvent] = []
    with Backbone.open(tier="bootstrap", outputs=stack.outputs_path) as bb:
        bb.bus.subscribe(BUS_TOPIC_INTRADAY, received.append)
        result = bb.ingest(_bars())
        first = bb.latest("EURUSD", "1m")
        again = bb.latest("EURUSD", "1m")
        stats = bb.cache.stats()
    report.ingests["bootstrap"] = result
    report.add("Tier 0 ingest", _counts(result))
    report.add("Tier 0 cache", f"latest EURUSD 1m twice: {stats.hits} hit / {stats.misses} miss")
    report.add("Tier 0 bus", _delivered(received))
    report.places.append(("Tier 0 bars (DuckDB)", doc.duckdb.path))
    assert first == again, "the cached bar must equal the stored one"
    console.print(result.as_dict())


def _dead_endpoint_copy(doc: ConnectionsDocument) -> ConnectionsDocument:
    """The same document with Kafka pointed at a port nothing listens on."""
    raw = dump_document(doc, reveal_secrets=True)
    raw["kafka"]["bootstrap_servers"] = [str(HostPort(host="127.0.0.1", port=9))]
    return parse_document(raw)


def _run_toggle(console: Console, report: DemoReport, doc: ConnectionsDocument) -> None:
    console.rule("[bold]Tier toggle — validation hooks")
    env = {k: v for k, v in os.environ.items() if k != "BACKBONE_TIER"}
    tier = resolve_tier(None, env, doc)
    report.add("Tier resolved from the outputs document", tier)
    checks = switch_to_institutional(doc)
    for check in checks:
        mark = "[green]✓[/green]" if check.ok else "[yellow]~[/yellow]"
        console.print(f"  {mark} {check}")
    report.add(
        "Validation hooks",
        ", ".join(f"{c.service} {'ok' if c.ok else 'degraded'}" for c in checks),
    )
    try:
        switch_to_institutional(_dead_endpoint_copy(doc), timeout=2.0)
    except TierValidationError as refused:
        console.print(f"  [yellow]refused as expected:[/yellow] {refused}")
        report.add("Switch with Kafka unreachable", "refused, naming the failing check")
    else:
        raise RuntimeError("the toggle accepted a document whose Kafka is unreachable")


def _run_tier1(console: Console, report: DemoReport, root: Path, name: str, size: Size) -> None:
    console.rule(f"[bold]Tier 1 — institutional: a local {size} stack of real services")
    stack = provisioner.up(build_spec(name, size=size), root=root, echo=console.print)
    for service, seconds in stack.timings.items():
        report.add(f"ready: {service}", f"{seconds:.1f} s")
    doc = stack.document
    _run_toggle(console, report, doc)

    console.rule("[bold]Tier 1 ingest — generate → Kafka → consumer → PostgreSQL → Redis → bus")
    monitoring = doc.monitoring
    metrics_port = monitoring.backbone_metrics_port if monitoring else None
    received: list[BarsEvent] = []
    with Backbone.open(tier="institutional", outputs=stack.outputs_path) as bb:
        server = serve_metrics(bb.telemetry.registry, metrics_port or 0)
        try:
            bb.bus.subscribe(BUS_TOPIC_INTRADAY, received.append)
            result = bb.ingest(_bars())
            bb.latest("EURUSD", "1m")
            bb.latest("EURUSD", "1m")
            health = bb.health(SYMBOLS)
            logins = _logins(bb)
            _show_prometheus(console, report, doc)
        finally:
            server.close()
    report.ingests["institutional"] = result
    report.add("Tier 1 ingest", _counts(result))
    cache = health["cache"]
    report.add("Tier 1 logins (one principal per job)", logins)
    report.add("Tier 1 cache (Redis)", f"hits {cache['hits']}, misses {cache['misses']}")
    report.add("Tier 1 bus bridge", _delivered(received))
    lag = health.get("consumer", {}).get("lag", {})
    report.add("Tier 1 consumer lag after drain", json.dumps(lag) if lag else "0")
    assert doc.timescale is not None and doc.kafka is not None
    report.places += [
        ("outputs document (0600)", str(stack.outputs_path)),
        ("service logs", str(stack.dir / "logs")),
        ("PostgreSQL bars", f"{doc.timescale.hosts[0]} db={doc.timescale.dbname} table=bars"),
        ("Kafka topics", ", ".join(t.name for t in doc.kafka.topics.values())),
    ]


#: How long the demo waits for the stack's Prometheus to hold its three figures.
FIGURES_TIMEOUT_S = 60.0


def _missing_figures(health: observe.StackHealth) -> list[str]:
    missing = []
    if not health.freshness:
        missing.append("ingest freshness (backbone_ingest_freshness_seconds)")
    if not health.cache_hit_ratio:
        missing.append("Redis hit ratio (backbone_cache_hits_total / misses)")
    if not health.consumer_lag:
        missing.append("consumer lag (backbone_broker_consumer_lag, the kafka-lag exporter)")
    return missing


def _show_prometheus(console: Console, report: DemoReport, doc: ConnectionsDocument) -> None:
    """Wait (bounded) until the stack's Prometheus holds ingest freshness, the Redis
    hit ratio and the broker-side consumer lag, then print them from there."""
    if doc.monitoring is None or not doc.monitoring.prometheus_url:
        report.add("Prometheus", "not part of this stack")
        return
    url = doc.monitoring.prometheus_url
    deadline = time.monotonic() + FIGURES_TIMEOUT_S
    health = observe.stack_health(url)
    while _missing_figures(health) and time.monotonic() < deadline:
        time.sleep(1)
        health = observe.stack_health(url)
    targets = observe.targets(url)
    healthy = sum(1 for t in targets if t.up)
    report.add("Prometheus targets up", f"{healthy}/{len(targets)} at {url}")
    console.rule("[bold]From Prometheus: freshness, Redis hit ratio, consumer lag (broker-side)")
    console.print(observe.format_stack_health(health))
    missing = _missing_figures(health)
    if missing:
        console.print(
            f"[yellow]not in Prometheus after {FIGURES_TIMEOUT_S:.0f} s:[/yellow] "
            + "; ".join(missing)
            + f". Check its targets at {url}/targets (job backbone must be up while the "
            "demo ingests, job kafka-lag always)."
        )
        report.add("Figures from Prometheus", "missing: " + "; ".join(missing))
    else:
        fresh = ", ".join(
            f"{s} {tf} {secs:,.0f} s" for (s, tf), secs in sorted(health.freshness.items())
        )
        ratio = ", ".join(
            f"{ns}/{b} {r:.1%}" for (ns, b), r in sorted(health.cache_hit_ratio.items())
        )
        lag = ", ".join(f"{t}/{g} {n:.0f}" for (t, g), n in sorted(health.consumer_lag.items()))
        report.add("Ingest freshness (Prometheus)", fresh)
        report.add("Redis hit ratio (Prometheus)", ratio)
        report.add("Consumer lag, broker-side (Prometheus)", lag)
    report.places.append(("Prometheus", url))


def _print_report(console: Console, report: DemoReport, *, kept: bool) -> None:
    console.rule("[bold]Report")
    table = Table(title="What ran", show_lines=False)
    table.add_column("step")
    table.add_column("result")
    for what, result in report.rows:
        table.add_row(what, result)
    console.print(table)
    title = (
        "Where the data is (stacks stopped, directories kept)"
        if kept
        else "Where the data was (stacks stopped and removed; DEMO_ARGS=--keep keeps them)"
    )
    places = Table(title=title)
    places.add_column("what")
    places.add_column("where")
    for what, where in report.places:
        places.add_row(what, where)
    console.print(places)
    console.print(
        f"machine: {os.cpu_count()} cores, {platform.platform()}, Python "
        f"{platform.python_version()}; took {time.time() - report.started:.1f} s"
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    size: Size = "ha" if "--ha" in args else "minimal"
    keep = "--keep" in args  # keep the stacks' directories (configs, logs, data) to look at
    console = Console()
    root = Path(os.environ.get("HARNESS_STACKS_DIR", Path.cwd() / ".stacks"))
    base = f"demo-{secrets.token_hex(3)}"
    names = [f"{base}-t0", base]
    report = DemoReport()
    try:
        _run_tier0(console, report, root, names[0])
        _run_tier1(console, report, root, names[1], size)
    except _DEMO_ERRORS as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        return 2
    finally:
        for name in names:
            provisioner.down(name, root=root)
            if not keep:
                shutil.rmtree(root / name, ignore_errors=True)
    _print_report(console, report, kept=keep)
    for tier, result in report.ingests.items():
        if not result.reconciles:
            console.print(f"[red]{tier}: counts do not reconcile[/red]")
            return 1
    return 0


def _logins(bb: Backbone) -> str:
    """Who each Tier 1 client logged in as (user names only, never a password)."""
    if bb.logins is None:
        return "-"
    users = {
        "producer": bb.logins.producer and bb.logins.producer.username,
        "consumer": bb.logins.consumer and bb.logins.consumer.username,
        "store": bb.logins.store and bb.logins.store.user,
        "cache": bb.logins.cache and bb.logins.cache.username,
    }
    return ", ".join(f"{client} {user}" for client, user in users.items() if user)


if __name__ == "__main__":
    raise SystemExit(main())
