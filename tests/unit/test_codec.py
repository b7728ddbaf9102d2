"""The Kafka record format: bars survive a round trip, hostile records become dead letters."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backbone.bars import TIMEFRAMES, Bar, bar_to_dict, timeframe_delta, topic_for
from backbone.contract import REASON_CODES, BarContract, reason_code
from backbone.stream.codec import (
    CONTENT_TYPE,
    HEADER_BACKFILL,
    HEADER_CONTENT_TYPE,
    HEADER_IDEMPOTENCY_KEY,
    HEADER_SCHEMA_VERSION,
    SCHEMA_FILE,
    SCHEMA_VERSION,
    bar_schema,
    batch_records,
    decode_record,
    encode_batch,
    header,
)

REPO = Path(__file__).resolve().parents[2]
CONTRACT = BarContract()
ORIGIN = "kafka:market-data.intraday-bars/0@7"
T0 = datetime(2024, 1, 2, tzinfo=UTC)
GOOD_HEADERS = [(HEADER_SCHEMA_VERSION, b"1"), (HEADER_CONTENT_TYPE, CONTENT_TYPE.encode())]

prices = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def valid_bars(draw: st.DrawFn, symbol: str | None = None, timeframe: str | None = None) -> Bar:
    p = sorted(draw(st.lists(prices, min_size=4, max_size=4)))
    low, high = p[0], p[3]
    open_, close = draw(st.permutations([p[1], p[2]]))
    return Bar(
        symbol=symbol or draw(st.sampled_from(["EURUSD", "GBPUSD", "USDJPY", "AUDUSD"])),
        timeframe=(tf := timeframe or draw(st.sampled_from(sorted(TIMEFRAMES)))),
        ts=T0 + timeframe_delta(tf) * draw(st.integers(0, 600)),
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=draw(st.floats(min_value=0, max_value=1e12)),
        source=draw(st.sampled_from(["live", "synthetic", "csv"])),
    )


def bar(**changes: object) -> Bar:
    base = dict(
        symbol="EURUSD", timeframe="1m", ts=T0, open=1.1, high=1.2, low=1.0, close=1.15, volume=10.0
    )
    base.update(changes)
    return Bar(**base)  # type: ignore[arg-type]


# --- round trip --------------------------------------------------------------
@given(st.lists(valid_bars(symbol="EURUSD", timeframe="1m"), min_size=1, max_size=50))
def test_a_batch_of_valid_bars_round_trips_exactly(bars: list[Bar]) -> None:
    record = encode_batch(bars)
    decoded = decode_record(record.value, record.headers, key=record.key, origin=ORIGIN)
    assert decoded.dead_letters == []
    assert decoded.bars == bars
    assert decoded.items == len(bars)


def test_record_is_keyed_by_symbol_and_carries_version_and_content_type() -> None:
    record = encode_batch([bar(), bar(ts=T0 + timedelta(minutes=1))])
    assert record.key == b"EURUSD"
    assert record.logical_topic == topic_for("1m") == "intraday_bars"
    assert header(record.headers, HEADER_SCHEMA_VERSION) == str(SCHEMA_VERSION).encode()
    assert header(record.headers, HEADER_CONTENT_TYPE) == CONTENT_TYPE.encode()
    assert header(record.headers, HEADER_BACKFILL) is None
    assert record.bars == 2


def test_backfill_records_carry_the_run_and_an_idempotency_key() -> None:
    bars = [bar(ts=T0), bar(ts=T0 + timedelta(minutes=1))]
    record = encode_batch(bars, backfill="replay-1")
    assert header(record.headers, HEADER_BACKFILL) == b"replay-1"
    key = header(record.headers, HEADER_IDEMPOTENCY_KEY)
    assert key is not None and key.decode().startswith("EURUSD|1m|2024-01-02T00:00:00+00:00..")
    decoded = decode_record(record.value, record.headers, key=record.key, origin=ORIGIN)
    assert decoded.backfill == "replay-1"


def test_a_batch_must_hold_one_symbol_and_timeframe() -> None:
    with pytest.raises(ValueError, match="one symbol"):
        encode_batch([bar(), bar(symbol="GBPUSD")])
    with pytest.raises(ValueError, match="at least one"):
        encode_batch([])


@given(st.lists(valid_bars(), max_size=200), st.integers(1, 30))
def test_batching_groups_per_symbol_keeps_order_and_loses_nothing(
    bars: list[Bar], max_bars: int
) -> None:
    records = list(batch_records(bars, max_bars=max_bars))
    assert all(1 <= r.bars <= max_bars for r in records)
    assert sum(r.bars for r in records) == len(bars)
    seen: dict[tuple[str, str], list[Bar]] = {}
    for r in records:
        decoded = decode_record(r.value, r.headers, key=r.key, origin=ORIGIN)
        assert decoded.dead_letters == []
        assert {b.symbol for b in decoded.bars} == {r.key.decode()}
        for b in decoded.bars:
            seen.setdefault((b.symbol, b.timeframe), []).append(b)
    for pair, got in seen.items():
        assert got == [b for b in bars if (b.symbol, b.timeframe) == pair]


# --- hostile input: dead letters with reasons, never exceptions --------------
@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"open": math.nan}, "price_not_finite"),
        ({"high": math.inf}, "price_not_finite"),
        ({"volume": -1.0}, "volume_negative"),
        ({"high": 0.9, "low": 1.0, "open": 0.95, "close": 0.95}, "ohlc_inconsistent"),
        ({"open": 1.3}, "ohlc_inconsistent"),
        ({"close": 0.5}, "ohlc_inconsistent"),
        ({"open": -1.0, "low": -2.0}, "price_not_positive"),
        ({"ts": datetime(2100, 1, 1, tzinfo=UTC)}, "ts_in_future"),
        ({"ts": T0 + timedelta(seconds=30)}, "ts_misaligned"),
        ({"timeframe": "7x"}, "schema_violation"),
    ],
)
def test_each_broken_rule_is_dead_lettered_with_its_reason(
    changes: dict[str, object], reason: str
) -> None:
    good, bad = bar(), bar(**{"ts": T0 + timedelta(minutes=1), **changes})
    value = json.dumps([bar_to_dict(good), bar_to_dict(bad)]).encode()
    decoded = decode_record(value, GOOD_HEADERS, key=b"EURUSD", origin=ORIGIN)
    assert decoded.bars == [good]
    assert [reason_code(d.reason) for d in decoded.dead_letters] == [reason]
    letter = decoded.dead_letters[0]
    assert letter.origin == ORIGIN
    assert json.loads(letter.payload.decode().replace("NaN", "null").replace("Infinity", "null"))
    assert decoded.items == 2


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([], "schema_version_missing"),
        ([(HEADER_SCHEMA_VERSION, str(SCHEMA_VERSION + 1).encode())], "schema_version_unsupported"),
        ([(HEADER_SCHEMA_VERSION, b"\xff\xfe")], "schema_version_unsupported"),
        ([(HEADER_SCHEMA_VERSION, b"one")], "schema_version_unsupported"),
    ],
)
def test_a_record_of_an_unknown_schema_version_is_dead_lettered_whole(
    headers: list[tuple[str, bytes]], reason: str
) -> None:
    record = encode_batch([bar()])
    decoded = decode_record(record.value, headers, key=record.key, origin=ORIGIN)
    assert decoded.bars == []
    assert len(decoded.dead_letters) == 1
    assert decoded.dead_letters[0].reason.startswith(reason)
    assert decoded.dead_letters[0].payload == record.value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe\x00garbage", "record_undecodable"),
        (b"{not json", "record_undecodable"),
        (b"[" * 100_000, "record_undecodable"),
        (None, "record_undecodable"),
        (b"{}", "schema_violation"),
        (b"[]", "schema_violation"),
    ],
)
def test_undecodable_values_are_one_dead_letter_each(value: bytes | None, reason: str) -> None:
    decoded = decode_record(value, GOOD_HEADERS, key=b"EURUSD", origin=ORIGIN)
    assert decoded.bars == []
    assert [reason_code(d.reason) for d in decoded.dead_letters] == [reason]
    assert decoded.items == 1


def test_a_bar_whose_symbol_is_not_the_record_key_is_refused() -> None:
    record = encode_batch([bar(symbol="GBPUSD")])
    decoded = decode_record(record.value, record.headers, key=b"EURUSD", origin=ORIGIN)
    assert decoded.bars == []
    assert reason_code(decoded.dead_letters[0].reason) == "record_key_mismatch"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["EURUSD", "1m", "1d", "2024-01-02T09:30:00+00:00", "0001-01-01T00:00:00"]),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(["symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"])
            | st.text(max_size=5),
            children,
            max_size=9,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=300)
@given(
    value=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())),
    headers=st.lists(
        st.tuples(st.sampled_from([HEADER_SCHEMA_VERSION, "x", HEADER_BACKFILL]), st.binary()),
        max_size=3,
    )
    | st.just(GOOD_HEADERS),
    key=st.none() | st.binary(max_size=10) | st.just(b"EURUSD"),
)
def test_any_hostile_record_is_accounted_for_without_raising(
    value: bytes, headers: list[tuple[str, bytes]], key: bytes | None
) -> None:
    decoded = decode_record(value, headers, key=key, origin=ORIGIN)
    assert decoded.items >= 1
    assert all(d.reason and d.origin == ORIGIN for d in decoded.dead_letters)
    assert all(reason_code(d.reason) in REASON_CODES for d in decoded.dead_letters)
    assert all(isinstance(d.payload, bytes) for d in decoded.dead_letters)


@settings(max_examples=200)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "symbol": st.sampled_from(["EURUSD", "", " "]),
                "timeframe": st.sampled_from(["1m", "1d", "2w"]),
                "ts": st.sampled_from(["2024-01-02T09:30:00+00:00", "yesterday", "9999-12-31"]),
                "open": st.floats() | st.text(max_size=3) | st.integers(-(10**400), 10**400),
                "high": st.floats(),
                "low": st.floats(),
                "close": st.floats(),
                "volume": st.floats() | st.none(),
            }
        ),
        min_size=1,
        max_size=20,
    )
)
def test_every_item_of_a_hostile_batch_is_stored_or_dead_lettered(items: list[dict]) -> None:
    value = json.dumps(items).encode()
    decoded = decode_record(value, GOOD_HEADERS, key=b"EURUSD", origin=ORIGIN)
    assert decoded.items == len(items)
    for b in decoded.bars:
        assert CONTRACT.check(b) is None
    assert all(reason_code(d.reason) in REASON_CODES for d in decoded.dead_letters)


# --- the published record contract ---------------------------------------------


def test_the_schema_in_docs_is_the_one_the_package_ships() -> None:
    published = json.loads((REPO / "docs" / "schemas" / SCHEMA_FILE).read_text())
    assert published == bar_schema()
    assert published["x-schema-version"] == SCHEMA_VERSION
    jsonschema.Draft202012Validator.check_schema(published)


@settings(max_examples=100)
@given(st.lists(valid_bars(symbol="EURUSD", timeframe="1m"), min_size=1, max_size=50))
def test_what_the_producer_encodes_fits_the_published_schema(bars: list[Bar]) -> None:
    validator = jsonschema.Draft202012Validator(
        bar_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for record in batch_records(bars):
        assert header(record.headers, HEADER_SCHEMA_VERSION) == str(SCHEMA_VERSION).encode()
        errors = list(validator.iter_errors(json.loads(record.value)))
        assert errors == []


def test_the_schema_refuses_what_the_decoder_refuses() -> None:
    validator = jsonschema.Draft202012Validator(bar_schema())
    for hostile in ([], [{"symbol": "EURUSD"}], [{**bar_to_dict(bar()), "extra": 1}],
                    [{**bar_to_dict(bar()), "open": "1.1"}]):  # fmt: skip
        assert list(validator.iter_errors(hostile)), hostile
        decoded = decode_record(json.dumps(hostile).encode(), GOOD_HEADERS, origin=ORIGIN)
        assert decoded.bars == [] and decoded.dead_letters


def test_a_consumer_of_version_n_refuses_version_n_plus_1_whole_with_its_reason() -> None:
    record = encode_batch([bar(), bar(ts=T0 + timedelta(minutes=1))])
    newer = [(HEADER_SCHEMA_VERSION, str(SCHEMA_VERSION + 1).encode())]
    decoded = decode_record(record.value, newer, key=record.key, origin=ORIGIN)
    assert decoded.bars == [] and decoded.items == 1
    (letter,) = decoded.dead_letters
    assert reason_code(letter.reason) == "schema_version_unsupported"
    assert f"{SCHEMA_VERSION + 1} is unknown" in letter.reason
    assert letter.payload == record.value  # replayable once the consumer is upgraded
