"""The bar contract: one rule, one reason code, one sentence naming the field and value."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backbone.bars import FX_SYMBOLS, TIMEFRAMES, Bar, timeframe_delta
from backbone.contract import (
    REASON_CODES,
    BarContract,
    ContractPolicy,
    Violation,
    reason,
    reason_code,
)
from backbone.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SYMBOL = r"[A-Z0-9][A-Z0-9._/-]{0,31}"
CONTRACT = BarContract(clock=NOW.timestamp)
BASE = dict(
    symbol="EURUSD",
    timeframe="1m",
    ts=datetime(2024, 1, 2, 10, 0, tzinfo=UTC),
    open=1.1,
    high=1.2,
    low=1.0,
    close=1.15,
    volume=10.0,
)


def bar(**change: object) -> Bar:
    return Bar(**{**BASE, **change})  # type: ignore[arg-type]


def violation(b: Bar, contract: BarContract = CONTRACT) -> Violation:
    problem = contract.check(b)
    assert problem is not None, f"{b} was accepted"
    return problem


# --- each rule -------------------------------------------------------------------

HOSTILE_ROWS = [
    # the kinds of rows issue 13 found stored, each with the code it now gets
    ({"open": -1.0, "high": -0.5, "low": -2.0, "close": -1.0}, "price_not_positive", "open"),
    ({"open": 0.0, "high": 0.0, "low": 0.0, "close": 0.0}, "price_not_positive", "open"),
    ({"open": 1e308, "high": 1e308, "low": 1e308, "close": 1e308}, "price_above_bound", "open"),
    ({"volume": 1e308}, "volume_above_bound", "volume"),
    ({"ts": datetime(2024, 1, 2, 10, 3, 30, tzinfo=UTC)}, "ts_misaligned", "ts"),
    ({"timeframe": "1d", "ts": datetime(2024, 1, 2, 13, tzinfo=UTC)}, "ts_misaligned", "ts"),
    ({"ts": datetime(2024, 1, 2, 10, 0, 0, 500_000, tzinfo=UTC)}, "ts_misaligned", "ts"),
    ({"ts": datetime(1, 1, 1, tzinfo=UTC)}, "ts_before_earliest", "ts"),
    ({"ts": datetime(1970, 1, 1, tzinfo=UTC)}, "ts_before_earliest", "ts"),
    ({"ts": datetime(2100, 1, 1, tzinfo=UTC)}, "ts_in_future", "ts"),
    ({"ts": datetime(9999, 12, 31, tzinfo=UTC)}, "ts_in_future", "ts"),
    ({"symbol": "S" * 5000}, "symbol_too_long", "symbol"),
    ({"symbol": "EUR,USD"}, "symbol_invalid", "symbol"),
    ({"symbol": "ÉURUSD€"}, "symbol_invalid", "symbol"),
    ({"symbol": "eur usd; DROP TABLE bars;--"}, "symbol_invalid", "symbol"),
    ({"symbol": ""}, "symbol_empty", "symbol"),
    ({"timeframe": "7m"}, "timeframe_unknown", "timeframe"),
    ({"open": math.nan}, "price_not_finite", "open"),
    ({"high": math.inf}, "price_not_finite", "high"),
    ({"low": -math.inf}, "price_not_finite", "low"),
    ({"volume": math.nan}, "volume_not_finite", "volume"),
    ({"volume": -1.0}, "volume_negative", "volume"),
    ({"high": 1.0, "low": 1.2, "open": 1.1, "close": 1.1}, "ohlc_inconsistent", "high"),
    ({"open": 1.3}, "ohlc_inconsistent", "open"),
    ({"close": 0.9}, "ohlc_inconsistent", "close"),
    ({"ts": datetime(2024, 1, 2, 10, 0)}, "ts_naive", "ts"),
]


@pytest.mark.parametrize(("change", "code", "field"), HOSTILE_ROWS)
def test_each_rule_names_its_code_field_and_value(change, code, field) -> None:
    problem = violation(bar(**change))
    assert (problem.code, problem.field) == (code, field)
    assert problem.reason.startswith(f"{code}: ")
    assert field in problem.message
    assert len(problem.message) < 400, "a hostile value must be truncated"


def test_a_long_value_is_truncated_in_the_message() -> None:
    problem = violation(bar(symbol="X" * 5000))
    assert "XXXX" in problem.message and "…" in problem.message
    assert "5000 characters" in problem.message


def test_a_valid_bar_and_its_neighbours_on_every_timeframe_pass() -> None:
    for tf in sorted(TIMEFRAMES):
        ts = datetime(2024, 1, 2, tzinfo=UTC)
        assert CONTRACT.check(bar(timeframe=tf, ts=ts)) is None
        assert CONTRACT.check(bar(timeframe=tf, ts=ts + timeframe_delta(tf))) is None


def test_negative_prices_only_for_symbols_declared_in_config() -> None:
    negative = bar(symbol="CL.SPREAD", open=-1.0, high=-0.5, low=-2.0, close=-1.0)
    assert violation(negative).code == "price_not_positive"
    allowed = BarContract(
        ContractPolicy(non_positive_price_symbols=frozenset({"CL.SPREAD"})), clock=NOW.timestamp
    )
    assert allowed.check(negative) is None
    assert violation(bar(open=-1.0, low=-2.0), allowed).code == "price_not_positive"


def test_the_sanity_bounds_are_configurable() -> None:
    tight = BarContract(ContractPolicy(max_price=1.15, max_volume=5), clock=NOW.timestamp)
    assert violation(bar(), tight).code == "price_above_bound"
    assert violation(bar(high=1.15, close=1.1), tight).code == "volume_above_bound"


def test_daily_bars_open_at_the_configured_session_boundary() -> None:
    at_2200 = bar(timeframe="1d", ts=datetime(2024, 1, 2, 22, tzinfo=UTC))
    assert violation(at_2200).code == "ts_misaligned"
    ny_close = BarContract(
        ContractPolicy(daily_session_start=clock_time(22, 0)), clock=NOW.timestamp
    )
    assert ny_close.check(at_2200) is None
    assert violation(bar(timeframe="1d", ts=datetime(2024, 1, 2, tzinfo=UTC)), ny_close)


def test_the_future_limit_is_now_plus_one_timeframe_plus_the_skew() -> None:
    for tf in sorted(TIMEFRAMES):
        step = timeframe_delta(tf)
        # the last aligned instant not after now + one step is accepted
        edge = NOW + step
        edge -= timedelta(
            seconds=(edge - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()
            % (step.total_seconds())
        )
        assert CONTRACT.check(bar(timeframe=tf, ts=edge)) is None, tf
        assert violation(bar(timeframe=tf, ts=edge + step)).code == "ts_in_future"
    later = bar(ts=NOW + timedelta(minutes=5))
    assert violation(later).code == "ts_in_future"
    skewed = BarContract(ContractPolicy(clock_skew_seconds=300), clock=NOW.timestamp)
    assert skewed.check(later) is None


def test_the_earliest_date_is_configurable() -> None:
    old = bar(timeframe="1d", ts=datetime(1985, 3, 1, tzinfo=UTC))
    assert violation(old).code == "ts_before_earliest"
    history = BarContract(
        ContractPolicy(earliest=datetime(1900, 1, 1, tzinfo=UTC)), clock=NOW.timestamp
    )
    assert history.check(old) is None


def test_symbol_case_is_normalised_only_when_configured() -> None:
    lower = bar(symbol="eurusd")
    assert isinstance(CONTRACT.admit(lower), Violation)
    upper = BarContract(ContractPolicy(symbol_case="upper"), clock=NOW.timestamp)
    admitted = upper.admit(lower)
    assert isinstance(admitted, Bar) and admitted.symbol == "EURUSD"


def test_the_policy_comes_from_settings_and_refuses_nonsense(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BACKBONE_CONTRACT__MAX_PRICE", "500")
    monkeypatch.setenv("BACKBONE_CONTRACT__CORRECTIONS", "refuse")
    settings = load_settings()
    assert settings.contract.max_price == 500 and settings.contract.corrections == "refuse"
    with pytest.raises(ValueError, match="daily_session_start"):
        ContractPolicy(daily_session_start=clock_time(22, 0, 30))
    with pytest.raises(ValueError, match="earliest"):
        ContractPolicy(earliest=datetime(2000, 1, 1))
    with pytest.raises(ValueError, match="symbol_pattern"):
        ContractPolicy(symbol_pattern="[")


def test_a_rejected_bar_keeps_its_json_form_even_with_nan() -> None:
    b = bar(open=math.nan)
    dead = CONTRACT.reject(b, violation(b), origin="kafka:t/0@5")
    assert dead.origin == "kafka:t/0@5" and reason_code(dead.reason) == "price_not_finite"
    assert json.loads(dead.payload)["symbol"] == "EURUSD"


def test_reason_codes_read_back_and_only_registered_codes_are_given() -> None:
    assert reason_code(reason("ts_in_future", "x: y")) == "ts_in_future"
    assert reason_code("high below low") == "unclassified"
    with pytest.raises(ValueError, match="unregistered"):
        reason("made_up", "x")


def test_the_data_contract_doc_lists_every_reason_code_and_setting() -> None:
    doc = (REPO / "docs" / "data-contract.md").read_text()
    listed = set(re.findall(r"`([a-z_]+)`", doc))
    assert set(REASON_CODES) <= listed, set(REASON_CODES) - listed
    assert {f"contract.{name}" for name in ContractPolicy.model_fields} <= set(
        re.findall(r"`(contract\.[a-z_]+)`", doc)
    )


# --- properties ---------------------------------------------------------------------

finite = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)
hostile_float = st.one_of(
    finite,
    st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, -0.0, 1e308, -1e308]),
    st.floats(),
)
aligned_minutes = st.integers(0, 2 * 365 * 1440).map(
    lambda m: datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=m)
)


@st.composite
def valid_bars(draw: st.DrawFn) -> Bar:
    low = draw(finite)
    high = low + draw(st.floats(0, 1e3))
    tf = draw(st.sampled_from(sorted(TIMEFRAMES)))
    step = timeframe_delta(tf)
    ts = datetime(2024, 1, 1, tzinfo=UTC) + step * draw(st.integers(0, 700))
    return Bar(
        symbol=draw(st.one_of(st.sampled_from(FX_SYMBOLS), st.from_regex(SYMBOL, fullmatch=True))),
        timeframe=tf,
        ts=ts,
        open=draw(st.floats(low, high)),
        high=high,
        low=low,
        close=draw(st.floats(low, high)),
        volume=draw(st.floats(0, 1e9)),
    )


hostile_bars = st.builds(
    Bar,
    symbol=st.one_of(st.sampled_from(FX_SYMBOLS), st.text(max_size=40)),
    timeframe=st.one_of(st.sampled_from(sorted(TIMEFRAMES)), st.text(max_size=4)),
    ts=st.one_of(
        aligned_minutes,
        st.datetimes(),
        st.datetimes(timezones=st.timezones()),
        st.datetimes(timezones=st.just(UTC)),
    ),
    open=hostile_float,
    high=hostile_float,
    low=hostile_float,
    close=hostile_float,
    volume=hostile_float,
    source=st.text(max_size=10),
)


@given(valid_bars())
def test_a_bar_within_every_rule_passes(b: Bar) -> None:
    assert CONTRACT.check(b) is None


@given(hostile_bars)
def test_a_hostile_bar_passes_only_if_every_rule_holds_and_never_raises(b: Bar) -> None:
    problem = CONTRACT.check(b)
    if problem is None:
        # then it really is valid: check the rules independently of the module
        prices = (b.open, b.high, b.low, b.close)
        assert re.fullmatch(SYMBOL, b.symbol)
        assert b.timeframe in TIMEFRAMES
        assert all(math.isfinite(p) and 0 < p <= 1e9 for p in prices)
        assert math.isfinite(b.volume) and 0 <= b.volume <= 1e15
        assert b.low <= min(b.open, b.close) and max(b.open, b.close) <= b.high
        assert b.ts.tzinfo is not None and b.ts.utcoffset() is not None
        assert datetime(1990, 1, 1, tzinfo=UTC) <= b.ts <= NOW + timeframe_delta(b.timeframe)
        since_epoch = b.ts - datetime(1970, 1, 1, tzinfo=UTC)
        assert since_epoch % timeframe_delta(b.timeframe) == timedelta(0)
    else:
        assert problem.code in REASON_CODES and problem.message
        dead = CONTRACT.reject(b, problem, origin="test")
        assert reason_code(dead.reason) == problem.code and dead.payload
