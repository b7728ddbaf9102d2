"""Our producer against Kafka's own ``ProducerPerformance``, both warmed, both timed alike.

Fairness is the point of this module (an earlier page compared a one-second,
cold JVM run with a warm Python loop):

* the same broker, the same partition count, the same record size (the mean size
  of our encoded bar records), ``acks=all``, idempotence on, the same
  ``linger.ms``/``batch.size``/in-flight limit, no compression;
* both sides first send for a warm-up phase that is thrown away, then are
  measured over at least ``measure_s`` seconds (15 in the full run).

Kafka 4.1's ``ProducerPerformance`` has no warm-up option (``--warmup-records``
came later), so its warm-up is discarded the other way: it prints one window
line every 5 s, and the windows that end inside the warm-up are dropped. Ours
sends already-encoded records through :class:`~backbone.stream.producer.BarProducer`
(encoding bars is measured in the end-to-end path, and profiled).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import cycle
from pathlib import Path
from typing import Any

from backbone.bars import synthetic_bars
from backbone.connections import ConnectionsDocument, KafkaConnection
from backbone.job_logins import harness_section
from backbone.settings import KafkaConnectionSettings
from backbone.stream.codec import BarRecord, batch_records
from backbone.stream.producer import BarProducer, ProducerTuning, kafka_client_config
from backbone_harness.bench.measure import Log, profiled
from backbone_infra.render.kafka import client_properties
from backbone_infra.targets.local.kafka import kafka_libs_dir

__all__ = ["PERF_TOPIC", "bench_kafka_tool", "bench_our_producer", "sample_records"]

#: The topic ProducerPerformance writes to (made with the bars topic's partitions).
PERF_TOPIC = "bench.producer-perf"
#: ProducerPerformance prints one window line this often (fixed in Kafka 4.1).
_WINDOW_S = 5.0
_WINDOW = re.compile(
    r"^(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), "
    r"([\d.]+) ms avg latency, ([\d.]+) ms max latency\.?$"
)


def sample_records(symbols: Sequence[str], bars: int) -> list[BarRecord]:
    """Encoded bar records as the producer makes them (one symbol per record)."""
    gen = synthetic_bars(
        symbols, "1m", bars // len(symbols), start=datetime(2003, 1, 1, tzinfo=UTC)
    )
    return list(batch_records(gen, max_bars=ProducerTuning().bars_per_record))


def _send_for(
    producer: BarProducer, records: Iterator[BarRecord], seconds: float
) -> tuple[int, int, int, float]:
    """Send until ``seconds`` have passed, then wait for every ack: (records, bars, bytes, s)."""
    n = bars = size = 0
    began = time.perf_counter()
    stop = began + seconds
    while time.perf_counter() < stop:
        for _ in range(16):  # read the clock every few sends only
            record = next(records)
            producer.send_record(record)
            n += 1
            bars += record.bars
            size += len(record.value)
    producer.flush()
    return n, bars, size, time.perf_counter() - began


def bench_our_producer(
    doc: ConnectionsDocument, records: list[BarRecord], warmup_s: float, measure_s: float, log: Log
) -> dict[str, Any]:
    """:class:`BarProducer` sending pre-encoded records: warm-up discarded, then measured."""
    producer = BarProducer(
        KafkaConnectionSettings.from_section(harness_section(doc, "producer")),
        client_id="bench-producer",
    )
    try:
        stream = cycle(records)
        _send_for(producer, stream, warmup_s)
        n, bars, size, seconds = _send_for(producer, stream, measure_s)
        # A short profiled pass (not timed) to name where the time goes.
        _, hot = profiled(lambda: _send_for(producer, stream, min(3.0, measure_s)))
        idempotent = producer.idempotent
    finally:
        producer.close()
    out = {
        "record_bytes": round(size / n),
        "warmup_s": warmup_s,
        "measured_s": round(seconds, 2),
        "records": n,
        "records_per_s": round(n / seconds, 1),
        "bars_per_s": round(bars / seconds),
        "mb_per_s": round(size / seconds / 1e6, 2),
        "acks": "all",
        "idempotent": idempotent,
        "profile": hot,
    }
    log(f"our producer: {out['mb_per_s']} MB/s over {seconds:.1f} s after {warmup_s:g} s warm-up")
    return out


def _ensure_topic(kafka: KafkaConnection, partitions: int, replication: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(
        **kafka_client_config(KafkaConnectionSettings.from_section(kafka), client_id="bench-admin")
    )
    try:
        if PERF_TOPIC not in admin.list_topics():
            admin.create_topics([NewTopic(PERF_TOPIC, partitions, replication)])
    finally:
        admin.close()


def _drop_topic(kafka: KafkaConnection) -> None:
    """The tool's gigabytes are of no further use; free the broker's disk."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(
        **kafka_client_config(KafkaConnectionSettings.from_section(kafka), client_id="bench-admin")
    )
    try:
        admin.delete_topics([PERF_TOPIC])
    except Exception:  # best effort: the stack is taken down anyway
        pass
    finally:
        admin.close()


@contextmanager
def _client_properties(kafka: KafkaConnection) -> Iterator[Path]:
    """The SASL settings in a 0600 file that is gone afterwards (never on a command line)."""
    assert kafka.password is not None
    with tempfile.TemporaryDirectory(prefix="backbone-perf-") as tmp:
        props = Path(tmp) / "client.properties"
        fd = os.open(props, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            tls = kafka.security_protocol.endswith("SSL")
            # The brokers' own client settings (the CLI tools' renderer):
            # SASL and, with TLS, the stack's CA as a PEM truststore.
            fh.write(
                f"bootstrap.servers={','.join(kafka.bootstrap_servers)}\n"
                + client_properties(
                    mechanism=str(kafka.sasl_mechanism),
                    username=str(kafka.username),
                    password=kafka.password.get_secret_value(),
                    truststore=kafka.ssl_cafile if tls else None,
                )
            )
        yield props


def _windows(
    proc: subprocess.Popen[str], warmup_s: float, measure_s: float
) -> tuple[list[tuple[float, ...]], list[str]]:
    """Read window lines until the measured windows cover ``measure_s``; (windows, all lines)."""
    assert proc.stdout is not None
    elapsed = measured = 0.0
    kept: list[tuple[float, ...]] = []
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        match = _WINDOW.match(line.strip())
        if match is None:
            continue
        n, rps, mbps, avg, worst = (float(g) for g in match.groups())
        seconds = n / rps if rps else _WINDOW_S
        elapsed += seconds
        if elapsed - seconds < warmup_s:  # this window began inside the warm-up
            continue
        kept.append((n, seconds, mbps * seconds, avg, worst))
        measured += seconds
        if measured >= measure_s:
            break
    return kept, lines


def bench_kafka_tool(
    doc: ConnectionsDocument,
    record_size: int,
    partitions: int,
    warmup_s: float,
    measure_s: float,
    log: Log,
) -> dict[str, Any]:
    """Kafka's ``ProducerPerformance`` with our record size and producer settings."""
    kafka = doc.kafka
    assert kafka is not None
    _ensure_topic(kafka, partitions, 1)
    tuning = ProducerTuning()
    java = shutil.which("java") or "java"
    try:
        with _client_properties(kafka) as props:
            cmd = [
                java, "-Xmx512m", "-cp", f"{kafka_libs_dir()}/*",
                "org.apache.kafka.tools.ProducerPerformance",
                "--topic", PERF_TOPIC, "--num-records", "100000000",
                "--record-size", str(record_size), "--throughput", "-1",
                "--producer.config", str(props),
                "--producer-props", "acks=all", "enable.idempotence=true",
                f"linger.ms={tuning.linger_ms}", f"batch.size={tuning.batch_size}",
                "max.in.flight.requests.per.connection=5", "compression.type=none",
            ]  # fmt: skip
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                kept, lines = _windows(proc, warmup_s, measure_s)
            finally:
                proc.terminate()
                try:
                    _, err = proc.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    _, err = proc.communicate()
    finally:
        _drop_topic(kafka)
    if not kept:
        raise RuntimeError(
            f"ProducerPerformance printed no window after the warm-up: "
            f"{' / '.join(lines[-3:]) or err[-400:]}"
        )
    records = sum(w[0] for w in kept)
    seconds = sum(w[1] for w in kept)
    megabytes = sum(w[2] for w in kept)
    out = {
        "record_bytes": record_size,
        "warmup_s": warmup_s,
        "measured_s": round(seconds, 2),
        "records": int(records),
        "records_per_s": round(records / seconds, 1),
        "mb_per_s": round(megabytes / seconds, 2),
        "avg_latency_ms": round(sum(w[3] * w[0] for w in kept) / records, 1),
        "max_latency_ms": max(w[4] for w in kept),
        "acks": "all",
        "idempotent": True,
        "windows": [line for line in lines if _WINDOW.match(line.strip())],
    }
    log(
        f"ProducerPerformance: {out['mb_per_s']} MB/s over {seconds:.1f} s "
        f"after {warmup_s:g} s warm-up"
    )
    return out
