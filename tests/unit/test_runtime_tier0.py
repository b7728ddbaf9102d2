"""Tier 0 (bootstrap) through the public runtime API: no services at all."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backbone.bars import Bar, synthetic_bars
from backbone.deadletter import DeadLetter
from backbone.runtime import HEALTH_TOPIC, Backbone
from backbone.settings import load_settings
from backbone.stream.bridge import BUS_TOPIC_DAILY, BUS_TOPIC_INTRADAY, BarsEvent

START = datetime(2024, 1, 1, tzinfo=UTC)
FAR = datetime(2100, 1, 1, tzinfo=UTC)


def open_tier0(tmp_path: Path, **overrides: object) -> Backbone:
    return Backbone.open(
        tier="bootstrap",
        settings=load_settings(duckdb_path=str(tmp_path / "t0.duckdb"), **overrides),
    )


@pytest.fixture
def backbone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backbone]:
    monkeypatch.delenv("BACKBONE_OUTPUTS", raising=False)
    monkeypatch.delenv("BACKBONE_STREAMING", raising=False)
    monkeypatch.delenv("BACKBONE_TIER", raising=False)
    bb = open_tier0(tmp_path)
    yield bb
    bb.close()


def collect(bb: Backbone, topic: str) -> list[BarsEvent]:
    events: list[BarsEvent] = []
    bb.bus.subscribe(topic, events.append)
    return events


def test_ingested_bars_read_back_exactly_and_counts_reconcile(backbone: Backbone) -> None:
    bars = list(synthetic_bars(["EURUSD", "GBPUSD"], "1m", 300))
    result = backbone.ingest(bars)
    assert (result.records_in, result.stored, result.dead_lettered, result.duplicates) == (
        600,
        600,
        0,
        0,
    )
    assert result.reconciles and result.tier == "bootstrap"
    got = backbone.read("EURUSD", "1m", START, FAR)
    assert got == [b for b in bars if b.symbol == "EURUSD"]


def test_latest_goes_through_the_cache_and_new_bars_invalidate_it(backbone: Backbone) -> None:
    bars = list(synthetic_bars(["EURUSD"], "1d", 10))
    backbone.ingest(bars[:5])
    assert backbone.latest("EURUSD", "1d") == bars[4]
    assert backbone.latest("EURUSD", "1d") == bars[4]
    stats = backbone.cache.stats()
    assert (stats.hits, stats.misses) == (1, 1)
    backbone.ingest(bars[5:])
    assert backbone.latest("EURUSD", "1d") == bars[9], "a cached bar outlived newer bars"


def test_every_stored_batch_reaches_bus_subscribers(backbone: Backbone) -> None:
    intraday, daily = collect(backbone, BUS_TOPIC_INTRADAY), collect(backbone, BUS_TOPIC_DAILY)
    minute = list(synthetic_bars(["EURUSD", "USDJPY"], "1m", 50))
    days = list(synthetic_bars(["EURUSD"], "1d", 7))
    backbone.ingest(minute + days)
    assert [b for e in intraday for b in e.bars] == minute
    assert [b for e in daily for b in e.bars] == days
    assert all(e.tier == "bootstrap" and e.backfill is None for e in intraday + daily)


def test_streaming_flag_off_stores_but_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKBONE_STREAMING", "0")
    with open_tier0(tmp_path) as bb:
        events = collect(bb, BUS_TOPIC_INTRADAY)
        result = bb.ingest(synthetic_bars(["EURUSD"], "1m", 20))
        assert result.stored == 20 and bb.store.count() == 20
        assert events == [] and bb.bridge.bars_skipped == 20


def test_bad_bars_are_dead_lettered_with_reasons_and_never_stop_ingest(
    backbone: Backbone,
) -> None:
    good = list(synthetic_bars(["EURUSD"], "1m", 10))
    bad = [
        dataclasses.replace(good[0], ts=good[0].ts + timedelta(days=1), open=math.nan),
        dataclasses.replace(good[1], ts=good[1].ts + timedelta(days=1), volume=-5.0),
        dataclasses.replace(good[2], timeframe="3w"),
        DeadLetter(origin="csv:x.csv:7", reason="bad number in column 'open'", payload=b"x"),
    ]
    result = backbone.ingest([*good[:5], *bad, *good[5:]])
    assert (result.records_in, result.stored, result.dead_lettered, result.duplicates) == (
        14,
        10,
        4,
        0,
    )
    assert backbone.store.dead_letter_count() == 4
    assert backbone.store.count() == 10


def test_duplicates_are_absorbed_and_counted_apart(backbone: Backbone) -> None:
    bars = list(synthetic_bars(["EURUSD"], "1m", 50))
    backbone.ingest(bars)
    again = backbone.ingest(bars[10:20] + bars[10:12])
    assert (again.records_in, again.stored, again.duplicates) == (12, 0, 12)
    assert again.reconciles
    assert backbone.store.count() == 50


def test_out_of_order_bars_are_stored_in_time_order(backbone: Backbone) -> None:
    bars = list(synthetic_bars(["GBPUSD"], "5m", 40))
    result = backbone.ingest(list(reversed(bars)))
    assert result.stored == 40
    assert backbone.read("GBPUSD", "5m", START, FAR) == bars
    assert backbone.latest("GBPUSD", "5m") == bars[-1]


def test_state_survives_reopening_the_store(tmp_path: Path) -> None:
    bars = list(synthetic_bars(["EURUSD"], "1h", 24))
    with open_tier0(tmp_path) as bb:
        bb.ingest(bars)
    with open_tier0(tmp_path) as bb:
        assert bb.read("EURUSD", "1h", START, FAR) == bars


def test_health_reports_freshness_per_series_and_is_published(backbone: Backbone) -> None:
    reports: list[dict[str, object]] = []
    backbone.bus.subscribe(HEALTH_TOPIC, reports.append)
    bars = list(synthetic_bars(["EURUSD", "GBPUSD"], "1d", 3))
    backbone.ingest(bars)
    health = backbone.health()
    assert reports == [health]
    series = {(s["symbol"], s["timeframe"]): s for s in health["series"]}  # type: ignore[index, union-attr]
    assert set(series) == {("EURUSD", "1d"), ("GBPUSD", "1d")}
    newest = bars[-1].ts
    assert series[("EURUSD", "1d")]["latest_ts"] == newest.isoformat()
    age = (datetime.now(UTC) - newest).total_seconds()
    assert abs(series[("EURUSD", "1d")]["freshness_seconds"] - age) < 60
    assert health["store"] == {"backend": "duckdb", "bars": 6, "dead_letters": 0}


def test_a_closed_backbone_says_how_to_get_a_new_one(backbone: Backbone) -> None:
    backbone.close()
    with pytest.raises(RuntimeError, match=r"Backbone\.open"):
        backbone.ingest([])


hostile = st.one_of(
    st.tuples(st.integers(0, 29), st.just("ok")),
    st.tuples(st.integers(0, 29), st.sampled_from(["nan", "negvol", "highlow", "tf"])),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(hostile, max_size=80))
def test_any_mix_of_valid_bad_and_repeated_bars_reconciles(
    tmp_path_factory: pytest.TempPathFactory, plan: list[tuple[int, str]]
) -> None:
    base = list(synthetic_bars(["EURUSD"], "15m", 30))
    items: list[Bar] = []
    for index, kind in plan:
        bar = base[index]
        if kind == "nan":
            bar = dataclasses.replace(bar, close=math.nan)
        elif kind == "negvol":
            bar = dataclasses.replace(bar, volume=-1.0)
        elif kind == "highlow":
            bar = dataclasses.replace(bar, high=bar.low - 1.0)
        elif kind == "tf":
            bar = dataclasses.replace(bar, timeframe="2s")
        items.append(bar)
    with open_tier0(tmp_path_factory.mktemp("mix")) as bb:
        result = bb.ingest(items)
        valid_keys = {b.key for b, (_, kind) in zip(items, plan, strict=True) if kind == "ok"}
        assert result.records_in == len(items)
        assert result.reconciles
        assert result.stored == len(valid_keys) == bb.store.count()
        assert result.dead_lettered == sum(kind != "ok" for _, kind in plan)
        assert bb.store.dead_letter_count() == result.dead_lettered
