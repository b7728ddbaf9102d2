"""``harness load run``: the Locust run in its own process, Kafka's tool, the report.

The Locust run (``python -m harness.load``) is bounded by user count, spawn
rate and run time. Against the same brokers, in the same run, Kafka's own
``ProducerPerformance`` (acks=all, idempotent, our average record size) gives
the ceiling to compare with; it is :func:`harness.bench.producer.bench_kafka_tool`
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

from harness.bench.performance import client_versions, machine_info
from harness.bench.producer import bench_kafka_tool
from infra.targets.local.provisioner import LocalStack

__all__ = ["render_markdown", "run_load_test", "write_report"]

Log = Callable[[str], None]


def run_locust(
    stack: LocalStack, *, users: int, spawn_rate: float, seconds: float
) -> dict[str, Any]:
    """One bounded Locust run in a child process; its :class:`LoadResult` as a dict."""
    cmd = [
        sys.executable, "-m", "harness.load", "--outputs", str(stack.outputs_path),
        "--users", str(users), "--spawn-rate", str(spawn_rate), "--seconds", str(seconds),
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
) -> dict[str, Any]:
    """The Locust run and (with ``compare``) ProducerPerformance; the report as a dict."""
    doc = stack.document
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
    log(f"Locust: {users} users, spawn rate {spawn_rate}/s, {seconds:.0f} s against {stack.name}")
    locust = run_locust(stack, users=users, spawn_rate=spawn_rate, seconds=seconds)
    report["locust"] = locust
    log(
        f"Locust: {locust['requests']} sends, {locust['failures']} failed, "
        f"{locust['bars_per_s']:,.0f} bars/s, {locust['mb_per_s']} MB/s"
    )
    if compare and locust["record_bytes_avg"] > 0:
        size = locust["record_bytes_avg"]
        partitions = max(t.partitions for t in stack.spec.kafka.topics)
        perf = bench_kafka_tool(doc, size, partitions, warmup_s=5.0, measure_s=15.0, log=log)
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
    """Write ``load.json`` and ``load.md`` under ``out_dir``; the .md path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "load.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    md = out_dir / "load.md"
    md.write_text(render_markdown(report))
    return md


def render_markdown(r: dict[str, Any]) -> str:
    """The status page of one load run."""
    m, v, lo = r["machine"], r["versions"], r["locust"]
    lat = lo["latency_ms"]
    lines = [
        "# Load test: bar batches through BarProducer (Locust)",
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
