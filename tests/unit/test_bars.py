"""Bars: the synthetic generator (the contract and CSV files have their own tests)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backbone.bars import (
    FX_SYMBOLS,
    SYNTHETIC_START,
    TIMEFRAMES,
    synthetic_bars,
    timeframe_delta,
)
from backbone.contract import BarContract

symbols = st.lists(
    st.sampled_from([*FX_SYMBOLS, "XAUUSD", "BTCUSD"]), min_size=1, max_size=4, unique=True
)
timeframes = st.sampled_from(sorted(TIMEFRAMES))
seeds = st.integers(min_value=0, max_value=2**32)
#: The contract as of 2100, so long synthetic series are not "in the future".
CONTRACT = BarContract(clock=lambda: datetime(2100, 1, 1, tzinfo=UTC).timestamp())


# --- synthetic generator ----------------------------------------------------------


@given(symbols=symbols, timeframe=timeframes, count=st.integers(0, 300), seed=seeds)
def test_synthetic_bars_always_obey_every_rule(symbols, timeframe, count, seed):
    bars = list(synthetic_bars(symbols, timeframe, count, seed=seed))
    assert len(bars) == count * len(symbols)
    for bar in bars:
        assert CONTRACT.check(bar) is None, bar
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
