"""Bars CSV files: whole-file checks first, then one record per line, never a shifted row."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backbone.bars import Bar, bar_to_dict, synthetic_bars
from backbone.contract import REASON_CODES, reason_code
from backbone.csvfile import MAX_LINE_BYTES, CsvBarFile, CsvHeaderError
from backbone.deadletter import DeadLetter

HEADER = "symbol,timeframe,ts,open,high,low,close,volume\n"
GOOD = b"GBPUSD,1m,2024-01-01T00:00:00Z,1.27,1.28,1.26,1.275,100\n"
REPO = Path(__file__).resolve().parents[2]


def read(tmp_path: Path, body: bytes, header: str = HEADER) -> list[Bar | DeadLetter]:
    path = tmp_path / "bars.csv"
    path.write_bytes(header.encode() + body)
    with CsvBarFile(path) as f:
        return list(f)


def test_csv_rows_become_bars_labelled_csv(tmp_path: Path) -> None:
    bars = list(synthetic_bars(["EURUSD", "USDJPY"], "15m", 20))
    lines = "".join(
        f"{b.symbol},{b.timeframe},{b.ts.isoformat()},{b.open},{b.high},{b.low},{b.close},"
        f"{b.volume}\n"
        for b in bars
    )
    got = read(tmp_path, lines.encode())
    assert got == [Bar(**{**bar_to_dict(b), "ts": b.ts, "source": "csv"}) for b in bars]


def test_columns_may_come_in_any_order_and_case_with_extras(tmp_path: Path) -> None:
    got = read(
        tmp_path,
        b"1.2,1.0,1.1,1.15,5,2024-01-01T00:00:00+02:00,1h,EURUSD,ignored\n",
        header="High,low,open,close,volume,TS,timeframe,symbol,note\n",
    )
    assert got == [
        Bar("EURUSD", "1h", datetime(2023, 12, 31, 22, tzinfo=UTC), 1.1, 1.2, 1.0, 1.15, 5.0, "csv")
    ]


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + HEADER.encode() + GOOD)
    with CsvBarFile(path) as f:
        got = list(f)
        assert f.bom
    assert [type(x) for x in got] == [Bar]


def test_a_header_missing_columns_refuses_the_file_before_any_row(tmp_path: Path) -> None:
    path = tmp_path / "wrong.csv"
    path.write_bytes(b"symbol,tf,when,open,high,low,close\n" + GOOD * 1000)
    with pytest.raises(CsvHeaderError) as info:
        CsvBarFile(path)
    message = str(info.value)
    assert "timeframe, ts, volume" in message
    assert "found: 'symbol', 'tf', 'when'" in message


@pytest.mark.parametrize(("body", "empty"), [(b"", "empty"), (b"\n\n", "empty")])
def test_an_empty_file_says_so(tmp_path: Path, body: bytes, empty: str) -> None:
    path = tmp_path / "e.csv"
    path.write_bytes(body)
    with CsvBarFile(path) as f:
        assert f.empty == empty and list(f) == []


def test_a_header_only_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_bytes(HEADER.encode() + b"\n")
    with CsvBarFile(path) as f:
        assert f.empty == "header only" and list(f) == []


def test_a_quoted_newline_is_refused_with_its_line_and_never_shifts_the_rows_after(
    tmp_path: Path,
) -> None:
    body = (
        GOOD + b'"EUR\nUSD",1m,2024-01-01T00:01:00Z,1.1,1.2,1.0,1.1,5\n' + GOOD + b'"open\n' + GOOD
    )
    got = read(tmp_path, body)
    assert len(got) == 6
    assert [isinstance(x, Bar) for x in got] == [True, False, False, True, False, True]
    origins = [x.origin for x in got if isinstance(x, DeadLetter)]
    assert [o.rsplit(":", 1)[1] for o in origins] == ["3", "4", "6"]
    codes = [reason_code(x.reason) for x in got if isinstance(x, DeadLetter)]
    assert codes == ["csv_malformed", "csv_malformed", "csv_malformed"]


def test_a_line_longer_than_the_limit_is_refused_without_buffering_it(tmp_path: Path) -> None:
    got = read(tmp_path, GOOD + b"A" * (MAX_LINE_BYTES * 3) + b"\n" + GOOD)
    assert [type(x) for x in got] == [Bar, DeadLetter, Bar]
    assert reason_code(got[1].reason) == "csv_malformed"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"EURUSD,1m,2024-01-01T00:00Z,nan,1.2,1.0,1.1,5", "price_not_finite"),
        (b"EURUSD,1m,2024-01-01T00:00Z,1.1,1.2,1.0,1.1,-5", "volume_negative"),
        (b"EURUSD,1m,2024-01-01T00:00Z,1.1,1.0,1.2,1.1,5", "ohlc_inconsistent"),
        (b"EURUSD,2m,2024-01-01T00:00Z,1.1,1.2,1.0,1.1,5", "timeframe_unknown"),
        (b"EURUSD,1m,2024-01-01T00:00,1.1,1.2,1.0,1.1,5", "ts_naive"),
        (b"EURUSD,1m,yesterday,1.1,1.2,1.0,1.1,5", "field_unreadable"),
        (b"EURUSD,1m,0001-01-01T00:00+01:00,1.1,1.2,1.0,1.1,5", "field_unreadable"),
        (b"EURUSD,1m,2024-01-01T00:00Z,one,1.2,1.0,1.1,5", "field_unreadable"),
        (b"EURUSD,1m,2024-01-01T00:00Z,1.1,1.2", "csv_malformed"),
        (b"EURUSD,1m,2024-01-01T00:00Z,1.1,1.2,1.0,1.1,5\xff\xfe", "csv_undecodable"),
        (b'"EUR,USD",1m,2024-01-01T00:00Z,1.1,1.2,1.0,1.1,5', "symbol_invalid"),
    ],
)
def test_a_bad_row_comes_back_refused_with_its_code_and_line(
    tmp_path: Path, line: bytes, code: str
) -> None:
    got = read(tmp_path, GOOD + line + b"\r\n" + GOOD)
    assert isinstance(got[0], Bar) and isinstance(got[2], Bar)
    rejected = got[1]
    assert isinstance(rejected, DeadLetter)
    assert reason_code(rejected.reason) == code
    assert rejected.origin == f"csv:{tmp_path / 'bars.csv'}:3"


def test_a_refused_row_keeps_its_values_as_json_for_replay(tmp_path: Path) -> None:
    got = read(tmp_path, b"EURUSD,1m,2024-01-01T00:00Z,-1,1.2,1.0,1.1,5\n")
    letter = got[0]
    assert isinstance(letter, DeadLetter)
    assert json.loads(letter.payload)["open"] == "-1"


csv_field = st.one_of(
    st.sampled_from(["EURUSD", "1m", "1d", "2024-01-01T00:00:00Z", "1.1", "-1", "nan", "1e308"]),
    st.text(max_size=12),
)


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(
        st.one_of(
            st.binary(max_size=60),
            st.lists(csv_field, min_size=0, max_size=10).map(lambda f: ",".join(f).encode()),
        ),
        max_size=25,
    )
)
def test_every_nonblank_line_yields_exactly_one_item_with_a_known_code(
    tmp_path: Path, lines: list[bytes]
) -> None:
    # Any byte may appear, but \n and \r end physical lines, as in the file.
    flat = [ln.replace(b"\n", b" ").replace(b"\r", b" ") for ln in lines]
    got = read(tmp_path, b"".join(ln + b"\n" for ln in flat))
    assert len(got) == sum(1 for ln in flat if ln.strip())
    for item in got:
        assert isinstance(item, Bar) or reason_code(item.reason) in REASON_CODES


# --- the CLI: exit codes, messages, counts ----------------------------------------------


def backbone(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "BACKBONE_DUCKDB_PATH": str(tmp_path / "t0.duckdb"),
        "BACKBONE_CONFIG": str(tmp_path / "none.yaml"),
    }
    return subprocess.run(
        [sys.executable, "-m", "backbone", *args],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip


def stored_rows(tmp_path: Path) -> int:
    if not (tmp_path / "t0.duckdb").exists():
        return 0
    with duckdb.connect(str(tmp_path / "t0.duckdb"), read_only=True) as con:
        row = con.execute("SELECT count(*) FROM bars").fetchone()
        return int(row[0]) if row else 0


def test_cli_refuses_a_wrong_header_with_exit_2_and_stores_nothing(tmp_path: Path) -> None:
    path = tmp_path / "wrong.csv"
    path.write_bytes(b"sym,tf,time,o,h,l,c,v\n" + GOOD * 1000)
    done = backbone(tmp_path, "ingest", "--tier", "bootstrap", "--csv", str(path))
    assert done.returncode == 2, done.stderr
    assert "lacks the required columns symbol, timeframe, ts" in done.stderr
    assert "found: 'sym', 'tf', 'time'" in done.stderr
    assert stored_rows(tmp_path) == 0


def test_cli_ingests_a_bom_file_and_says_when_a_file_holds_no_bars(tmp_path: Path) -> None:
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + HEADER.encode() + GOOD)
    done = backbone(tmp_path, "ingest", "--tier", "bootstrap", "--csv", str(bom), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stored"] == 1
    header_only = tmp_path / "h.csv"
    header_only.write_text(HEADER)
    done = backbone(tmp_path, "ingest", "--tier", "bootstrap", "--csv", str(header_only), "--json")
    assert done.returncode == 0 and "header only" in done.stderr
    counts = json.loads(done.stdout)
    assert (counts["records_in"], counts["stored"], counts["dead_lettered"]) == (0, 0, 0)


def test_cli_stores_only_what_the_contract_allows_and_reconciles(tmp_path: Path) -> None:
    """The rows issue 13 found stored: each is refused with its code now."""
    rows = [
        "EURUSD,1m,2024-01-02T10:00:00Z,1.1,1.2,1.0,1.1,100",  # stored
        "EURUSD,1m,2024-01-02T10:01:00Z,-1,-0.5,-2,-1,100",  # price_not_positive
        "EURUSD,1m,2024-01-02T10:02:00Z,0,0,0,0,0",  # price_not_positive
        "EURUSD,1m,2024-01-02T10:04:00Z,1e308,1e308,1e308,1e308,1e308",  # price_above_bound
        "EURUSD,1m,2024-01-02T10:03:30Z,1.1,1.2,1.0,1.1,100",  # ts_misaligned
        "EURUSD,1d,2024-01-02T13:00:00Z,1.1,1.2,1.0,1.1,100",  # ts_misaligned
        "EURUSD,1m,2024-01-02T10:06:00.5Z,1.1,1.2,1.0,1.1,100",  # ts_misaligned
        "EURUSD,1d,0001-01-01T00:00:00Z,1.1,1.2,1.0,1.1,100",  # ts_before_earliest
        "EURUSD,1d,1970-01-01T00:00:00Z,1.1,1.2,1.0,1.1,100",  # ts_before_earliest
        "EURUSD,1d,2100-01-01T00:00:00Z,1.1,1.2,1.0,1.1,100",  # ts_in_future
        "EURUSD,1m,9999-12-31T00:00:00Z,1.1,1.2,1.0,1.1,100",  # ts_in_future
        "S" * 5000 + ",1m,2024-01-02T10:07:00Z,1.1,1.2,1.0,1.1,100",  # symbol_too_long
        '"EUR,USD",1m,2024-01-02T10:07:00Z,1.1,1.2,1.0,1.1,100',  # symbol_invalid
        "ÉURUSD€,1m,2024-01-02T10:07:00Z,1.1,1.2,1.0,1.1,100",  # symbol_invalid
        "eur usd; DROP TABLE bars;--,1m,2024-01-02T10:07:00Z,1.1,1.2,1.0,1.1,100",  # symbol_invalid
        "EURUSD,1m,2024-01-02T10:00:00Z,1.1,1.2,1.0,1.1,100",  # duplicate
        "EURUSD,1m,2024-01-02T10:00:00Z,1.1,1.25,1.0,1.1,100",  # correction
    ]
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "\n".join(rows) + "\n", encoding="utf-8")
    done = backbone(tmp_path, "ingest", "--tier", "bootstrap", "--csv", str(path), "--json")
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert (r["records_in"], r["stored"], r["duplicates"], r["corrections"]) == (17, 1, 1, 1)
    assert r["dead_lettered"] == 14 and r["reconciles"]
    assert r["rejected_by_reason"] == {
        "price_above_bound": 1,
        "price_not_positive": 2,
        "symbol_invalid": 3,
        "symbol_too_long": 1,
        "ts_before_earliest": 2,
        "ts_in_future": 2,
        "ts_misaligned": 3,
    }
    assert stored_rows(tmp_path) == 1
