"""``harness bench contract``: what the data contract costs, measured.

* **CSV streaming memory**: files of growing size are read (parse + contract),
  and ingested into a Tier 0 store, each in a fresh process whose peak RSS is
  reported: the reader's memory must not grow with the file.
* **Record compression**: the same pre-encoded bar records sent with each
  ``compression_type`` kafka-python supports here (none, gzip, lz4, zstd) to a
  topic of their own; the bytes the broker stores (``DescribeLogDirs``) and the
  produce rate (bars/s, acks=all, until every record is acknowledged).

Numbers as they come, written to ``contract.json`` and ``contract.md`` (no
thresholds: the report is for choosing, the tests never assert a duration).
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backbone.bars import CSV_COLUMNS, synthetic_bars
from backbone.connections import ConnectionsDocument
from backbone.settings import KafkaConnectionSettings
from backbone.stream.codec import batch_records
from backbone.stream.producer import (
    BarProducer,
    ProducerTuning,
    kafka_client_config,
)
from backbone_harness.privileged import admin_document
from backbone_infra.spec import build_spec
from backbone_infra.targets.local import provisioner

__all__ = ["CODECS", "bench_compression", "bench_csv_memory", "run_contract_bench"]

Log = Callable[[str], None]
#: ``None`` is no compression; the others are kafka-python's names.
CODECS: tuple[str | None, ...] = (None, "gzip", "lz4", "zstd")

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
mode, path, db = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
from backbone.csvfile import CsvBarFile
t0 = time.perf_counter()
if mode == "read":
    bars = rejects = 0
    with CsvBarFile(path) as f:
        for item in f:
            if type(item).__name__ == "Bar":
                bars += 1
            else:
                rejects += 1
    out = {"records": bars + rejects, "rejected": rejects}
else:
    from backbone.runtime import Backbone
    from backbone.settings import load_settings
    with Backbone.open(tier="bootstrap", settings=load_settings(duckdb_path=db)) as bb:
        with CsvBarFile(path, contract=bb.contract) as f:
            r = bb.ingest(f)
    out = {"records": r.records_in, "stored": r.stored, "rejected": r.dead_lettered,
           "reconciles": r.reconciles}
out["seconds"] = round(time.perf_counter() - t0, 2)
out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
print(json.dumps(out))
"""


def _write_csv(path: Path, rows: int) -> int:
    """A CSV of ``rows`` rows: valid synthetic 1m bars with every 100th row hostile."""
    symbols = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD")
    gen = synthetic_bars(symbols, "1m", rows // len(symbols) + 1, seed=7,
                         start=datetime(2000, 1, 3, tzinfo=UTC))  # fmt: skip
    with path.open("w", encoding="utf-8") as fh:
        fh.write(",".join(CSV_COLUMNS) + "\n")
        for i, b in zip(range(rows), gen, strict=False):
            open_ = -b.open if i % 100 == 99 else b.open
            fh.write(
                f"{b.symbol},{b.timeframe},{b.ts.isoformat()},{open_},{b.high},{b.low},"
                f"{b.close},{b.volume}\n"
            )
    return path.stat().st_size


def bench_csv_memory(rows: tuple[int, ...], log: Log) -> list[dict[str, Any]]:
    """Peak RSS of a fresh process reading / ingesting CSVs of ``rows`` rows each."""
    results: list[dict[str, Any]] = []
    folder = Path(tempfile.mkdtemp(prefix="bench-contract-"))
    try:
        for n in rows:
            path = folder / f"bars-{n}.csv"
            size = _write_csv(path, n)
            for mode in ("read", "ingest"):
                db = folder / f"t0-{n}.duckdb"
                done = subprocess.run(
                    [sys.executable, "-c", _CHILD, mode, str(path), str(db)],
                    capture_output=True, text=True, check=False, timeout=3600,
                    env={**os.environ, "BACKBONE_CONFIG": str(folder / "none.yaml")},
                )  # fmt: skip
                if done.returncode != 0:
                    raise RuntimeError(f"the {mode} child failed: {done.stderr[-500:]}")
                # the child's last line is its report (a library may print before it)
                report = json.loads(done.stdout.strip().splitlines()[-1])
                row = {"rows": n, "file_mb": round(size / 1e6, 1), "mode": mode, **report}
                row["rows_per_s"] = round(n / row["seconds"]) if row["seconds"] else None
                log(
                    f"csv {mode} {n:,} rows ({row['file_mb']} MB): peak RSS "
                    f"{row['peak_rss_mb']} MB, {row['rows_per_s']:,} rows/s"
                )
                results.append(row)
                db.unlink(missing_ok=True)
            path.unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return results


def _topic_bytes(admin: Any, topic: str) -> int | None:
    """Bytes the brokers hold for ``topic`` (all replicas), from DescribeLogDirs.

    kafka-python returns ``[{"broker": id, "log_dirs": [result dicts]}]``; each
    result lists ``topics`` with ``name`` and ``partitions`` with ``partition_size``.
    """
    try:
        responses = admin.describe_log_dirs([topic])
    except Exception:
        return None

    def sizes(node: Any, inside: bool) -> int:
        if isinstance(node, dict):
            here = inside or node.get("name") == topic or node.get("topic") == topic
            own = int(node.get("partition_size", 0)) if here else 0
            return own + sum(sizes(v, here) for v in node.values() if isinstance(v, list | dict))
        if isinstance(node, list):
            return sum(sizes(v, inside) for v in node)
        return 0

    return sizes(responses, False)


def bench_compression(doc: ConnectionsDocument, bars: int, log: Log) -> list[dict[str, Any]]:
    """Produce the same records once per codec to its own topic; bytes stored and bars/s."""
    from kafka.admin import KafkaAdminClient, NewTopic

    assert doc.kafka is not None
    base = KafkaConnectionSettings.from_section(doc.kafka)
    symbols = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD")
    gen = synthetic_bars(
        symbols, "1m", bars // len(symbols), start=datetime(2000, 1, 3, tzinfo=UTC)
    )
    records = list(batch_records(gen))
    raw_bytes = sum(len(r.value) for r in records)
    n_bars = sum(r.bars for r in records)
    admin = KafkaAdminClient(**kafka_client_config(base, client_id="bench-contract-admin"))
    results: list[dict[str, Any]] = []
    try:
        for codec in CODECS:
            topic = f"bench.compression.{codec or 'none'}.{secrets.token_hex(3)}"
            admin.create_topics([NewTopic(topic, 3, 1)])
            kafka = base.model_copy(update={"topics": {**base.topics, "intraday_bars": topic}})
            producer = BarProducer(kafka, tuning=ProducerTuning(compression_type=codec))
            try:
                began = time.perf_counter()
                for record in records:
                    producer.send_record(record)
                producer.flush()
                seconds = time.perf_counter() - began
            finally:
                producer.close()
            time.sleep(1.0)  # let the log-dir sizes settle
            stored = _topic_bytes(admin, topic)
            row = {
                "compression": codec or "none",
                "bars": n_bars,
                "records": len(records),
                "value_bytes": raw_bytes,
                "broker_bytes": stored,
                "bytes_per_bar": round(stored / n_bars, 1) if stored else None,
                "seconds": round(seconds, 3),
                "bars_per_s": round(n_bars / seconds),
            }
            log(
                f"compression {row['compression']}: {stored} bytes on the broker "
                f"({row['bytes_per_bar']} B/bar), {row['bars_per_s']:,} bars/s"
            )
            results.append(row)
            admin.delete_topics([topic])
    finally:
        admin.close()
    none = next((r for r in results if r["compression"] == "none"), None)
    for r in results:
        if none and none["broker_bytes"] and r["broker_bytes"]:
            r["bytes_vs_none"] = round(r["broker_bytes"] / none["broker_bytes"], 3)
            r["rate_vs_none"] = round(r["bars_per_s"] / none["bars_per_s"], 3)
    return results


def _with_stack(work: Callable[[ConnectionsDocument], Any], log: Log) -> Any:
    """Run ``work`` on a minimal local stack brought up (and always taken down) here."""
    name = f"bench-contract-{secrets.token_hex(3)}"
    root = Path.cwd() / ".stacks" / name
    root.mkdir(parents=True)
    os.chmod(root, 0o711)  # the PostgreSQL user walks through it
    log(f"bringing up a minimal local stack ({root})")
    stack = provisioner.up(build_spec(name, size="minimal"), root=root)
    try:
        # The compression bench creates its own topic: admin credentials.
        return work(admin_document(stack))
    finally:
        provisioner.down(name, root=root)
        shutil.rmtree(root, ignore_errors=True)


def run_contract_bench(
    out: Path,
    *,
    rows: tuple[int, ...] = (250_000, 1_000_000),
    bars: int = 200_000,
    document: ConnectionsDocument | None = None,
    tier1: bool = True,
    log: Log = print,
) -> dict[str, Any]:
    """Measure, write ``contract.json`` and ``contract.md`` under ``out``, return the report."""
    previous = out / "contract.json"
    report: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_at_start": [round(x, 1) for x in os.getloadavg()],
    }
    if rows:
        report["csv_memory"] = bench_csv_memory(rows, log)
        report["csv_memory_at"] = report["at"]
    elif previous.is_file():  # --skip-csv: keep the last measured section, dated
        old = json.loads(previous.read_text())
        report["csv_memory"] = old.get("csv_memory", [])
        report["csv_memory_at"] = old.get("csv_memory_at", old.get("at"))
    out.mkdir(parents=True, exist_ok=True)
    previous.write_text(json.dumps(report, indent=2) + "\n")  # a crash below keeps this
    if tier1:
        if document is not None:
            report["compression"] = bench_compression(document, bars, log)
        else:
            report["compression"] = _with_stack(lambda d: bench_compression(d, bars, log), log)
    previous.write_text(json.dumps(report, indent=2) + "\n")
    (out / "contract.md").write_text(render_markdown(report))
    return report


def render_markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Data contract: measured costs",
        "",
        f"Measured {r['at']} on {r['machine']['cpus']} CPUs, Python {r['machine']['python']},"
        f" load average {r['load_average_at_start']} at the start (a shared machine: rates are"
        " lower bounds), by `harness bench contract`.",
        "",
        "## CSV files stream in constant memory",
        "",
        f"Measured {r.get('csv_memory_at', r['at'])}.",
        "",
        "Each run is a fresh process; peak RSS is its high-water mark. `read` is the",
        "reader and the contract alone; `ingest` adds the Tier 0 store (DuckDB, whose",
        "primary-key index grows with the rows stored, not with the file).",
        "",
        "| rows | file MB | mode | peak RSS MB | rows/s | rejected |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for row in r.get("csv_memory", []):
        lines.append(
            f"| {row['rows']:,} | {row['file_mb']} | {row['mode']} | {row['peak_rss_mb']} | "
            f"{row['rows_per_s']:,} | {row['rejected']:,} |"
        )
    if "compression" in r:
        lines += [
            "",
            "## Record compression (Kafka, acks=all)",
            "",
            "The same pre-encoded records (JSON batches of up to 500 bars) sent once per codec",
            "to a topic of their own (3 partitions, RF 1); bytes as the broker stores them.",
            "",
            "| compression | bars | broker bytes | bytes/bar | vs none | bars/s | rate vs none |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in r["compression"]:
            lines.append(
                f"| {row['compression']} | {row['bars']:,} | {row['broker_bytes']} | "
                f"{row['bytes_per_bar']} | {row.get('bytes_vs_none', '-')} | "
                f"{row['bars_per_s']:,} | {row.get('rate_vs_none', '-')} |"
            )
    return "\n".join(lines) + "\n"
