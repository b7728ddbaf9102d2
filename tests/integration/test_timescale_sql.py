"""The Timescale-specific SQL, run against a real TimescaleDB.

The oracle is TimescaleDB 2.23 inside PGlite (see ``backbone_harness/timescale_oracle``):
the schema's hypertable, compression and retention statements, and the
store's ``time_bucket``/``first``/``last`` read, run there unchanged. The
oracle serves one connection at a time and drops large messages (COPY), so
each test opens the store (``oracle.store()``: one connection, ``unnest``
writes) or a plain connection, never both at once; the COPY path is covered
against PostgreSQL in ``test_timescale_store.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from backbone.bars import Bar, synthetic_bars
from backbone.store import BUCKET_ORIGIN, DuckDBStore, TimescaleStore
from backbone.store.schema import schema_statements
from backbone_harness.timescale_oracle import TimescaleOracle, oracle_unavailable, timescale_oracle

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(oracle_unavailable() is not None, reason=str(oracle_unavailable())),
]

T0 = datetime(2024, 1, 1, tzinfo=UTC)
ORIGIN = datetime.fromisoformat(BUCKET_ORIGIN)
RETENTION_DAYS = 400


@pytest.fixture(scope="module")
def series() -> list[Bar]:
    # 20 days of 15-minute bars for two pairs: several 7-day chunks
    return list(synthetic_bars(["EURUSD", "USDJPY"], "15m", 20 * 96, seed=21))


@pytest.fixture(scope="module")
def oracle(tmp_path_factory, series) -> Iterator[TimescaleOracle]:
    with timescale_oracle(tmp_path_factory.mktemp("timescale-oracle")) as running:
        with running.connect() as conn:
            for stmt in schema_statements(timescaledb=True, retention_days=RETENTION_DAYS):
                conn.execute(stmt)
        with running.store() as store:
            assert store.write(series) == len(series)
        yield running


@pytest.fixture
def store(oracle) -> Iterator[TimescaleStore]:
    with oracle.store() as s:
        yield s


def test_the_schema_makes_bars_a_compressed_hypertable_with_both_policies(oracle):
    with oracle.connect() as conn:
        assert conn.execute(
            "SELECT compression_enabled FROM timescaledb_information.hypertables "
            "WHERE hypertable_name = 'bars'"
        ).fetchall() == [(True,)]
        dims = conn.execute(
            "SELECT column_name, time_interval FROM timescaledb_information.dimensions "
            "WHERE hypertable_name = 'bars'"
        ).fetchall()
        assert dims == [("ts", timedelta(days=7))]
        settings = dict(
            conn.execute(
                "SELECT attname, coalesce(segmentby_column_index, 0) > 0 "
                "FROM timescaledb_information.compression_settings "
                "WHERE hypertable_name = 'bars'"
            ).fetchall()
        )
        assert settings == {"symbol": True, "timeframe": True, "ts": False}
        jobs = dict(
            conn.execute(
                "SELECT proc_name, config FROM timescaledb_information.jobs "
                "WHERE hypertable_name = 'bars'"
            ).fetchall()
        )
    assert jobs["policy_compression"]["compress_after"] == "30 days"
    assert jobs["policy_retention"]["drop_after"] == f"{RETENTION_DAYS} days"


def test_applying_the_schema_again_changes_nothing(oracle):
    def state(conn):
        return conn.execute(
            "SELECT (SELECT count(*) FROM timescaledb_information.jobs "
            "        WHERE hypertable_name = 'bars'), "
            "       (SELECT count(*) FROM timescaledb_information.hypertables)"
        ).fetchone()

    with oracle.connect() as conn:
        before = state(conn)
        for stmt in schema_statements(timescaledb=True, retention_days=RETENTION_DAYS):
            conn.execute(stmt)
        assert state(conn) == before == (2, 1)


def test_bars_land_in_seven_day_chunks(oracle, series):
    span = series[-1].ts - series[0].ts
    with oracle.connect() as conn:
        (chunks,) = conn.execute(
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'bars'"
        ).fetchone()
    # 2024-01-01 is not a chunk boundary, so 20 days touch 3 or 4 chunks
    assert span // timedelta(days=7) + 1 <= chunks <= span // timedelta(days=7) + 2


def test_upserts_into_the_hypertable_are_idempotent(store, series):
    assert store.write(series[:500]) == 0
    assert store.count() == len(series)


def expected_buckets(series: list[Bar], bucket: timedelta) -> list[tuple]:
    groups: dict[datetime, list[Bar]] = {}
    for bar in sorted(series, key=lambda b: b.ts):
        groups.setdefault(ORIGIN + ((bar.ts - ORIGIN) // bucket) * bucket, []).append(bar)
    return [
        (s, g[0].open, max(b.high for b in g), min(b.low for b in g), g[-1].close)
        for s, g in sorted(groups.items())
    ]


@pytest.mark.parametrize(
    "bucket", [timedelta(hours=1), timedelta(hours=4), timedelta(days=1), timedelta(days=7)]
)
def test_time_bucket_reads_aggregate_ohlcv(store, series, bucket):
    assert "time_bucket(" in store.bucketed_sql() and "first(open, ts)" in store.bucketed_sql()
    lo, hi = T0 + timedelta(days=2, hours=3), T0 + timedelta(days=16)
    got = store.bucketed("USDJPY", "15m", bucket, lo, hi)
    source = [b for b in series if b.symbol == "USDJPY" and lo <= b.ts < hi]
    assert [(b.ts, b.open, b.high, b.low, b.close) for b in got] == expected_buckets(source, bucket)
    assert sum(b.volume for b in got) == pytest.approx(sum(b.volume for b in source))


def test_timescale_and_duckdb_bucket_alike(store, series):
    with DuckDBStore(":memory:") as duck:
        duck.write(series)
        for bucket in (timedelta(minutes=45), timedelta(hours=6), timedelta(days=3)):
            assert store.bucketed("EURUSD", "15m", bucket, T0, T0 + timedelta(days=30)) == (
                duck.bucketed("EURUSD", "15m", bucket, T0, T0 + timedelta(days=30))
            )


def test_compressed_chunks_still_answer_the_same_reads(oracle):
    window = (T0, T0 + timedelta(days=30))
    with oracle.store() as store:
        before = store.bucketed("EURUSD", "15m", timedelta(days=1), *window)
        raw_before = store.read("EURUSD", "15m", *window)
    with oracle.connect() as conn:
        compressed = conn.execute(
            "SELECT compress_chunk(c, if_not_compressed => TRUE) "
            "FROM show_chunks('bars', older_than => TIMESTAMPTZ '2024-01-15 00:00+00') c"
        ).fetchall()
        assert compressed, "no chunk was old enough to compress"
        (n_compressed,) = conn.execute(
            "SELECT count(*) FROM timescaledb_information.chunks "
            "WHERE hypertable_name = 'bars' AND is_compressed"
        ).fetchone()
    assert n_compressed == len(compressed)
    with oracle.store() as store:
        assert store.bucketed("EURUSD", "15m", timedelta(days=1), *window) == before
        assert store.read("EURUSD", "15m", *window) == raw_before
