"""The bar contract on Tier 1: CSV → Kafka → PostgreSQL, corrections, dead letters in Kafka.

Every test uses its own symbols and consumer group, so tests sharing the
session's stack never see each other's bars in the counts they assert.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from backbone.bars import Bar, bar_to_dict, synthetic_bars
from backbone.contract import REASON_CODES, reason_code
from backbone.deadletter_queue import KafkaDeadLetters
from backbone.outputs import load_connections
from backbone.runtime import Backbone
from backbone.settings import KafkaConnectionSettings, load_settings
from backbone.store.timescale import TimescaleStore
from backbone.stream.codec import CONTENT_TYPE, SCHEMA_VERSION, encode_batch
from backbone.stream.producer import kafka_client_config
from backbone_infra.targets.local.provisioner import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
FAR_PAST = datetime(1900, 1, 1, tzinfo=UTC)
FAR = datetime(2100, 1, 1, tzinfo=UTC)
T0 = datetime(2024, 3, 4, tzinfo=UTC)
HEADER = "symbol,timeframe,ts,open,high,low,close,volume\n"


def unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(3).upper()}"


def open_tier1(stack: LocalStack, **contract: object) -> Backbone:
    document = load_connections(stack.outputs_path)
    bb = Backbone.open(
        tier="institutional",
        outputs=stack.outputs_path,
        settings=load_settings(document, contract=contract),
        group_id=unique("backbone-contract-"),
        consumer_start="latest",
    )
    assert bb.consumer is not None and bb.consumer.wait_for_assignment()
    return bb


@pytest.fixture
def backbone(local_stack: LocalStack) -> Iterator[Backbone]:
    bb = open_tier1(local_stack)
    yield bb
    bb.close()


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    for name in ("BACKBONE_OUTPUTS", "BACKBONE_TIER", "BACKBONE_CONFIG"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "backbone", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def dead_letters_in_kafka(stack: LocalStack) -> int:
    assert stack.document.kafka is not None
    return KafkaDeadLetters(KafkaConnectionSettings.from_section(stack.document.kafka)).count()


# --- CSV through the CLI ------------------------------------------------------------------


def test_cli_csv_on_tier1_stores_only_what_the_contract_allows(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    s = unique("CSV")
    rows = [
        f"{s},1m,2024-01-02T10:00:00Z,1.1,1.2,1.0,1.1,100",  # stored
        f"{s},1m,2024-01-02T10:01:00Z,-1,-0.5,-2,-1,100",  # price_not_positive
        f"{s},1m,2024-01-02T10:04:00Z,1e308,1e308,1e308,1e308,1e308",  # price_above_bound
        f"{s},1m,2024-01-02T10:03:30Z,1.1,1.2,1.0,1.1,100",  # ts_misaligned
        f"{s},1d,2024-01-02T13:00:00Z,1.1,1.2,1.0,1.1,100",  # ts_misaligned
        f"{s},1m,9999-12-31T00:00:00Z,1.1,1.2,1.0,1.1,100",  # ts_in_future
        f"{s},1d,1970-01-01T00:00:00Z,1.1,1.2,1.0,1.1,100",  # ts_before_earliest
        f"{s.lower()} x; DROP TABLE bars;--,1m,2024-01-02T10:07:00Z,1.1,1.2,1.0,1.1,100",
        f"{s},1m,2024-01-02T10:00:00Z,1.1,1.2,1.0,1.1,100",  # duplicate
        f"{s},1m,2024-01-02T10:00:00Z,1.1,1.3,1.0,1.1,100",  # correction
    ]
    path = tmp_path / "bad.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + "\n".join(rows) + "\n").encode())
    before = dead_letters_in_kafka(local_stack)
    done = cli(
        "ingest", "--outputs", str(local_stack.outputs_path), "--csv", str(path), "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(done.stdout)
    assert r["tier"] == "institutional" and r["reconciles"]
    assert (r["records_in"], r["stored"], r["duplicates"], r["corrections"]) == (10, 1, 1, 1)
    assert r["dead_lettered"] == 7
    assert r["rejected_by_reason"] == {
        "price_above_bound": 1,
        "price_not_positive": 1,
        "symbol_invalid": 1,
        "ts_before_earliest": 1,
        "ts_in_future": 1,
        "ts_misaligned": 2,
    }
    assert dead_letters_in_kafka(local_stack) - before == 7
    with Backbone.open(tier="institutional", outputs=local_stack.outputs_path) as bb:
        assert bb.store.count(symbol=s) == 1
        (stored,) = bb.store.read(s, "1m", FAR_PAST, FAR)
        assert stored.high == 1.3  # the correction
        assert isinstance(bb.store, TimescaleStore)
        (audit,) = bb.store.revisions(s, "1m")
        assert (audit["revision"], audit["old_high"], audit["new_high"]) == (2, 1.2, 1.3)


def test_cli_refuses_a_wrong_header_on_tier1_with_exit_2(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    s = unique("HDR")
    path = tmp_path / "wrong.csv"
    path.write_text("sym,tf,time,o,h,l,c,v\n" + f"{s},1m,2024-01-02T10:00:00Z,1,1,1,1,1\n" * 1000)
    done = cli(
        "ingest", "--outputs", str(local_stack.outputs_path), "--csv", str(path), cwd=tmp_path
    )
    assert done.returncode == 2
    assert "lacks the required columns symbol, timeframe, ts" in done.stderr
    with Backbone.open(tier="institutional", outputs=local_stack.outputs_path) as bb:
        assert bb.store.count(symbol=s) == 0


# --- corrections -----------------------------------------------------------------------------


def test_corrections_become_revisions_in_postgresql(backbone: Backbone) -> None:
    s = unique("REV")
    bars = list(synthetic_bars([s], "1h", 20, start=T0))
    first = backbone.ingest(bars)
    assert (first.stored, first.reconciles) == (20, True)
    fix = dataclasses.replace(bars[5], low=bars[5].low - 0.001, source="csv")
    again = backbone.ingest([*bars[:5], fix, fix])
    assert (again.duplicates, again.corrections, again.stored) == (6, 1, 0)
    assert backbone.store.read(s, "1h", FAR_PAST, FAR)[5] == fix
    assert isinstance(backbone.store, TimescaleStore)
    (audit,) = backbone.store.revisions(s, "1h")
    assert (audit["old_low"], audit["new_low"], audit["source"]) == (bars[5].low, fix.low, "csv")


def test_under_refuse_a_correction_is_a_conflict_in_the_dead_letter_topic(
    local_stack: LocalStack,
) -> None:
    s = unique("REF")
    with open_tier1(local_stack, corrections="refuse") as bb:
        bars = list(synthetic_bars([s], "1m", 10, start=T0))
        bb.ingest(bars)
        before = dead_letters_in_kafka(local_stack)
        result = bb.ingest([dataclasses.replace(bars[2], close=bars[2].high)])
        assert (result.conflicts, result.stored, result.corrections) == (1, 0, 0)
        assert result.rejected_by_reason == {"correction_conflict": 1} and result.reconciles
        assert bb.store.read(s, "1m", FAR_PAST, FAR) == bars
    assert dead_letters_in_kafka(local_stack) - before == 1


def test_replay_resends_a_bar_corrected_after_it_was_streamed(backbone: Backbone) -> None:
    from backbone.replay import replay

    s = unique("RPC")
    bars = list(synthetic_bars([s], "15m", 30, start=T0))
    backbone.ingest(bars)  # streamed: the topic holds the first values
    assert isinstance(backbone.store, TimescaleStore) and backbone.producer is not None
    assert backbone.consumer is not None
    fix = dataclasses.replace(bars[7], high=bars[7].high + 0.01)
    # corrected in the store only (e.g. by a Tier 0 import), not through Kafka
    backbone.store.apply([fix])
    result = replay(
        backbone.store, backbone.producer, T0, T0 + timedelta(days=1), [s],
        contract=backbone.contract, scan=backbone.consumer.kafka,
    )  # fmt: skip
    assert (result.sent, result.corrections_resent, result.skipped) == (1, 1, 29)


# --- the record contract across producers -------------------------------------------------


def test_a_record_of_version_n_plus_1_goes_to_the_dead_letter_topic_and_can_be_found(
    local_stack: LocalStack, backbone: Backbone, tmp_path: Path
) -> None:
    kafka = local_stack.document.kafka
    assert kafka is not None and backbone.consumer is not None
    s = unique("V")
    record = encode_batch(list(synthetic_bars([s], "1m", 3, start=T0)))
    raw = KafkaProducer(
        **kafka_client_config(
            KafkaConnectionSettings.from_section(kafka), client_id="test-newer-producer"
        )
    )
    newer = [("schema-version", str(SCHEMA_VERSION + 1).encode()), ("content-type", b"x")]
    meta = raw.send(kafka.topic("intraday_bars"), key=record.key, value=record.value,
                    headers=newer).get(timeout=10)  # fmt: skip
    raw.close()
    stats = backbone.consumer.run_until({(meta.topic, meta.partition): meta.offset})
    assert (stats.records_in, stats.dead_lettered, stats.stored) == (1, 1, 0)
    assert stats.reasons == {"schema_version_unsupported": 1}
    assert backbone.store.count(symbol=s) == 0

    listed = cli(
        "dead-letters", "list", "--outputs", str(local_stack.outputs_path),
        "--reason", "schema_version_unsupported", "--limit", "1000", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-2000:]
    places = {p["where"]: p for p in json.loads(listed.stdout)["places"]}
    in_kafka = places[f"kafka:{kafka.topic('dead_letter')}"]
    origin = f"kafka:{meta.topic}/{meta.partition}@{meta.offset}"
    (ours,) = [e for e in in_kafka["latest"] if e["origin"] == origin]
    shown = cli(
        "dead-letters", "show", ours["id"], "--outputs", str(local_stack.outputs_path),
        "--json", cwd=tmp_path,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
    document = json.loads(shown.stdout)
    assert document["code"] == "schema_version_unsupported"
    assert json.loads(document["payload"]) == json.loads(record.value)

    # "after a fix" (here: the bars are fine, the header was the problem): re-submit it
    replayed = cli(
        "dead-letters", "replay", ours["id"], "--outputs", str(local_stack.outputs_path),
        "--json", cwd=tmp_path,
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert json.loads(replayed.stdout)["stored"] == 3
    status = cli("status", "--outputs", str(local_stack.outputs_path), "--json", cwd=tmp_path)
    counts = json.loads(status.stdout)["dead_letters"]
    assert counts[f"kafka:{kafka.topic('dead_letter')}"] >= 1
    assert "timescale:dead_letter" in counts


def test_records_from_another_producer_meet_the_contract(
    local_stack: LocalStack, backbone: Backbone
) -> None:
    kafka = local_stack.document.kafka
    assert kafka is not None and backbone.consumer is not None
    s = unique("OTH")
    good = bar_to_dict(next(synthetic_bars([s], "1m", 1, start=T0)))
    hostile = [
        good,
        {**good, "ts": "2100-01-01T00:00:00+00:00"},
        {**good, "ts": "2024-03-04T00:00:30+00:00"},
        {**good, "open": -1.0, "low": -2.0},
        {**good, "volume": 1e308},
        {**good, "extra": "field"},
    ]
    raw = KafkaProducer(
        **kafka_client_config(
            KafkaConnectionSettings.from_section(kafka), client_id="test-other-producer"
        )
    )
    headers = [("schema-version", b"1"), ("content-type", CONTENT_TYPE.encode())]
    value = json.dumps(hostile).encode()
    sent = raw.send(kafka.topic("intraday_bars"), key=s.encode(), value=value, headers=headers)
    meta = sent.get(timeout=10)
    raw.close()
    stats = backbone.consumer.run_until({(meta.topic, meta.partition): meta.offset})
    assert (stats.records_in, stats.stored, stats.dead_lettered) == (6, 1, 5)
    assert stats.reasons == {
        "price_not_positive": 1,
        "schema_violation": 1,
        "ts_in_future": 1,
        "ts_misaligned": 1,
        "volume_above_bound": 1,
    }


# --- properties: hostile bars through Kafka --------------------------------------------------

hostile_prices = st.one_of(
    st.floats(0.5, 2.0), st.sampled_from([math.nan, math.inf, -1.0, 0.0, 1e308])
)


@st.composite
def tier1_bars(draw: st.DrawFn, symbol: str) -> Bar:
    minute = draw(st.integers(0, 30))
    ts = draw(
        st.sampled_from(
            [T0 + timedelta(minutes=minute), T0 + timedelta(seconds=minute * 7 + 1), FAR]
        )
    )
    return Bar(
        draw(st.sampled_from([symbol, symbol.lower(), f"{symbol},X"])),
        "1m",
        ts,
        draw(hostile_prices),
        draw(hostile_prices),
        draw(hostile_prices),
        draw(hostile_prices),
        draw(st.one_of(st.floats(0, 1e6), st.sampled_from([-1.0, math.nan]))),
    )


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_bars_through_kafka_are_stored_or_refused_and_reconcile(
    backbone: Backbone, data: st.DataObject
) -> None:
    s = unique("P")
    batch = data.draw(st.lists(tier1_bars(s), min_size=1, max_size=40))
    result = backbone.ingest(batch)
    assert result.records_in == len(batch) and result.reconciles
    assert set(result.rejected_by_reason) <= set(REASON_CODES)
    stored = backbone.store.read(s, "1m", FAR_PAST, FAR)
    assert len(stored) == result.stored
    assert all(backbone.contract.check(b) is None for b in stored)
    assert all(reason_code(f"{c}: x") == c for c in result.rejected_by_reason)
