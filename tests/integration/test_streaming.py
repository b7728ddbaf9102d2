"""Kafka streaming on a real local stack: producer → Kafka → consumer → store → cache → bus.

Every test uses its own symbols and consumer group, so tests sharing the session's
stack never see each other's bars in the counts they assert.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from backbone.bars import Bar, bar_to_dict, synthetic_bars
from backbone.runtime import Backbone
from backbone.settings import KafkaConnectionSettings, TimescaleConnectionSettings
from backbone.store.timescale import TimescaleStore
from backbone.stream.bridge import BUS_TOPIC_DAILY, BUS_TOPIC_INTRADAY, BarsEvent
from backbone.stream.codec import (
    CONTENT_TYPE,
    HEADER_BACKFILL,
    HEADER_IDEMPOTENCY_KEY,
    HEADER_REASON,
    decode_record,
    header,
)
from backbone.stream.consumer import CRASH_POINT_ENV, BarConsumer
from backbone.stream.producer import BarProducer, kafka_client_config
from backbone_infra.targets.local.provisioner import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
FAR_PAST = datetime(1990, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


def unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(3).upper()}"


def bars_for(symbols: list[str], timeframe: str, count: int, **kw: Any) -> list[Bar]:
    return list(synthetic_bars(symbols, timeframe, count, seed=hash(symbols[0]) % 1000, **kw))


@pytest.fixture
def backbone(local_stack: LocalStack) -> Iterator[Backbone]:
    """Tier 1 runtime whose fresh consumer group starts at the log end."""
    bb = Backbone.open(
        tier="institutional",
        outputs=local_stack.outputs_path,
        group_id=unique("backbone-test-"),
        consumer_start="latest",
    )
    assert bb.consumer is not None
    assert bb.consumer.wait_for_assignment(), "the consumer was assigned no partitions"
    yield bb
    bb.close()


def kafka_settings(stack: LocalStack) -> KafkaConnectionSettings:
    """The client settings for the stack's Kafka section (every field of it)."""
    assert stack.document.kafka is not None
    return KafkaConnectionSettings.from_section(stack.document.kafka)


def read_topic(stack: LocalStack, logical: str, since: dict[TopicPartition, int]) -> list[Any]:
    """Every record of a topic from the given offsets (default 0) to its current end."""
    kafka = kafka_settings(stack)
    topic = kafka.topic(logical)
    consumer = KafkaConsumer(**kafka_client_config(kafka, client_id="test-reader"))
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        ends = consumer.end_offsets(parts)
        for tp in parts:
            consumer.seek(tp, since.get(tp, 0))
        out: list[Any] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            assert time.monotonic() < deadline, "reading the topic took over 30 s"
            for records in consumer.poll(timeout_ms=200).values():
                out.extend(
                    r for r in records if r.offset < ends[TopicPartition(r.topic, r.partition)]
                )
        return out
    finally:
        consumer.close()


def timescale_store(stack: LocalStack) -> TimescaleStore:
    timescale = stack.document.timescale
    assert timescale is not None
    return TimescaleStore(TimescaleConnectionSettings.from_section(timescale))


def end_offsets(stack: LocalStack, logical: str) -> dict[TopicPartition, int]:
    kafka = kafka_settings(stack)
    consumer = KafkaConsumer(**kafka_client_config(kafka, client_id="test-ends"))
    try:
        topic = kafka.topic(logical)
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return dict(consumer.end_offsets(parts))
    finally:
        consumer.close()


# --- the client and the broker ---------------------------------------------------


def test_kafka_python_negotiates_an_idempotent_producer_with_the_4x_broker(
    local_stack: LocalStack,
) -> None:
    kafka = kafka_settings(local_stack)
    producer = BarProducer(kafka)
    try:
        assert producer.api_version >= (4, 0), producer.api_version
        assert producer.idempotent
        assert producer._producer.config["acks"] == -1
    finally:
        producer.close()


# --- end to end --------------------------------------------------------------------


def test_ingest_flows_through_kafka_to_store_cache_and_bus(backbone: Backbone) -> None:
    symbols = [unique("E"), unique("E")]
    intraday: list[BarsEvent] = []
    daily: list[BarsEvent] = []
    backbone.bus.subscribe(BUS_TOPIC_INTRADAY, intraday.append)
    backbone.bus.subscribe(BUS_TOPIC_DAILY, daily.append)
    minute = bars_for(symbols, "1m", 600)
    days = bars_for(symbols[:1], "1d", 20)

    result = backbone.ingest(minute + days)

    assert (result.records_in, result.stored, result.dead_lettered, result.duplicates) == (
        1220,
        1220,
        0,
        0,
    )
    assert result.tier == "institutional"
    for symbol in symbols:
        assert backbone.read(symbol, "1m", FAR_PAST, FAR_FUTURE) == [
            b for b in minute if b.symbol == symbol
        ]
    assert backbone.latest(symbols[0], "1d") == days[-1]
    assert backbone.latest(symbols[0], "1d") == days[-1]
    assert backbone.cache.stats().hits >= 1
    assert sorted((b for e in intraday for b in e.bars), key=lambda b: b.key) == sorted(
        minute, key=lambda b: b.key
    )
    assert [b for e in daily for b in e.bars] == days
    assert all(e.tier == "institutional" for e in intraday + daily)

    health = backbone.health(symbols=symbols, timeframes=["1m"])
    lags = health["consumer"]["lag"]
    intraday_parts = {f"market-data.intraday-bars/{p}" for p in range(3)}
    assert intraday_parts <= set(lags), lags
    assert set(lags.values()) == {0}
    series = {(s["symbol"], s["timeframe"]) for s in health["series"]}
    assert {(s, "1m") for s in symbols} <= series
    for partition in range(3):
        lag = backbone.telemetry.value(
            "backbone_consumer_lag",
            topic="market-data.intraday-bars",
            partition=str(partition),
            group=backbone.consumer.group_id,  # type: ignore[union-attr]
        )
        assert lag == 0


def test_replayed_duplicates_and_out_of_order_bars_are_absorbed(backbone: Backbone) -> None:
    symbol = unique("O")
    bars = bars_for([symbol], "5m", 300)
    first = backbone.ingest(list(reversed(bars[:200])))
    again = backbone.ingest(bars)
    assert (first.stored, first.duplicates) == (200, 0)
    assert (again.records_in, again.stored, again.duplicates) == (300, 100, 200)
    assert backbone.read(symbol, "5m", FAR_PAST, FAR_FUTURE) == bars


def test_malformed_records_go_to_the_dead_letter_topic_with_reasons(
    local_stack: LocalStack, backbone: Backbone
) -> None:
    kafka = kafka_settings(local_stack)
    symbol = unique("D")
    good, *_ = bars_for([symbol], "1m", 1)
    nan_bar = {**bar_to_dict(good), "ts": "2030-01-01T00:00:00+00:00", "close": float("nan")}
    dl_since = end_offsets(local_stack, "dead_letter")
    raw = KafkaProducer(**kafka_client_config(kafka, client_id="test-hostile"))
    topic = kafka.topic("intraday_bars")
    v1 = [("schema-version", b"1"), ("content-type", CONTENT_TYPE.encode())]
    sends = [
        raw.send(topic, key=symbol.encode(), value=b"\xff\xfenot json", headers=v1),
        raw.send(topic, key=symbol.encode(), value=b"[]", headers=[("schema-version", b"9")]),
        raw.send(
            topic,
            key=symbol.encode(),
            value=json.dumps([bar_to_dict(good), nan_bar]).encode(),
            headers=v1,
        ),
    ]
    raw.flush()
    metas = [f.get(timeout=10) for f in sends]
    raw.close()
    targets = {(m.topic, m.partition): m.offset for m in metas}

    stats = backbone.consumer.run_until(targets, timeout_s=60)  # type: ignore[union-attr]

    assert (stats.records_in, stats.stored, stats.dead_lettered) == (4, 1, 3)
    assert backbone.read(symbol, "1m", FAR_PAST, FAR_FUTURE) == [good]
    letters = [r for r in read_topic(local_stack, "dead_letter", dl_since) if r.key]
    ours = {
        m.offset: [r for r in letters if r.key.decode().endswith(f"/{m.partition}@{m.offset}")]
        for m in metas
    }
    reasons = {
        off: sorted(header(r.headers, HEADER_REASON).decode() for r in rs)
        for off, rs in ours.items()
    }
    undecodable, unknown_version, nan_batch = (reasons[m.offset] for m in metas)
    assert len(undecodable) == 1 and undecodable[0].startswith("record_undecodable: ")
    assert len(unknown_version) == 1
    assert unknown_version[0].startswith("schema_version_unsupported: schema-version 9 is unknown")
    assert len(nan_batch) == 1 and nan_batch[0].startswith("price_not_finite: close is nan")
    assert ours[metas[0].offset][0].value == b"\xff\xfenot json"


# --- offsets only after the store commit ------------------------------------------


def _consume_process(stack: LocalStack, group: str, *extra: str, crash: bool) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    env.pop(CRASH_POINT_ENV, None)
    if crash:
        env[CRASH_POINT_ENV] = "after-store-commit"
    return subprocess.Popen(
        [sys.executable, "-m", "backbone", "consume", "--outputs", str(stack.outputs_path),
         "--group", group, "--json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip


def _wait_ready(proc: subprocess.Popen) -> None:
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if line.startswith("consuming:"):
            return
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"the consumer process never became ready (exit {proc.poll()})")


def test_a_consumer_killed_between_store_commit_and_offset_commit_loses_and_duplicates_nothing(
    local_stack: LocalStack,
) -> None:
    kafka = kafka_settings(local_stack)
    symbol, group = unique("K"), unique("backbone-crash-")
    bars = bars_for([symbol], "1m", 400)

    crashing = _consume_process(local_stack, group, "--start", "latest", crash=True)
    try:
        _wait_ready(crashing)
        before = end_offsets(local_stack, "intraday_bars")
        producer = BarProducer(kafka)
        producer.send_bars(bars)
        acked = producer.flush()
        producer.close()
        crashing.wait(timeout=60)
    finally:
        if crashing.poll() is None:
            crashing.kill()
            crashing.wait()
    assert crashing.returncode == -signal.SIGKILL, "the crash hook did not fire"

    store = timescale_store(local_stack)
    stored_before_restart = store.count(symbol=symbol)
    checker = KafkaConsumer(**kafka_client_config(kafka, client_id="t"), group_id=group)
    committed = {tp: checker.committed(TopicPartition(*tp)) for tp in acked}
    checker.close()
    assert stored_before_restart > 0, "the store commit did not happen before the kill"
    # The member committed no offset past the group's start (it pins the start it
    # began at, `latest`, when the group lets it): what it stored is still ahead.
    assert all(c is None or c <= before[TopicPartition(*tp)] for tp, c in committed.items()), (
        f"offsets past the stored records were committed: {committed} (log ends before: {before})"
    )

    restarted = _consume_process(local_stack, group, "--idle-timeout", "3", crash=False)
    out, err = restarted.communicate(timeout=120)
    assert restarted.returncode == 0, err[-2000:]
    report = json.loads(out)
    assert report["reconciles"]
    assert report["duplicates"] >= stored_before_restart, "nothing was redelivered"

    try:
        assert store.count(symbol=symbol) == len(bars)
        assert store.read(symbol, "1m", FAR_PAST, FAR_FUTURE) == bars
    finally:
        store.close()


def test_a_group_that_started_at_latest_keeps_that_start_for_its_next_member(
    local_stack: LocalStack,
) -> None:
    # A member given a partition it receives nothing on commits nothing there; the
    # group's start must not live only in that member, or the next one (another
    # process, `earliest` by default) re-reads the whole retained log.
    kafka = kafka_settings(local_stack)
    earlier = unique("E")
    producer = BarProducer(kafka)
    producer.send_bars(bars_for([earlier], "1m", 50))
    producer.flush()
    producer.close()
    group = unique("backbone-pin-")
    store = timescale_store(local_stack)
    try:
        first = BarConsumer(
            kafka, store, group_id=group, topics=("intraday_bars",), start_at="latest"
        )
        try:
            assert first.wait_for_assignment(60), "the first member got no partitions"
        finally:
            first.close()
        second = BarConsumer(kafka, store, group_id=group, topics=("intraday_bars",))
        try:
            moved = second.catch_up(timeout_s=60)
        finally:
            second.close()
        assert moved.records_in == 0, f"the next member re-read {moved.records_in} records"
        assert store.count(symbol=earlier) == 0
    finally:
        store.close()


# --- replay ------------------------------------------------------------------------


def test_replay_backfills_a_window_in_symbol_order_and_a_second_replay_adds_nothing(
    local_stack: LocalStack,
) -> None:
    from backbone.replay import replay

    symbols = [unique("R"), unique("R")]
    bars = bars_for(symbols, "15m", 200)
    start, end = bars[40].ts, bars[-1].ts + timedelta(minutes=15)
    window = [b for b in bars if start <= b.ts < end]
    already_live = [b for b in window if b.symbol == symbols[0]][:10]
    since = end_offsets(local_stack, "intraday_bars")
    with Backbone.open(tier="institutional", outputs=local_stack.outputs_path) as bb:
        assert bb.store.write(bars) == len(bars)  # history that never went through Kafka
        assert bb.producer is not None and bb.consumer is not None
        bb.producer.send_bars(already_live)
        bb.producer.flush()

        # The writer sends; the consumer's login scans (the writer may not read).
        scan = bb.consumer.kafka
        first = replay(bb.store, bb.producer, start, end, symbols, scan=scan)
        second = replay(bb.store, bb.producer, start, end, symbols, scan=scan)

    assert first.present == len(already_live)
    assert (first.sent, first.skipped) == (len(window) - len(already_live), len(already_live))
    assert (second.sent, second.skipped) == (0, len(window))

    records = [r for r in read_topic(local_stack, "intraday_bars", since) if r.key]
    backfill = [r for r in records if header(r.headers, HEADER_BACKFILL) == first.run_id.encode()]
    assert backfill and all(header(r.headers, HEADER_IDEMPOTENCY_KEY) for r in backfill)
    assert not [r for r in records if header(r.headers, HEADER_BACKFILL) == second.run_id.encode()]
    for symbol in symbols:
        mine = sorted((r for r in backfill if r.key == symbol.encode()), key=lambda r: r.offset)
        assert len({r.partition for r in mine}) == 1, "a symbol's records spread over partitions"
        got = [b for r in mine for b in decode_record(r.value, r.headers, origin="t").bars]
        expected = [b for b in window if b.symbol == symbol and b not in already_live]
        assert got == expected  # every missing bar once, in time order


# --- CLI -----------------------------------------------------------------------------


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore", **(env or {})}
    for name in ("BACKBONE_OUTPUTS", "BACKBONE_TIER"):
        if env is None or name not in env:
            full_env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "backbone", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_cli_ingest_on_bootstrap_prints_reconciled_json(tmp_path: Path) -> None:
    done = run_cli("ingest", "--tier", "bootstrap", "--bars", "100", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["tier"] == "bootstrap"
    assert result["source"].startswith("synthetic")
    assert (result["records_in"], result["stored"], result["reconciles"]) == (400, 400, True)


def test_cli_ingest_on_the_local_stack(local_stack: LocalStack, tmp_path: Path) -> None:
    symbol = unique("C")
    done = run_cli(
        "ingest", "--outputs", str(local_stack.outputs_path), "--symbols", symbol,
        "--bars", "250", "--timeframe", "1h", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["tier"] == "institutional"
    assert (result["records_in"], result["stored"], result["reconciles"]) == (250, 250, True)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["ingest", "--bogus"], "No such option: --bogus"),
        (["ingest", "--bars", "lots"], "Invalid value for '--bars'"),
        (["ingest", "--bars", "0"], "--bars must be at least 1"),
        (["ingest", "--tier", "gold"], "--tier is 'gold'; use one of bootstrap, institutional"),
        (["ingest", "--timeframe", "2w"], "--timeframe '2w' is unknown"),
        (["ingest", "--symbols", "EURUSD,,GBPUSD"], "--symbols 'EURUSD,,GBPUSD' has an empty"),
        (["ingest", "--csv", "missing.csv"], "--csv missing.csv does not exist"),
        (["ingest", "--outputs", "nope.json"], "--outputs nope.json does not exist"),
        (["replay", "--from", "yesterday", "--to", "2024-01-02"], "is not an ISO-8601 time"),
        (["replay", "--from", "2024-02-01", "--to", "2024-01-01"], "must be after --from"),
        (["replay", "--to", "2024-01-01"], "Missing option '--from'"),
        (["replay", "--tier", "bootstrap", "--from", "2024-01-01", "--to", "2024-02-01"],
         "only the institutional tier has"),
        (["serve-metrics", "--port", "70000"], "--port 70000 is not a TCP port"),
    ],
)  # fmt: skip
def test_cli_bad_input_is_one_helpful_line_and_exit_code_2(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert expected in lines[0]
    assert done.stdout == ""


def test_cli_serve_metrics_exposes_freshness_of_stored_series(tmp_path: Path) -> None:
    import urllib.request

    ingest = run_cli("ingest", "--tier", "bootstrap", "--symbols", "EURUSD", "--bars", "10",
                     "--timeframe", "1d", "--json", cwd=tmp_path)  # fmt: skip
    assert ingest.returncode == 0, ingest.stderr
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    env.pop("BACKBONE_OUTPUTS", None)
    env.pop("BACKBONE_TIER", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "backbone", "serve-metrics", "--tier", "bootstrap", "--port", "0",
         "--symbols", "EURUSD", "--interval", "0.5", "--duration", "20"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
        deadline = time.monotonic() + 15
        body = ""
        while time.monotonic() < deadline and "EURUSD" not in body:
            time.sleep(0.3)
            body = urllib.request.urlopen(url, timeout=5).read().decode()
        line = next(
            x for x in body.splitlines()
            if x.startswith('backbone_ingest_freshness_seconds{symbol="EURUSD",timeframe="1d"}')
        )  # fmt: skip
        latest = datetime(2024, 1, 10, tzinfo=UTC)  # 10 synthetic daily bars from 2024-01-01
        expected = (datetime.now(UTC) - latest).total_seconds()
        assert abs(float(line.split()[-1]) - expected) < 120
    finally:
        proc.terminate()
        proc.wait(timeout=30)
