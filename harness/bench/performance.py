"""``harness bench perf``: end-to-end ingest rates on both tiers, latency, and Kafka's own tool.

What it measures (one run, numbers as they come — see ``docs/status/performance.md``):

* **Tier 0**: ``Backbone.ingest`` of generated bars → DuckDB → memory cache → bus, bars/s.
* **Tier 1, end to end**: one process generates and produces (``BarProducer``), a
  ``backbone consume`` process consumes → Timescale/PostgreSQL → Redis cache →
  bus; bars/s from the first send to the last store commit.
* **Tier 1, one process**: ``Backbone.ingest`` (produce, then consume, in turn).
* **Latency**: produce-to-stored (record timestamp → store commit) p50/p95/p99 at
  a fixed 5,000 bars/s.
* **Kafka's ProducerPerformance** with the same record size, acks=all, against the
  same broker, and the ratio of our produce rate to it.

Tier 1 runs on a local stack the benchmark brings up itself (``minimal``) and
always takes down.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib.metadata import version as dist_version
from itertools import islice
from pathlib import Path
from typing import Any

from backbone.bars import Bar, synthetic_bars
from backbone.connections import ConnectionsDocument
from backbone.settings import KafkaConnectionSettings
from backbone.stream.codec import batch_records
from backbone.stream.producer import BarProducer, kafka_client_config
from infra.spec import build_spec
from infra.targets.local import provisioner
from infra.targets.local.kafka import kafka_libs_dir

__all__ = ["TARGETS", "run_bench"]

Log = Callable[[str], None]

#: The issue's targets on a 2-core machine.
TARGETS = {
    "tier0_bars_per_s": 50_000,
    "tier1_bars_per_s": 20_000,
    "p99_latency_ms_at_5000_bars_per_s": 500,
}
SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD")
PERF_TOPIC = "bench.producer-perf"
#: Bytes each producer comparison sends.
PERF_BYTES = 150_000_000


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
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
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


# --- Tier 1 ------------------------------------------------------------------------


@contextlib.contextmanager
def _consumer_process(
    outputs: Path, group: str, max_records: int, timeout_s: float
) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("BACKBONE_TEST_CRASH_POINT", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "backbone", "consume", "--outputs", str(outputs),
         "--group", group, "--start", "latest", "--max-records", str(max_records),
         "--timeout", str(timeout_s), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if line.startswith("consuming:"):
                break
            if not line and proc.poll() is not None:
                raise RuntimeError(f"the bench consumer exited early ({proc.returncode})")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _finish(proc: subprocess.Popen[str], timeout_s: float) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"the bench consumer failed ({proc.returncode}): {err[-500:]}")
    report: dict[str, Any] = json.loads(out)
    return report


def _produce(doc: ConnectionsDocument, gen: Iterator[Bar]) -> tuple[int, float, float, int]:
    """Send everything ``gen`` yields; (bars, start, end, bytes) with wall-clock times."""
    assert doc.kafka is not None
    producer = BarProducer(KafkaConnectionSettings.from_section(doc.kafka))
    sent = 0
    size = 0
    start = time.time()
    try:
        while chunk := list(islice(gen, 20_000)):
            for record in batch_records(chunk, max_bars=producer.tuning.bars_per_record):
                producer.send_record(record)
                size += len(record.value)
            sent += len(chunk)
        producer.flush()
        end = time.time()
    finally:
        producer.close()
    return sent, start, end, size


def bench_tier1_end_to_end(
    doc: ConnectionsDocument, outputs: Path, bars: int, log: Log
) -> dict[str, Any]:
    """Producer here, a ``backbone consume`` process there; first send → last store commit."""
    group = f"bench-e2e-{secrets.token_hex(3)}"
    with _consumer_process(outputs, group, bars, timeout_s=600) as proc:
        gen = synthetic_bars(
            SYMBOLS, "1m", bars // len(SYMBOLS), start=datetime(2000, 1, 1, tzinfo=UTC)
        )
        sent, start, end, size = _produce(doc, gen)
        consumed = _finish(proc, 600)
    last = float(consumed["last_stored_at"])
    rate = sent / (last - start)
    log(f"tier 1 end to end: {rate:,.0f} bars/s (produce alone {sent / (end - start):,.0f} bars/s)")
    return {
        "bars": sent,
        "stored": consumed["stored"],
        "duplicates": consumed["duplicates"],
        "reconciles": consumed["reconciles"],
        "seconds": round(last - start, 3),
        "bars_per_s": round(rate),
        "produce_bars_per_s": round(sent / (end - start)),
        "produce_mb_per_s": round(size / (end - start) / 1e6, 2),
        "record_bytes_avg": round(size / max(1, consumed["kafka_records"])),
        "kafka_records": consumed["kafka_records"],
    }


def bench_tier1_one_process(outputs: Path, bars: int, log: Log) -> dict[str, Any]:
    """``Backbone.ingest`` in one process: produce a chunk, consume it, repeat."""
    from backbone.runtime import Backbone

    with Backbone.open(
        tier="institutional", outputs=outputs, group_id=f"bench-sync-{secrets.token_hex(3)}",
        consumer_start="latest",
    ) as bb:  # fmt: skip
        assert bb.consumer is not None
        bb.consumer.wait_for_assignment()
        gen = synthetic_bars(
            SYMBOLS, "1m", bars // len(SYMBOLS), start=datetime(2031, 1, 1, tzinfo=UTC)
        )
        result = bb.ingest(gen)
    log(f"tier 1 one process: {result.bars_per_second:,.0f} bars/s")
    return {
        "bars": result.records_in,
        "stored": result.stored,
        "seconds": round(result.seconds, 3),
        "bars_per_s": round(result.bars_per_second),
        "reconciles": result.reconciles,
    }


def bench_latency(
    doc: ConnectionsDocument,
    outputs: Path,
    log: Log,
    *,
    rate: int = 5_000,
    seconds: float = 20.0,
    n_symbols: int = 4,
) -> dict[str, Any]:
    """Produce at a fixed rate in ticks of 20 ms over ``symbols`` (each tick's bars of a
    symbol are one record); latency is record timestamp → store commit."""
    assert doc.kafka is not None
    tick = 0.02
    per_tick = max(1, round(rate * tick))
    symbols = list(SYMBOLS[:n_symbols])
    ticks = int(seconds / tick)
    total = ticks * per_tick
    group = f"bench-latency-{secrets.token_hex(3)}"
    gen = synthetic_bars(
        symbols, "1m", total // len(symbols) + 1, start=datetime(2032, 1, 1, tzinfo=UTC)
    )
    with _consumer_process(outputs, group, total, timeout_s=seconds + 120) as proc:
        producer = BarProducer(KafkaConnectionSettings.from_section(doc.kafka))
        began = time.monotonic()
        try:
            for n in range(ticks):
                wait = began + n * tick - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                producer.send_bars(list(islice(gen, per_tick)))
            producer.flush()
        finally:
            producer.close()
        achieved = total / (time.monotonic() - began)
        consumed = _finish(proc, seconds + 120)
    lat = consumed["latency_ms"]
    log(f"latency at {achieved:,.0f} bars/s: p50 {lat['p50']} ms, p99 {lat['p99']} ms")
    return {
        "target_bars_per_s": rate,
        "symbols": len(symbols),
        "bars_per_record": per_tick / len(symbols),
        "achieved_bars_per_s": round(achieved),
        "bars": total,
        "kafka_records": consumed["kafka_records"],
        "stored": consumed["stored"],
        "latency_ms": lat,
        "measured": "Kafka record timestamp (at send) to the consumer's store commit, per record",
    }


def bench_produce_only(
    doc: ConnectionsDocument, bars: int, log: Log, *, volume_bytes: int = PERF_BYTES
) -> dict[str, Any]:
    """Our producer sending already-encoded records (kafka-python + acks=all only)."""
    assert doc.kafka is not None
    gen = synthetic_bars(
        SYMBOLS, "1m", bars // len(SYMBOLS), start=datetime(2000, 1, 1, tzinfo=UTC)
    )
    one_pass = list(batch_records(gen))
    pass_bytes = sum(len(r.value) for r in one_pass)
    # Send as many bytes as ProducerPerformance does (repeating the records; the
    # store absorbs repeats), so neither side is measured on a short burst.
    records = one_pass * max(1, round(volume_bytes / pass_bytes))
    size = sum(len(r.value) for r in records)
    n_bars = sum(r.bars for r in records)
    producer = BarProducer(KafkaConnectionSettings.from_section(doc.kafka))
    try:
        began = time.perf_counter()
        for record in records:
            producer.send_record(record)
        producer.flush()
        seconds = time.perf_counter() - began
    finally:
        producer.close()
    out = {
        "records": len(records),
        "bars": n_bars,
        "megabytes": round(size / 1e6, 1),
        "seconds": round(seconds, 3),
        "records_per_s": round(len(records) / seconds, 1),
        "bars_per_s": round(n_bars / seconds),
        "mb_per_s": round(size / seconds / 1e6, 2),
    }
    log(f"our producer, pre-encoded: {out['mb_per_s']} MB/s ({out['bars_per_s']:,} bars/s)")
    return out


def bench_producer_performance(
    doc: ConnectionsDocument, record_size: int, records: int, log: Log
) -> dict[str, Any]:
    """Kafka's ``ProducerPerformance`` (acks=all, idempotent) with our record size."""
    from kafka.admin import KafkaAdminClient, NewTopic

    kafka = doc.kafka
    assert kafka is not None and kafka.password is not None
    admin = KafkaAdminClient(
        **kafka_client_config(KafkaConnectionSettings.from_section(kafka), client_id="bench-admin")
    )
    try:
        if PERF_TOPIC not in admin.list_topics():
            admin.create_topics([NewTopic(PERF_TOPIC, 3, 1)])
    finally:
        admin.close()
    java = shutil.which("java") or "java"
    with tempfile.TemporaryDirectory(prefix="backbone-perf-") as tmp:
        props = Path(tmp) / "client.properties"
        fd = os.open(props, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(
                f"bootstrap.servers={','.join(kafka.bootstrap_servers)}\n"
                f"security.protocol={kafka.security_protocol}\n"
                f"sasl.mechanism={kafka.sasl_mechanism}\n"
                "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule "
                f'required username="{kafka.username}" '
                f'password="{kafka.password.get_secret_value()}";\n'
            )
        cmd = [
            java, "-Xmx512m", "-cp", f"{kafka_libs_dir()}/*",
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic", PERF_TOPIC, "--num-records", str(records),
            "--record-size", str(record_size), "--throughput", "-1",
            "--producer.config", str(props),
            "--producer-props", "acks=all", "enable.idempotence=true", "linger.ms=5",
            "batch.size=524288",
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    summary = [line for line in done.stdout.splitlines() if "records sent" in line]
    if done.returncode != 0 or not summary:
        raise RuntimeError(f"ProducerPerformance failed ({done.returncode}): {done.stderr[-500:]}")
    last = summary[-1]
    match = re.search(r"([\d.]+) records/sec \(([\d.]+) MB/sec\)", last)
    lat = re.search(r"([\d.]+) ms avg latency.*?([\d.]+) ms 99th", last)
    assert match is not None
    out = {
        "records": records,
        "record_size": record_size,
        "records_per_s": float(match.group(1)),
        "mb_per_s": float(match.group(2)),
        "avg_latency_ms": float(lat.group(1)) if lat else None,
        "p99_latency_ms": float(lat.group(2)) if lat else None,
        "summary": last.strip(),
    }
    log(f"ProducerPerformance: {out['mb_per_s']} MB/s ({out['records_per_s']:,.0f} records/s)")
    return out


def _attempt(measure: Callable[[], dict[str, Any]], log: Log) -> dict[str, Any]:
    """One measurement; a failure is reported in its place instead of ending the run."""
    try:
        return measure()
    except Exception as exc:
        log(f"measurement failed: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


# --- the run -----------------------------------------------------------------------


def _tier1(bars: int, log: Log) -> dict[str, Any]:
    name = f"bench-{secrets.token_hex(3)}"
    root = Path.cwd() / ".stacks" / name
    root.mkdir(parents=True)
    os.chmod(root, 0o711)  # the PostgreSQL user walks through it
    log(f"bringing up a minimal local stack ({root})")
    stack = provisioner.up(build_spec(name, size="minimal"), root=root)
    try:
        doc, outputs = stack.document, stack.outputs_path
        results: dict[str, Any] = {"versions": service_versions(doc, stack.spec.kafka.version)}
        e2e = bench_tier1_end_to_end(doc, outputs, bars, log)
        results["end_to_end"] = e2e
        results["one_process"] = _attempt(
            lambda: bench_tier1_one_process(outputs, bars // 2, log), log
        )
        results["latency"] = _attempt(lambda: bench_latency(doc, outputs, log), log)
        size = e2e["record_bytes_avg"]
        perf = _attempt(
            lambda: bench_producer_performance(doc, size, max(1000, PERF_BYTES // size), log), log
        )
        ours = _attempt(lambda: bench_produce_only(doc, bars, log), log)
        if "mb_per_s" in perf and "mb_per_s" in ours:
            perf["ratio_ours_to_kafka_tool_mb_per_s"] = round(
                ours["mb_per_s"] / perf["mb_per_s"], 3
            )
        results["produce_only"] = ours
        results["producer_performance"] = perf
        return results
    finally:
        provisioner.down(name, root=root)
        shutil.rmtree(root, ignore_errors=True)


def run_bench(
    out: Path, *, bars: int = 200_000, tier1: bool = True, log: Log = print
) -> dict[str, Any]:
    """Run every measurement, write ``performance.json`` and ``.md`` under ``out``."""
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": client_versions(),
        "targets": TARGETS,
        "tier0": bench_tier0(bars, log),
    }
    if tier1:
        t1 = _tier1(bars, log)
        report["versions"].update(t1.pop("versions"))
        report["tier1"] = t1
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out.mkdir(parents=True, exist_ok=True)
    (out / "performance.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "performance.md").write_text(render_markdown(report))
    return report


def _verdict(value: float | None, target: float, higher_is_better: bool = True) -> str:
    if value is None:
        return "not measured"
    ok = value >= target if higher_is_better else value <= target
    return "meets target" if ok else "**below target**" if higher_is_better else "**above target**"


def _failed(name: str, part: dict[str, Any]) -> str:
    return f"| {name} | failed: {part['error']} | — | not measured |"


def _tier1_markdown(t1: dict[str, Any]) -> list[str]:
    e2e, one, lat, perf = (
        t1["end_to_end"], t1["one_process"], t1["latency"], t1["producer_performance"]
    )  # fmt: skip
    rows = [
        f"| Tier 1 end to end (generate → Kafka → consumer process → PostgreSQL → Redis → bus) "
        f"| {e2e['bars_per_s']:,} bars/s | ≥ {TARGETS['tier1_bars_per_s']:,} | "
        f"{_verdict(e2e['bars_per_s'], TARGETS['tier1_bars_per_s'])} |",
    ]
    name = "Tier 1 in one process (`Backbone.ingest` = `backbone ingest`: produce, then consume)"
    rows.append(
        _failed(name, one) if "error" in one
        else f"| {name} | {one['bars_per_s']:,} bars/s | ≥ {TARGETS['tier1_bars_per_s']:,} | "
        f"{_verdict(one['bars_per_s'], TARGETS['tier1_bars_per_s'])} |"
    )  # fmt: skip
    target_ms = TARGETS["p99_latency_ms_at_5000_bars_per_s"]
    if "error" in lat:
        rows.append(_failed("p99 produce → stored at 5,000 bars/s", lat))
    else:
        p99 = lat["latency_ms"]["p99"]
        rows.append(
            f"| p99 produce → stored at {lat['achieved_bars_per_s']:,} bars/s | {p99} ms | "
            f"≤ {target_ms} ms | {_verdict(p99, target_ms, False)} |"
        )
    rows.append(
        f"| our producer alone (generate + encode + send, acks=all) | "
        f"{e2e['produce_bars_per_s']:,} bars/s, {e2e['produce_mb_per_s']} MB/s | — | — |"
    )
    ours = t1.get("produce_only", {"error": "not run"})
    name = "our producer, pre-encoded records (kafka-python send, acks=all)"
    rows.append(
        _failed(name, ours) if "error" in ours
        else f"| {name} | {ours['mb_per_s']} MB/s ({ours['records_per_s']:,.0f} records/s, "
        f"{ours['bars_per_s']:,} bars/s) | — | — |"
    )  # fmt: skip
    name = "Kafka ProducerPerformance, same record size"
    rows.append(
        _failed(name, perf) if "error" in perf
        else f"| {name} ({perf['record_size']:,} B) | {perf['mb_per_s']} MB/s "
        f"({perf['records_per_s']:,.0f} records/s) | — | "
        f"ours (pre-encoded) = {perf.get('ratio_ours_to_kafka_tool_mb_per_s', 0):.0%} of it |"
    )  # fmt: skip
    notes = [
        "",
        "## How it was measured",
        "",
        f"- Bars per Kafka record: up to 500 (one symbol per record; average record "
        f"{e2e['record_bytes_avg']:,} bytes of JSON). Batching is what makes these rates; "
        "see docs/streaming.md.",
        f"- Tier 1 end to end: {e2e['bars']:,} new bars; the clock runs from the first send to "
        "the consumer's last store commit (cache invalidation and bus publish follow each "
        f"commit). Stored {e2e['stored']:,}, reconciles: {e2e['reconciles']}.",
    ]
    if "error" not in lat:
        ms = lat["latency_ms"]
        notes.append(
            f"- Latency: {lat['bars']:,} bars in ticks of 20 ms over {lat['symbols']} symbols "
            f"({lat['bars_per_record']:g} bars per record); p50 {ms['p50']} ms, p95 {ms['p95']} "
            f"ms, p99 {ms['p99']} ms, max {ms['max']} ms; {lat['measured']}."
        )
    if "error" not in perf:
        notes.append(
            f"- ProducerPerformance: `{perf['summary']}` Its rate includes JVM warm-up over "
            "this short run, on the same shared cores; ours sends the same volume of "
            "already-encoded records with kafka-python (generating and encoding bars is "
            "measured separately, in the row above it)."
        )
    notes.append(
        "- The stack is a `minimal` local stack (1 Redis, 1 KRaft broker, 1 PostgreSQL "
        "without the TimescaleDB extension) on the same 2 cores as the benchmark."
    )
    return rows + notes


def render_markdown(r: dict[str, Any]) -> str:
    """The human-readable report."""
    m, v, t0 = r["machine"], r["versions"], r["tier0"]
    lines = [
        "# Performance",
        "",
        f"Produced by `harness bench perf` on {r['date']}. Benchmarks, not timed tests: the",
        "figures are what this run measured on this machine, including the load other",
        "processes put on it (load average at start and end below). On this shared",
        "machine the same command has measured several times lower under heavy load;",
        "compare runs only at similar load averages.",
        "",
        "## Machine",
        "",
        f"- {m['cores']} cores, {m['memory_gib']} GiB, kernel {m['kernel']}, CPU {m['cpu_model']}",
        f"- load average at start {m['load_average_at_start']}, at end "
        f"{m.get('load_average_at_end')}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in sorted(v.items())),
        "",
        "## Results",
        "",
        "| measurement | result | target | verdict |",
        "| --- | --- | --- | --- |",
        f"| Tier 0 end to end (generate → DuckDB → memory cache → bus) | "
        f"{t0['bars_per_s']:,} bars/s | ≥ {TARGETS['tier0_bars_per_s']:,} | "
        f"{_verdict(t0['bars_per_s'], TARGETS['tier0_bars_per_s'])} |",
    ]
    t1 = r.get("tier1")
    if t1:
        lines += _tier1_markdown(t1)
    else:
        lines += ["", "Tier 1 was skipped (`--skip-tier1`)."]
    lines += [
        f"- Tier 0: {t0['bars']:,} bars generated lazily during ingest, reconciles: "
        f"{t0['reconciles']}.",
        "",
        "Raw figures: `performance.json` beside this file.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - manual runs
    run_bench(Path("docs/status"), bars=int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
