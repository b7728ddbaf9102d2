"""The contract through the public API on Tier 0: corrections, accounting, hostile input."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backbone.bars import FX_SYMBOLS, TIMEFRAMES, Bar, synthetic_bars
from backbone.contract import REASON_CODES, BarContract, reason_code
from backbone.csvfile import CsvBarFile
from backbone.runtime import Backbone, IngestResult
from backbone.settings import load_settings
from backbone.store.duckdb import DuckDBStore

FAR_PAST = datetime(1900, 1, 1, tzinfo=UTC)
FAR = datetime(2100, 1, 1, tzinfo=UTC)
T0 = datetime(2024, 1, 2, tzinfo=UTC)


def open_tier0(path: Path, **contract: object) -> Backbone:
    return Backbone.open(
        tier="bootstrap",
        settings=load_settings(duckdb_path=str(path), contract=contract),
    )


@pytest.fixture(autouse=True)
def _no_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("BACKBONE_OUTPUTS", "BACKBONE_TIER", "BACKBONE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def backbone(tmp_path: Path) -> Iterator[Backbone]:
    with open_tier0(tmp_path / "t0.duckdb") as bb:
        yield bb


def identity(r: IngestResult) -> int:
    return r.stored + r.duplicates + r.corrections + r.conflicts + r.dead_lettered


def corrected(b: Bar, **values: float) -> Bar:
    return dataclasses.replace(b, source="csv", **values)


# --- corrections ----------------------------------------------------------------


def test_an_exact_resend_is_a_duplicate_whatever_its_source(backbone: Backbone) -> None:
    bars = list(synthetic_bars(["EURUSD"], "1m", 20))
    backbone.ingest(bars)
    again = backbone.ingest([dataclasses.replace(b, source="csv") for b in bars])
    assert (again.stored, again.duplicates, again.corrections) == (0, 20, 0)


def test_a_resend_with_new_values_is_a_revision_with_an_audit_row(backbone: Backbone) -> None:
    bars = list(synthetic_bars(["EURUSD"], "1m", 10))
    backbone.ingest(bars)
    fix = corrected(bars[3], high=bars[3].high + 0.01, volume=bars[3].volume + 1)
    result = backbone.ingest([fix])
    assert (result.records_in, result.stored, result.corrections, result.duplicates) == (
        1, 0, 1, 0,
    )  # fmt: skip
    assert backbone.store.read("EURUSD", "1m", FAR_PAST, FAR)[3] == fix
    assert isinstance(backbone.store, DuckDBStore)
    (audit,) = backbone.store.revisions("EURUSD", "1m")
    assert audit["revision"] == 2 and audit["source"] == "csv"
    assert (audit["old_high"], audit["new_high"]) == (bars[3].high, fix.high)
    assert (audit["old_volume"], audit["new_volume"]) == (bars[3].volume, fix.volume)
    assert "@" in audit["changed_by"] and audit["changed_at"] is not None


def test_a_bar_and_its_corrections_in_one_batch_apply_in_order(backbone: Backbone) -> None:
    (b,) = synthetic_bars(["EURUSD"], "1h", 1)
    v2, v3 = corrected(b, high=b.high + 0.01), corrected(b, high=b.high + 0.02)
    result = backbone.ingest([b, v2, b.__class__(**{**dataclasses.asdict(v2)}), v3])
    assert (result.stored, result.corrections, result.duplicates) == (1, 2, 1)
    assert backbone.latest("EURUSD", "1h") == v3
    assert isinstance(backbone.store, DuckDBStore)
    assert [a["revision"] for a in backbone.store.revisions("EURUSD", "1h")] == [2, 3]


def test_under_refuse_a_correction_is_a_conflict_in_the_dead_letters(tmp_path: Path) -> None:
    with open_tier0(tmp_path / "r.duckdb", corrections="refuse") as bb:
        bars = list(synthetic_bars(["EURUSD"], "1m", 5))
        bb.ingest(bars)
        result = bb.ingest([corrected(bars[0], close=bars[0].high), *bars[1:]])
        assert (result.conflicts, result.duplicates, result.stored) == (1, 4, 0)
        assert result.dead_lettered == 0 and result.reconciles
        assert result.rejected_by_reason == {"correction_conflict": 1}
        assert bb.store.read("EURUSD", "1m", FAR_PAST, FAR) == bars
        assert isinstance(bb.store, DuckDBStore)
        (letter,) = bb.store.dead_letters()
        assert reason_code(letter.reason) == "correction_conflict"
        assert "close" in letter.reason


# --- properties over hostile input ------------------------------------------------------

prices = st.one_of(
    st.floats(min_value=0.5, max_value=2.0),
    st.sampled_from([math.nan, math.inf, -1.0, 0.0, 1e308]),
)
timestamps = st.one_of(
    st.integers(0, 2000).map(lambda m: T0 + timedelta(minutes=m)),
    st.integers(0, 2000).map(lambda s: T0 + timedelta(seconds=s * 7)),
    st.sampled_from(
        [datetime(1, 1, 1, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC), FAR, datetime(2024, 1, 2)]
    ),
)


@st.composite
def any_bars(draw: st.DrawFn) -> Bar:
    if draw(st.booleans()):
        low = draw(st.floats(0.5, 1.0))
        high = low + draw(st.floats(0, 0.5))
        return Bar(
            draw(st.sampled_from(FX_SYMBOLS[:3])),
            "1m",
            T0 + timedelta(minutes=draw(st.integers(0, 50))),
            draw(st.floats(low, high)),
            high,
            low,
            draw(st.floats(low, high)),
            draw(st.floats(0, 1e6)),
        )
    return Bar(
        draw(st.one_of(st.sampled_from(["EURUSD", "EUR,USD", "S" * 40, ""]), st.text(max_size=8))),
        draw(st.one_of(st.sampled_from(sorted(TIMEFRAMES)), st.text(max_size=3))),
        draw(timestamps),
        draw(prices),
        draw(prices),
        draw(prices),
        draw(prices),
        draw(st.one_of(st.floats(0, 1e6), st.sampled_from([-1.0, math.nan, 1e308]))),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches=st.lists(st.lists(any_bars(), max_size=30), min_size=1, max_size=4))
def test_any_bars_are_stored_or_refused_with_a_code_and_the_counts_reconcile(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[Bar]]
) -> None:
    path = tmp_path_factory.mktemp("prop") / "t0.duckdb"
    contract = BarContract()
    with open_tier0(path) as bb:
        for batch in batches:
            before = bb.store.count()
            result = bb.ingest(batch)
            assert result.records_in == len(batch) == identity(result)
            assert bb.store.count() - before == result.stored
            assert sum(result.rejected_by_reason.values()) == result.dead_lettered
            assert set(result.rejected_by_reason) <= set(REASON_CODES)
        stored = list(bb.store.snapshot(FAR_PAST, FAR))
        assert all(contract.check(b) is None for b in stored)
        assert isinstance(bb.store, DuckDBStore)
        assert all(reason_code(d.reason) in REASON_CODES for d in bb.store.dead_letters())


csv_fields = st.one_of(
    st.sampled_from(
        ["EURUSD", "1m", "1d", "2024-01-02T10:00:00Z", "2024-01-02T10:00:30Z", "1.1", "-1",
         "nan", "1e308", '"', '"a,b"', "9999-12-31T00:00:00Z", "\ufeff"]
    ),
    st.text(max_size=10),
)  # fmt: skip
csv_lines = st.one_of(
    st.lists(csv_fields, min_size=8, max_size=8).map(lambda f: ",".join(f)),
    st.lists(csv_fields, max_size=10).map(lambda f: ",".join(f)),
    st.builds(
        lambda m, o: f"EURUSD,1m,2024-01-02T10:{m:02d}:00Z,{o},1.3,0.9,1.0,10",
        st.integers(0, 59),
        st.sampled_from(["1.0", "1.1", "1.2"]),
    ),
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(lines=st.lists(csv_lines, max_size=40))
def test_any_csv_file_is_stored_or_refused_line_by_line_and_reconciles(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str]
) -> None:
    folder = tmp_path_factory.mktemp("csv")
    flat = [ln.replace("\n", " ").replace("\r", " ") for ln in lines]
    path = folder / "f.csv"
    path.write_text(
        "symbol,timeframe,ts,open,high,low,close,volume\n" + "\n".join(flat) + "\n",
        encoding="utf-8",
        errors="surrogatepass",
    )
    with open_tier0(folder / "t0.duckdb") as bb, CsvBarFile(path, contract=bb.contract) as f:
        result = bb.ingest(f)
        assert result.records_in == sum(1 for ln in flat if ln.strip()) == identity(result)
        assert bb.store.count() == result.stored
        assert all(bb.contract.check(b) is None for b in bb.store.snapshot(FAR_PAST, FAR))


def test_a_store_file_from_before_corrections_is_upgraded_in_place(tmp_path: Path) -> None:
    import duckdb

    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:  # the schema as it was before revisions
        con.execute(
            "CREATE TABLE bars (symbol VARCHAR NOT NULL, timeframe VARCHAR NOT NULL, "
            "ts TIMESTAMPTZ NOT NULL, open DOUBLE NOT NULL, high DOUBLE NOT NULL, "
            "low DOUBLE NOT NULL, close DOUBLE NOT NULL, volume DOUBLE NOT NULL, "
            "source VARCHAR NOT NULL DEFAULT 'live', ingested_at TIMESTAMPTZ NOT NULL "
            "DEFAULT now(), PRIMARY KEY (symbol, timeframe, ts))"
        )
        con.execute(
            "CREATE TABLE dead_letter (id BIGINT PRIMARY KEY, received_at TIMESTAMPTZ, "
            "origin VARCHAR, reason VARCHAR, payload BLOB)"
        )
        con.execute(
            "INSERT INTO bars VALUES ('EURUSD', '1m', TIMESTAMPTZ '2024-01-02 00:00:00+00', "
            "1.1, 1.2, 1.0, 1.1, 5, 'live', now())"
        )
    with DuckDBStore(path) as store:
        old = store.read("EURUSD", "1m", FAR_PAST, FAR)[0]
        outcome = store.apply([dataclasses.replace(old, high=1.3)])
        assert (outcome.corrections, outcome.stored) == (1, 0)
        assert store.revisions("EURUSD", "1m")[0]["revision"] == 2
