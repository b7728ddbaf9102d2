"""Bars: the synthetic generator, the CSV reader, and the rules every bar obeys."""

from __future__ import annotations

import itertools
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backbone.bars import (
    FX_SYMBOLS,
    SYNTHETIC_START,
    TIMEFRAMES,
    Bar,
    bar_problem,
    bar_to_dict,
    read_csv_bars,
    reject_bar,
    synthetic_bars,
    timeframe_delta,
)
from backbone.deadletter import DeadLetter, RejectedRecord

symbols = st.lists(
    st.sampled_from([*FX_SYMBOLS, "XAUUSD", "BTCUSD"]), min_size=1, max_size=4, unique=True
)
timeframes = st.sampled_from(sorted(TIMEFRAMES))
seeds = st.integers(min_value=0, max_value=2**32)


# --- synthetic generator ----------------------------------------------------------


@given(symbols=symbols, timeframe=timeframes, count=st.integers(0, 300), seed=seeds)
def test_synthetic_bars_always_obey_every_rule(symbols, timeframe, count, seed):
    bars = list(synthetic_bars(symbols, timeframe, count, seed=seed))
    assert len(bars) == count * len(symbols)
    for bar in bars:
        assert bar_problem(bar) is None, bar
        assert bar.source == "synthetic"
        assert bar.timeframe == timeframe
        assert bar.low > 0


@given(symbols=symbols, timeframe=timeframes, seed=seeds)
def test_synthetic_bars_are_deterministic_per_seed(symbols, timeframe, seed):
    first = list(synthetic_bars(symbols, timeframe, 50, seed=seed))
    again = list(synthetic_bars(symbols, timeframe, 50, seed=seed))
    other = list(synthetic_bars(symbols, timeframe, 50, seed=seed + 1))
    assert first == again
    assert first != other


def test_a_symbols_series_does_not_depend_on_the_other_symbols():
    alone = list(synthetic_bars(["EURUSD"], "5m", 100, seed=3))
    mixed = list(synthetic_bars(["USDJPY", "EURUSD"], "5m", 100, seed=3))
    assert alone == [b for b in mixed if b.symbol == "EURUSD"]


@given(symbols=symbols, timeframe=timeframes, count=st.integers(1, 100))
def test_synthetic_bars_come_time_major_with_one_step_per_round(symbols, timeframe, count):
    start = datetime(2025, 3, 1, 12, tzinfo=UTC)
    bars = list(synthetic_bars(symbols, timeframe, count, start=start))
    step = timeframe_delta(timeframe)
    rounds = [bars[i : i + len(symbols)] for i in range(0, len(bars), len(symbols))]
    for i, round_ in enumerate(rounds):
        assert [b.symbol for b in round_] == symbols
        assert {b.ts for b in round_} == {start + i * step}


def test_each_bar_opens_at_the_previous_close():
    bars = list(synthetic_bars(["GBPUSD"], "1m", 500, seed=11))
    assert all(b.open == prev.close for prev, b in itertools.pairwise(bars))
    # a random walk moves
    assert len({b.close for b in bars}) > 100


def test_jpy_pairs_are_quoted_to_three_decimals_and_others_to_five():
    for bar in itertools.islice(synthetic_bars(["USDJPY", "EURUSD"], "1h", 200), 400):
        digits = 3 if "JPY" in bar.symbol else 5
        for price in (bar.open, bar.high, bar.low, bar.close):
            assert round(price, digits) == price


def test_long_daily_series_stay_near_realistic_fx_levels():
    bars = list(synthetic_bars(["EURUSD"], "1d", 20_000, seed=1))
    assert min(b.low for b in bars) > 0.4 and max(b.high for b in bars) < 3.0


def test_synthetic_bars_default_start_and_refusals():
    first = next(synthetic_bars(["EURUSD"], "1d", 1))
    assert first.ts == SYNTHETIC_START
    with pytest.raises(ValueError, match="unknown timeframe '2m'"):
        list(synthetic_bars(["EURUSD"], "2m", 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        list(synthetic_bars(["EURUSD"], "1m", 1, start=datetime(2024, 1, 1)))
    with pytest.raises(ValueError, match="non-empty symbol"):
        list(synthetic_bars([], "1m", 1))


# --- hostile bars: always a reason, never an exception ----------------------------

finite = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)
hostile_float = st.one_of(
    finite,
    st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, -0.0, 1e308, -1e308]),
    st.floats(),
)
aware = st.datetimes(timezones=st.just(UTC))
any_ts = st.one_of(aware, st.datetimes(), st.datetimes(timezones=st.timezones()))


@st.composite
def valid_bars(draw):
    low = draw(finite)
    high = low + draw(st.floats(0, 1e3))
    return Bar(
        symbol=draw(st.sampled_from(FX_SYMBOLS)),
        timeframe=draw(timeframes),
        ts=draw(aware),
        open=draw(st.floats(low, high)),
        high=high,
        low=low,
        close=draw(st.floats(low, high)),
        volume=draw(st.floats(0, 1e9)),
    )


hostile_bars = st.builds(
    Bar,
    symbol=st.one_of(st.sampled_from(FX_SYMBOLS), st.text(max_size=8)),
    timeframe=st.one_of(timeframes, st.text(max_size=4)),
    ts=any_ts,
    open=hostile_float,
    high=hostile_float,
    low=hostile_float,
    close=hostile_float,
    volume=hostile_float,
    source=st.text(max_size=10),
)


@given(valid_bars())
def test_a_bar_within_every_rule_has_no_problem(bar):
    assert bar_problem(bar) is None


@given(hostile_bars)
def test_hostile_bars_get_a_reason_or_none_and_never_raise(bar):
    problem = bar_problem(bar)
    if problem is None:
        # then it really is valid: check the rules independently
        prices = (bar.open, bar.high, bar.low, bar.close)
        assert bar.symbol.strip() and bar.timeframe in TIMEFRAMES
        assert all(math.isfinite(p) for p in prices) and math.isfinite(bar.volume)
        assert bar.volume >= 0 and bar.low <= min(bar.open, bar.close)
        assert max(bar.open, bar.close) <= bar.high and bar.ts.tzinfo is not None
    else:
        assert isinstance(problem, str) and problem
        dead = reject_bar(bar, problem, origin="test")
        assert dead.reason == problem and dead.payload


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"open": math.nan}, "non-finite price"),
        ({"high": math.inf}, "non-finite price"),
        ({"low": -math.inf}, "non-finite price"),
        ({"volume": math.nan}, "non-finite volume"),
        ({"volume": -1.0}, "negative volume"),
        ({"high": 1.0, "low": 1.2, "open": 1.1, "close": 1.1}, "high below low"),
        ({"open": 1.3}, "open outside [low, high]"),
        ({"close": 0.9}, "close outside [low, high]"),
        ({"timeframe": "7m"}, "unknown timeframe '7m'"),
        ({"ts": datetime(2024, 1, 1)}, "timestamp without timezone"),
        ({"symbol": "  "}, "empty symbol"),
    ],
)
def test_each_rule_names_itself(change, reason):
    base = dict(
        symbol="EURUSD",
        timeframe="1m",
        ts=datetime(2024, 1, 1, tzinfo=UTC),
        open=1.1,
        high=1.2,
        low=1.0,
        close=1.15,
        volume=10.0,
    )
    assert bar_problem(Bar(**{**base, **change})) == reason


def test_a_rejected_bar_keeps_its_json_form_even_with_nan():
    bar = Bar("EURUSD", "1m", datetime(2024, 1, 1, tzinfo=UTC), math.nan, 1, 1, 1, 1)
    dead = reject_bar(bar, "non-finite price", origin="kafka:t/0@5")
    assert dead == DeadLetter("kafka:t/0@5", "non-finite price", dead.payload)
    assert json.loads(dead.payload)["symbol"] == "EURUSD"


# --- CSV ---------------------------------------------------------------------------

HEADER = "symbol,timeframe,ts,open,high,low,close,volume\n"


def _csv(tmp_path: Path, body: bytes, header: str = HEADER) -> list[Bar | RejectedRecord]:
    path = tmp_path / "bars.csv"
    path.write_bytes(header.encode() + body)
    return list(read_csv_bars(path))


def test_csv_rows_become_bars_labelled_csv(tmp_path):
    bars = list(synthetic_bars(["EURUSD", "USDJPY"], "15m", 20))
    lines = "".join(
        f"{b.symbol},{b.timeframe},{b.ts.isoformat()},{b.open},{b.high},{b.low},{b.close},"
        f"{b.volume}\n"
        for b in bars
    )
    got = _csv(tmp_path, lines.encode())
    assert got == [Bar(**{**bar_to_dict(b), "ts": b.ts, "source": "csv"}) for b in bars]


def test_csv_columns_may_come_in_any_order_with_extras(tmp_path):
    got = _csv(
        tmp_path,
        b"1.2,1.0,1.1,1.15,5,2024-01-01T00:00:00+02:00,1h,EURUSD,ignored\n",
        header="high,low,open,close,volume,ts,timeframe,symbol,note\n",
    )
    assert got == [
        Bar("EURUSD", "1h", datetime(2023, 12, 31, 22, tzinfo=UTC), 1.1, 1.2, 1.0, 1.15, 5.0, "csv")
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"EURUSD,1m,2024-01-01T00:00Z,nan,1.2,1.0,1.1,5", "non-finite price"),
        (b"EURUSD,1m,2024-01-01T00:00Z,1.1,1.2,1.0,1.1,-5", "negative volume"),
        (b"EURUSD,1m,2024-01-01T00:00Z,1.1,1.0,1.2,1.1,5", "high below low"),
        (b"EURUSD,1m,2024-01-01T00:00Z,1.3,1.2,1.0,1.1,5", "open outside [low, high]"),
        (b"EURUSD,2m,2024-01-01T00:00Z,1.1,1.2,1.0,1.1,5", "unknown timeframe '2m'"),
        (b"EURUSD,1m,2024-01-01T00:00,1.1,1.2,1.0,1.1,5", "timestamp without timezone"),
        (b"EURUSD,1m,yesterday,1.1,1.2,1.0,1.1,5", "unreadable timestamp"),
        (b"EURUSD,1m,2024-01-01T00:00Z,one,1.2,1.0,1.1,5", "bad number in column 'open'"),
        (b"EURUSD,1m,2024-01-01T00:00Z,1.1,1.2", "expected 8 fields, got 5"),
        (b"EURUSD,1m,2024-01-01T00:00Z,1.1,1.2,1.0,1.1,5\xff\xfe", "undecodable bytes"),
    ],
)
def test_a_malformed_csv_row_comes_back_rejected_with_its_reason(tmp_path, line, reason):
    good = b"GBPUSD,1m,2024-01-01T00:00:00Z,1.27,1.28,1.26,1.275,100\n"
    got = _csv(tmp_path, good + line + b"\r\n" + good)
    assert isinstance(got[0], Bar) and isinstance(got[2], Bar)
    rejected = got[1]
    assert isinstance(rejected, RejectedRecord)
    assert rejected.reason.startswith(reason)
    assert rejected.origin == f"csv:{tmp_path / 'bars.csv'}:3"
    assert rejected.payload == line


def test_a_csv_without_the_needed_header_rejects_every_row(tmp_path):
    got = _csv(tmp_path, b"EURUSD,1m,x\nGBPUSD,1m,y\n", header="symbol,timeframe,when\n")
    assert len(got) == 2
    assert all(isinstance(r, DeadLetter) and "lacks columns" in r.reason for r in got)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.binary(max_size=60).filter(lambda b: b"\n" not in b), max_size=20))
def test_every_nonblank_csv_line_yields_exactly_one_item(tmp_path, lines):
    body = b"".join(line.replace(b"\r", b"") + b"\n" for line in lines)
    got = _csv(tmp_path, body)
    assert len(got) == sum(1 for line in lines if line.replace(b"\r", b"").strip())
    assert all(isinstance(r, Bar) or r.reason for r in got)


def test_timezone_offsets_are_normalised_to_utc(tmp_path):
    got = _csv(tmp_path, b"EURUSD,1d,2024-01-02T00:00:00-05:00,1.1,1.2,1.0,1.1,5\n")
    assert got[0].ts == datetime(2024, 1, 2, 5, tzinfo=UTC)
    assert got[0].ts.tzinfo is UTC
