"""``harness bench perf``: every path of the backbone next to its ceiling, in one run.

One command, one run, one machine (see ``docs/status/performance.md``). Each
figure is reported with the ceiling it is compared with, the ratio, and the
load average at the time, because on a shared machine the absolute rates move
with the neighbours' load while ratios taken seconds apart mostly do not:

* **Producer**: our ``BarProducer`` vs Kafka's ``ProducerPerformance``
  (:mod:`backbone_harness.bench.producer`).
* **Store**: our write path vs raw ``COPY`` into ``bars`` and into an unindexed
  table; bars/s and p99 against batch size (:mod:`backbone_harness.bench.store`).
* **Tier 1 end to end** as a fraction of the store ceiling; latency at a fixed
  rate; bars/s and p99 against consumer count on the ``ha`` stack
  (:mod:`backbone_harness.bench.tier1`).
* **Replay/backfill** vs reading the same snapshot alone.
* **Cache reads**: ``latest()`` vs redis-py GET vs ``redis-benchmark``
  (:mod:`backbone_harness.bench.cache`).
* **Tier 0** end to end, for reference (no services).

The bottleneck of each path comes from a cProfile pass that is separate from
the timed one. ``--quick`` runs every path briefly (the consumer sweep then
runs on the minimal stack); tests use it and check the report's structure only.
The stacks are brought up through the local provisioner and always taken down.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from backbone.bars import synthetic_bars
from backbone.connections import ConnectionsDocument
from backbone.settings import RedisConnectionSettings
from backbone_harness.bench import cache, producer, store, tier1
from backbone_harness.bench.measure import Log, figure, load_average
from backbone_harness.bench.plots import write_plots
from backbone_harness.bench.report import render_markdown
from backbone_harness.bench.tls_cost import keep_tls_section
from backbone_harness.privileged import admin_document
from backbone_infra.spec import build_spec
from backbone_infra.targets.local import provisioner

__all__ = ["FULL", "QUICK", "BenchPlan", "run_bench"]

SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD")


@dataclass(frozen=True)
class BenchPlan:
    """How much of each path one run measures."""

    name: str
    tier0_bars: int
    store_rows: int
    batch_sizes: tuple[int, ...]
    batch_rows: int
    cache_reads: int
    replay_bars: int
    e2e_bars: int
    latency_s: float
    latency_rate: int
    consumer_counts: tuple[int, ...]
    consumer_bars: int
    #: The consumer sweep's stack size: ``ha`` in the full run.
    consumer_stack: str
    producer_warmup_s: float
    producer_measure_s: float


FULL = BenchPlan(
    name="full", tier0_bars=200_000, store_rows=300_000, batch_sizes=(500, 2_000, 10_000, 50_000),
    batch_rows=100_000, cache_reads=20_000, replay_bars=200_000, e2e_bars=300_000,
    latency_s=20.0, latency_rate=5_000, consumer_counts=(1, 2, 3), consumer_bars=150_000,
    consumer_stack="ha", producer_warmup_s=10.0, producer_measure_s=20.0,
)  # fmt: skip
#: Every path, briefly. ProducerPerformance prints a window every 5 s, so 5 s each is the least.
QUICK = BenchPlan(
    name="quick", tier0_bars=20_000, store_rows=20_000, batch_sizes=(1_000, 10_000),
    batch_rows=20_000, cache_reads=2_000, replay_bars=10_000, e2e_bars=20_000,
    latency_s=3.0, latency_rate=2_000, consumer_counts=(1, 2), consumer_bars=10_000,
    consumer_stack="minimal", producer_warmup_s=5.0, producer_measure_s=5.0,
)  # fmt: skip


# --- machine and versions --------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """Cores, memory, kernel and CPU model of this machine."""
    import psutil

    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "cpu_model": model,
        "load_average_at_start": load_average(),
    }


def client_versions() -> dict[str, str]:
    """Python and the client libraries."""
    out = {"python": platform.python_version()}
    for dist in ("kafka-python", "redis", "psycopg", "duckdb", "orjson"):
        with contextlib.suppress(Exception):
            out[dist] = dist_version(dist)
    return out


def service_versions(doc: ConnectionsDocument, kafka_version: str) -> dict[str, str]:
    """What the stack's servers say they are."""
    import psycopg
    import redis

    out = {"kafka_broker": kafka_version}
    if doc.redis is not None and doc.redis.host:
        client = redis.Redis(
            host=doc.redis.host,
            port=doc.redis.port or 6379,
            username=doc.redis.username,
            password=doc.redis.password.get_secret_value() if doc.redis.password else None,
            **RedisConnectionSettings.from_section(doc.redis).tls_kwargs(),
        )
        try:
            out["redis_server"] = str(client.info("server")["redis_version"])
        finally:
            client.close()
    if doc.timescale is not None:
        ts = doc.timescale
        secret = ts.password.get_secret_value() if ts.password else None
        with psycopg.connect(ts.conninfo(), password=secret) as pg:
            row = pg.execute("SHOW server_version").fetchone()
            out["postgres_server"] = str(row[0]) if row else "unknown"
    return out


# --- Tier 0 ------------------------------------------------------------------------


def bench_tier0(bars: int, log: Log) -> dict[str, Any]:
    """Generate → validate → DuckDB → memory cache → bus, in one process."""
    from backbone.runtime import Backbone
    from backbone.settings import load_settings

    with tempfile.TemporaryDirectory(prefix="backbone-bench-") as tmp:
        settings = load_settings(duckdb_path=str(Path(tmp) / "bench.duckdb"))
        with Backbone.open(tier="bootstrap", settings=settings) as bb:
            seen = [0]
            bb.bus.subscribe("bars.intraday", lambda e: seen.__setitem__(0, seen[0] + len(e.bars)))
            gen = synthetic_bars(SYMBOLS, "1m", bars // len(SYMBOLS))
            result = bb.ingest(gen)
    log(f"tier 0: {result.bars_per_second:,.0f} bars/s ({result.records_in:,} bars)")
    return {
        "bars": result.records_in,
        "stored": result.stored,
        "seconds": round(result.seconds, 3),
        "bars_per_s": round(result.bars_per_second),
        "bus_bars_delivered": seen[0],
        "reconciles": result.reconciles,
    }


def _attempt(name: str, measure: Callable[[], dict[str, Any]], log: Log) -> dict[str, Any]:
    """One measurement; a failure is reported in its place instead of ending the run."""
    try:
        return measure()
    except Exception as exc:
        log(f"{name} failed: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


@contextlib.contextmanager
def _stack(size: str, root: Path, log: Log) -> Iterator[tuple[ConnectionsDocument, Path, Any]]:
    name = f"bench-{size}-{secrets.token_hex(3)}"
    log(f"bringing up a {size} local stack ({root / name})")
    stack = provisioner.up(build_spec(name, size=size), root=root)  # type: ignore[arg-type]
    try:
        # Benchmarks create topics, a table and Redis keys outside the cache's
        # namespace: admin credentials (backbone_harness.privileged).
        yield admin_document(stack), stack.outputs_path, stack
    finally:
        provisioner.down(name, root=root)
        shutil.rmtree(root / name, ignore_errors=True)


def _sweep_consumers(
    plan: BenchPlan, doc: ConnectionsDocument, outputs: Path, log: Log
) -> dict[str, Any]:
    points = tier1.bench_consumer_counts(
        doc, outputs, plan.consumer_bars, plan.consumer_counts, log
    )
    return {"path": "Tier 1 end to end", "stack": plan.consumer_stack, "points": points}


def _on_minimal(plan: BenchPlan, root: Path, log: Log) -> dict[str, Any]:
    """Every path that runs on the minimal stack, in an order that keeps them apart:
    the producers' gigabytes go last, after the paths that read the topics."""
    r: dict[str, Any] = {}
    with _stack("minimal", root, log) as (doc, outputs, stack):
        r["versions"] = service_versions(doc, stack.spec.kafka.version)
        r["store"] = _attempt(
            "store", lambda: store.bench_store_paths(doc, plan.store_rows, log), log
        )
        r["batch_sizes"] = {
            "path": "store write (TimescaleStore.write)", "stack": "minimal",
            "points": store.bench_batch_sizes(doc, plan.batch_rows, plan.batch_sizes, log),
        }  # fmt: skip
        r["cache"] = _attempt(
            "cache", lambda: cache.bench_cache_reads(doc, outputs, plan.cache_reads, log), log
        )
        r["replay"] = _attempt(
            "replay", lambda: store.bench_replay(doc, plan.replay_bars, log), log
        )
        r["end_to_end"] = tier1.bench_end_to_end(doc, outputs, plan.e2e_bars, log)
        # A second run under cProfile names the consumer's bottleneck; the figure
        # above comes from the unprofiled run.
        with tempfile.TemporaryDirectory(prefix="backbone-prof-") as tmp:
            bars = min(plan.e2e_bars, 100_000)
            profiled = _attempt(
                "profiled consumer",
                lambda: tier1.bench_end_to_end(doc, outputs, bars, log, profile_dir=Path(tmp)),
                log,
            )
        r["end_to_end"]["profile"] = profiled.get("profile", [])
        r["latency"] = _attempt("latency", lambda: tier1.bench_latency(
            doc, outputs, log, rate=plan.latency_rate, seconds=plan.latency_s), log)  # fmt: skip
        if plan.consumer_stack == "minimal":
            r["consumer_counts"] = _sweep_consumers(plan, doc, outputs, log)
        r["producer"] = _attempt("producer", lambda: _producers(plan, doc, stack, log), log)
    return r


def _producers(plan: BenchPlan, doc: ConnectionsDocument, stack: Any, log: Log) -> dict[str, Any]:
    records = producer.sample_records(SYMBOLS, 20_000)
    size = round(sum(len(r.value) for r in records) / len(records))
    partitions = max(t.partitions for t in stack.spec.kafka.topics)
    ours = producer.bench_our_producer(
        doc, records, plan.producer_warmup_s, plan.producer_measure_s, log
    )
    tool = producer.bench_kafka_tool(
        doc, size, partitions, plan.producer_warmup_s, plan.producer_measure_s, log
    )
    return {
        "ours": ours,
        "kafka_tool": tool,
        "figures": [
            figure(
                "producer",
                "BarProducer, pre-encoded records (kafka-python)",
                ours["mb_per_s"],
                "MB/s",
                "Kafka ProducerPerformance (Java), same record size and settings",
                tool["mb_per_s"],
                record_bytes=size,
            ),
        ],
    }


def _figures(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Every figure of the run, in report order (a failed path leaves an error row)."""
    rows: list[dict[str, Any]] = []
    for key, path in (("producer", "producer"), ("store", "store write")):
        part = r.get(key, {})
        rows += part.get("figures") or [{"path": path, "error": part.get("error", "not run")}]
    e2e, st = r.get("end_to_end", {}), r.get("store", {})
    if "bars_per_s" in e2e and "copy_into_bars" in st:
        rows.append(figure(
            "Tier 1 end to end", "generate → Kafka → consumer → PostgreSQL → Redis → bus",
            e2e["bars_per_s"], "bars/s", "COPY of pre-formatted rows into bars (store ceiling)",
            st["copy_into_bars"]["rows_per_s"],
        ))  # fmt: skip
    else:
        rows.append(
            {"path": "Tier 1 end to end", "error": e2e.get("error", st.get("error", "not run"))}
        )
    for key, path in (("replay", "replay / backfill"), ("cache", "cache read")):
        part = r.get(key, {})
        rows += part.get("figures") or [{"path": path, "error": part.get("error", "not run")}]
    return rows


def _bottlenecks(r: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    sources = {
        "producer (ours)": r.get("producer", {}).get("ours", {}),
        "store write": r.get("store", {}).get("ours", {}),
        "Tier 1 end to end (consumer process)": r.get("end_to_end", {}),
        "replay / backfill": r.get("replay", {}),
        "cache read (latest)": r.get("cache", {}),
    }
    return {path: part["profile"] for path, part in sources.items() if part.get("profile")}


def run_bench(
    out: Path,
    *,
    plan: BenchPlan = FULL,
    stacks_root: Path | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Run every measurement of ``plan``; write ``performance.json``, ``.md`` and the
    plots under ``out``. Stacks go under ``stacks_root`` (default: the provisioner's)."""
    from backbone_infra.targets.local.state import stacks_root as default_root

    root = stacks_root or default_root()
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o711)  # the PostgreSQL user walks through it
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": plan.name,
        "machine": machine_info(),
        "versions": client_versions(),
        "tier0": bench_tier0(plan.tier0_bars, log),
    }
    minimal = _on_minimal(plan, root, log)
    report["versions"].update(minimal.pop("versions"))
    report.update(minimal)
    if plan.consumer_stack != "minimal":
        with _stack(plan.consumer_stack, root, log) as (doc, outputs, _):
            report["consumer_counts"] = _sweep_consumers(plan, doc, outputs, log)
    report["figures"] = _figures(report)
    report["bottlenecks"] = _bottlenecks(report)
    report["machine"]["load_average_at_end"] = load_average()
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = write_plots(report, out)
    (out / "performance.json").write_text(json.dumps(report, indent=2) + "\n")
    page = out / "performance.md"
    old = page.read_text() if page.exists() else ""
    # The TLS cost section is `harness bench tls`'s: kept as it was measured.
    page.write_text(keep_tls_section(old, render_markdown(report)))
    return report
