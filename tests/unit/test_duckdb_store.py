"""The Tier 0 store: DuckDB keeps one row per (symbol, timeframe, ts), no services needed."""

from __future__ import annotations

import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backbone.bars import Bar, synthetic_bars
from backbone.deadletter import DeadLetter
from backbone.store import BUCKET_ORIGIN, BarStore, DuckDBStore, StoreError, bucket_label

T0 = datetime(2024, 1, 1, tzinfo=UTC)
FAR = datetime(2100, 1, 1, tzinfo=UTC)
ORIGIN = datetime.fromisoformat(BUCKET_ORIGIN)


@st.composite
def bars(draw, symbols=("EURUSD", "USDJPY"), timeframes=("1m", "1h")):
    low = draw(st.integers(1, 1000)) / 100
    high = low + draw(st.integers(0, 100)) / 100
    return Bar(
        symbol=draw(st.sampled_from(symbols)),
        timeframe=draw(st.sampled_from(timeframes)),
        ts=T0 + timedelta(minutes=draw(st.integers(0, 600))),
        open=draw(st.sampled_from([low, high])),
        high=high,
        low=low,
        close=draw(st.sampled_from([low, high])),
        volume=float(draw(st.integers(0, 10_000))),
        source=draw(st.sampled_from(["live", "csv", "backfill"])),
    )


def first_write_wins(batches: list[list[Bar]]) -> dict[tuple[str, str, datetime], Bar]:
    model: dict[tuple[str, str, datetime], Bar] = {}
    for batch in batches:
        for bar in batch:
            model.setdefault(bar.key, bar)
    return model


@pytest.fixture
def store(tmp_path):
    with DuckDBStore(tmp_path / "bars.duckdb") as s:
        yield s


def test_it_is_a_bar_store(store):
    assert isinstance(store, BarStore)


def test_written_bars_read_back_equal_and_in_time_order(store):
    written = list(synthetic_bars(["EURUSD", "GBPUSD"], "5m", 100, seed=4))
    shuffled = random.Random(1).sample(written, len(written))
    assert store.write(shuffled) == 200
    got = store.read("EURUSD", "5m", T0, FAR)
    assert got == [b for b in written if b.symbol == "EURUSD"]
    assert [b.ts for b in got] == sorted(b.ts for b in got)


@settings(max_examples=40, deadline=None)
@given(batches=st.lists(st.lists(bars(), max_size=40), min_size=1, max_size=6))
def test_upserts_are_idempotent_whatever_the_duplicates_and_order(batches):
    model = first_write_wins(batches)
    with DuckDBStore(":memory:") as s:
        inserted = [s.write(batch) for batch in batches]
        # each call counts only what it added; together, every distinct key once
        assert sum(inserted) == len(model) == s.count()
        # writing everything again changes nothing
        assert sum(s.write(batch) for batch in batches) == 0
        stored = {b.key: b for b in s.snapshot(T0, FAR)}
    assert stored == model


@settings(max_examples=25, deadline=None)
@given(batch=st.lists(bars(), min_size=1, max_size=80), start=st.integers(0, 600))
def test_range_reads_are_half_open_and_ordered(batch, start):
    model = first_write_wins([batch])
    lo, hi = T0 + timedelta(minutes=start), T0 + timedelta(minutes=start + 90)
    with DuckDBStore(":memory:") as s:
        s.write(batch)
        for symbol in ("EURUSD", "USDJPY"):
            want = sorted(
                (b for b in model.values() if b.symbol == symbol and b.timeframe == "1m"),
                key=lambda b: b.ts,
            )
            assert s.read(symbol, "1m", lo, hi) == [b for b in want if lo <= b.ts < hi]
            assert s.latest(symbol, "1m") == (want[-1] if want else None)


def test_state_survives_reopening_the_file(tmp_path):
    path = tmp_path / "nested" / "bars.duckdb"
    written = list(synthetic_bars(["EURUSD"], "1h", 48))
    with DuckDBStore(path) as first:
        assert first.write(written) == 48
        first.write_dead_letters([DeadLetter("csv:x:3", "negative volume", b"raw")])
    with DuckDBStore(path) as again:
        assert again.read("EURUSD", "1h", T0, FAR) == written
        assert again.dead_letter_count() == 1
        assert again.write(written) == 0


def test_counts_filter_by_symbol_and_timeframe(store):
    store.write(list(synthetic_bars(["EURUSD", "USDJPY"], "1m", 30)))
    store.write(list(synthetic_bars(["EURUSD"], "1h", 7)))
    assert store.count() == 67
    assert store.count("EURUSD") == 37
    assert store.count(timeframe="1m") == 60
    assert store.count("USDJPY", "1h") == 0


def test_dead_letters_keep_origin_reason_and_bytes(store):
    items = [
        DeadLetter("kafka:market-data.intraday-bars/0@7", "high below low", b"{}"),
        DeadLetter("csv:in.csv:9", "undecodable bytes", b"\xff\x00\xfe"),
    ]
    store.write_dead_letters(items)
    store.write_dead_letters([])
    assert store.dead_letter_count() == 2
    assert store.dead_letters() == items


def expected_buckets(series: list[Bar], bucket: timedelta) -> list[tuple]:
    groups: dict[datetime, list[Bar]] = {}
    for bar in sorted(series, key=lambda b: b.ts):
        start = ORIGIN + ((bar.ts - ORIGIN) // bucket) * bucket
        groups.setdefault(start, []).append(bar)
    return [
        (
            start,
            g[0].open,
            max(b.high for b in g),
            min(b.low for b in g),
            g[-1].close,
            sum(b.volume for b in g),
        )
        for start, g in sorted(groups.items())
    ]


@pytest.mark.parametrize("bucket", [timedelta(minutes=15), timedelta(hours=1), timedelta(days=1)])
def test_bucketed_reads_aggregate_ohlcv(store, bucket):
    series = list(synthetic_bars(["EURUSD"], "1m", 3 * 24 * 60 // 2, seed=9))
    store.write(series)
    lo, hi = T0 + timedelta(hours=5), T0 + timedelta(days=1, hours=7)
    got = store.bucketed("EURUSD", "1m", bucket, lo, hi)
    want = expected_buckets([b for b in series if lo <= b.ts < hi], bucket)
    assert [(b.ts, b.open, b.high, b.low, b.close) for b in got] == [w[:5] for w in want]
    assert [b.volume for b in got] == pytest.approx([w[5] for w in want])
    assert {(b.timeframe, b.source) for b in got} == {(bucket_label(bucket), "aggregate")}


def test_snapshot_streams_every_bar_in_time_order_per_symbol(store):
    store.write(list(synthetic_bars(["EURUSD", "USDJPY", "GBPUSD"], "1m", 12_000)))
    got = list(store.snapshot(T0 + timedelta(hours=1), T0 + timedelta(days=5)))
    assert len(got) == 3 * (5 * 1440 - 60)  # 12,000 minutes run past the end
    keys = [(b.ts, b.symbol, b.timeframe) for b in got]
    assert keys == sorted(keys)
    only = list(store.snapshot(T0, FAR, symbols=["USDJPY"]))
    assert {b.symbol for b in only} == {"USDJPY"} and len(only) == 12_000


def test_a_write_during_a_snapshot_does_not_block(store):
    store.write(list(synthetic_bars(["EURUSD"], "1m", 25_000)))
    stream = store.snapshot(T0, FAR)
    first = next(stream)
    assert store.write(list(synthetic_bars(["USDCHF"], "1m", 10))) == 10
    assert first.ts == T0 and sum(1 for _ in stream) == 24_999


def test_refusals_say_what_to_fix(store):
    with pytest.raises(ValueError, match="timezone-aware"):
        store.read("EURUSD", "1m", datetime(2024, 1, 1), FAR)
    with pytest.raises(ValueError, match="before start"):
        store.read("EURUSD", "1m", FAR, T0)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.count()


def test_a_second_writer_on_the_same_file_is_refused_with_advice(tmp_path):
    # DuckDB locks a file per process; inside one process a second handle is allowed,
    # so this runs the second opener in a child process.
    path = tmp_path / "bars.duckdb"
    with DuckDBStore(path):
        code = (
            "import sys; from backbone.store import DuckDBStore, StoreError\n"
            "try:\n    DuckDBStore(sys.argv[1])\nexcept StoreError as e:\n"
            "    print(e); sys.exit(3)\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60
        )
    assert proc.returncode == 3, proc.stderr
    assert "another process may hold it" in proc.stdout
