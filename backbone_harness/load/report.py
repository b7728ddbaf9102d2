"""``harness load run``: the Locust run in its own process, Kafka's tool, the report.

The Locust run (``python -m backbone_harness.load``) is bounded by user count, spawn
rate and run time. Against the same brokers, in the same run, Kafka's own
``ProducerPerformance`` (acks=all, idempotent, our average record size) gives
the ceiling to compare with; it is :func:`backbone_harness.bench.producer.bench_kafka_tool`
(warmed up, then measured over 15 s), reused as is. Reports go to ``load.md`` and ``load.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backbone_harness.bench.performance import client_versions, machine_info
from backbone_harness.bench.producer import bench_kafka_tool
from backbone_harness.privileged import admin_document
from backbone_infra.targets.local.provisioner import LocalStack

__all__ = ["render_markdown", "run_load_test", "write_report"]

Log = Callable[[str], None]


def run_locust(
    stack: LocalStack,
    *,
    users: int,
    spawn_rate: float,
    seconds: float,
    profile: str = "produce",
    workers: int = 0,
    hit_ratio: float = 0.9,
) -> dict[str, Any]:
    """One bounded Locust run in a child process; its :class:`LoadResult` as a dict."""
    cmd = [
        sys.executable, "-m", "backbone_harness.load", "--outputs", str(stack.outputs_path),
        "--users", str(users), "--spawn-rate", str(spawn_rate), "--seconds", str(seconds),
        "--profile", profile, "--workers", str(workers), "--hit-ratio", str(hit_ratio),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"the Locust run failed (exit {done.returncode}): {done.stderr.strip()[-600:]}"
        )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run_load_test(
    stack: LocalStack,
    *,
    users: int = 4,
    spawn_rate: float = 2.0,
    seconds: float = 30.0,
    compare: bool = True,
    log: Log = print,
    profile: str = "produce",
    workers: int = 0,
    hit_ratio: float = 0.9,
) -> dict[str, Any]:
    """The Locust run and (with ``compare``) ProducerPerformance for the producer and
    ``redis-benchmark`` GET for the readers; the report as a dict."""
    # Ceilings set up things the application may not (backbone_harness.privileged).
    admin = admin_document(stack)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "stack": stack.name,
        "size": stack.spec.size,
        "machine": machine_info(),
        "versions": {
            **client_versions(),
            "locust": _version("locust"),
            "gevent": _version("gevent"),
            "kafka_broker": stack.spec.kafka.version,
        },
    }
    log(
        f"Locust: {users} users ({profile}), spawn rate {spawn_rate}/s, {seconds:.0f} s, "
        f"{workers or 'no'} worker processes, against {stack.name}"
    )
    locust = run_locust(
        stack, users=users, spawn_rate=spawn_rate, seconds=seconds,
        profile=profile, workers=workers, hit_ratio=hit_ratio,
    )  # fmt: skip
    report["locust"] = locust
    report["profile"] = profile
    report["hit_ratio_asked"] = hit_ratio if profile != "produce" else None
    log(
        f"Locust: {locust['requests']} requests, {locust['failures']} failed, "
        f"{locust['bars_per_s']:,.0f} bars/s, {locust['mb_per_s']} MB/s"
    )
    reads = locust.get("profiles", {}).get("read")
    if compare and reads and reads["requests"]:
        from backbone_harness.load.redis_bench import redis_benchmark_get

        # redis-benchmark writes key:* (outside the cache's ACL namespace).
        bench = redis_benchmark_get(admin)
        bench["ratio_our_reads_to_redis_get_per_s"] = round(
            reads["requests_per_s"] / bench["requests_per_s"], 4
        )
        report["redis_benchmark"] = bench
        log(
            f"redis-benchmark GET: {bench['requests_per_s']:,.0f}/s; our reads "
            f"{reads['requests_per_s']}/s (ratio {bench['ratio_our_reads_to_redis_get_per_s']})"
        )
    if compare and locust["record_bytes_avg"] > 0:
        size = locust["record_bytes_avg"]
        partitions = max(t.partitions for t in stack.spec.kafka.topics)
        # ProducerPerformance creates and deletes its own topic: admin credentials.
        perf = bench_kafka_tool(
            admin_document(stack), size, partitions, warmup_s=5.0, measure_s=15.0, log=log
        )
        perf["ratio_ours_to_kafka_tool_mb_per_s"] = round(locust["mb_per_s"] / perf["mb_per_s"], 3)
        report["producer_performance"] = perf
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def _version(dist: str) -> str:
    from importlib.metadata import version

    try:
        return version(dist)
    except Exception:
        return "unknown"


def write_report(report: dict[str, Any], out_dir: Path) -> Path:
    """Write ``load.json``, ``load.md`` and the plots (PNG) under ``out_dir``; the .md path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    timeline = report["locust"].get("timeline") or []
    if timeline:
        from backbone_harness.load.plots import plot_timeline

        title = f"{report['locust']['users']} users, {report['size']} stack"
        report["plots"] = [p.name for p in plot_timeline(timeline, out_dir, title)]
    (out_dir / "load.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    md = out_dir / "load.md"
    md.write_text(render_markdown(report))
    return md


def _profile_lines(r: dict[str, Any]) -> list[str]:
    lo = r["locust"]
    profiles = lo.get("profiles") or {}
    if not profiles:
        return []
    names = {"kafka": "produce (batches, acks=all)", "read": "read (Backbone: cache, then store)"}
    lines = [
        "",
        "## Per profile",
        "",
        f"{lo.get('workers') or 'No'} Locust worker processes"
        + (" (Locust's distributed mode: one master, the workers run the users)."
           if lo.get("workers") else " (one local process)."),
        "",
        "| profile | requests | failures | requests/s | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for kind, p in sorted(profiles.items()):
        lines.append(
            f"| {names.get(kind, kind)} | {p['requests']} | {p['failures']} | "
            f"{p['requests_per_s']} | {p['p50_ms']} | {p['p95_ms']} | {p['p99_ms']} |"
        )
    if lo.get("cache_hit_ratio") is not None:
        lines += [
            "",
            f"Readers' cache hit ratio: {lo['cache_hit_ratio']} measured "
            f"(asked: {r.get('hit_ratio_asked')} of requests hot; cold requests read a random "
            "hour, which the cache rarely holds yet).",
        ]
    bench = r.get("redis_benchmark")
    if bench:
        lines += [
            "",
            f"`redis-benchmark -t get` on the same Redis primary, same run ({bench['clients']} "
            f"clients, {bench['requests']} GETs): {bench['requests_per_s']:,.0f} GET/s, p50 "
            f"{bench['p50_ms']} ms, p95 {bench['p95_ms']} ms, p99 {bench['p99_ms']} ms. "
            f"**Ratio our reads / bare GETs (per second): "
            f"{bench['ratio_our_reads_to_redis_get_per_s']}** (a read of ours is a Redis GET "
            "and LRU touch, or a store query on a miss, plus decoding, in Python under gevent).",
        ]
    for png in r.get("plots", []):
        lines += ["", f"![{png}]({png})"]
    return lines


def render_markdown(r: dict[str, Any]) -> str:
    """The status page of one load run."""
    m, v, lo = r["machine"], r["versions"], r["locust"]
    lat = lo["latency_ms"]
    lines = [
        "# Load test: "
        + {
            "produce": "bar batches through BarProducer (Locust)",
            "read": "reads through Backbone (Locust)",
        }.get(r.get("profile", "produce"), "producers and readers side by side (Locust)"),
        "",
        f"Run {r['date']} by `harness load run` on the `{r['size']}` stack `{r['stack']}`.",
        "",
        f"- Machine: {m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, kernel "
        f"{m['kernel']}; load average {m['load_average_at_start']} at start, "
        f"{m.get('load_average_at_end')} at end (the machine is shared)",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in sorted(v.items())),
        f"- Workload: {lo['users']} users spawned at {lo['spawn_rate']}/s for "
        f"{lo['run_seconds']:.0f} s (elapsed {lo['elapsed_seconds']} s); each send is one "
        "batch (500 minute bars, or 20 daily bars) waited on until acknowledged (acks=all)",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| sends (requests) | {lo['requests']} |",
        f"| failed sends | {lo['failures']} |",
        f"| sends/s | {lo['requests_per_s']} |",
        f"| bars acknowledged | {lo['bars_acknowledged']} |",
        f"| bars/s | {lo['bars_per_s']:,.0f} |",
        f"| Kafka records acknowledged | {lo['records_acknowledged']} |",
        f"| average record value, bytes | {lo['record_bytes_avg']} |",
        f"| value MB/s | {lo['mb_per_s']} |",
        f"| sends in flight on average (Little's law; {lo['users']} users) | "
        f"{lo['concurrent_sends_avg']} |",
        f"| send-to-ack latency avg / p50 / p95 / p99 / max, ms | {lat['avg']} / {lat['p50']} / "
        f"{lat['p95']} / {lat['p99']} / {lat['max']} |",
    ]
    lines += _profile_lines(r)
    perf = r.get("producer_performance")
    if perf:
        lines += [
            "",
            "## Against Kafka's own ProducerPerformance (same run, same brokers)",
            "",
            f"`org.apache.kafka.tools.ProducerPerformance`, records of {perf['record_bytes']} "
            f"bytes, acks=all, idempotent, our linger.ms and batch.size, measured over "
            f"{perf['measured_s']} s after a {perf['warmup_s']:g} s warm-up: "
            f"{perf['records_per_s']:,.0f} records/s, {perf['mb_per_s']} MB/s, "
            f"avg latency {perf['avg_latency_ms']} ms.",
            "",
            f"**Ratio ours / Kafka's tool (MB/s): {perf['ratio_ours_to_kafka_tool_mb_per_s']}**. "
            "Kafka's tool sends without waiting per batch; the Locust users wait for each "
            "batch's acknowledgement, as a feed handler that must not lose bars does.",
        ]
    else:
        lines += ["", "Kafka's ProducerPerformance: not run (`--no-compare`)."]
    if lo["failure_examples"]:
        lines += ["", "Failures: " + "; ".join(f"`{e}`" for e in lo["failure_examples"])]
    for name, entry in sorted(lo["per_task"].items()):
        lines.append(
            f"- `{name}`: {entry['requests']} sends, {entry['failures']} failed, "
            f"median {entry['median_ms']} ms"
        )
    return "\n".join(lines) + "\n"
