"""The Tier 1 store against the PostgreSQL of a real local stack.

Uses the session fixture ``local_stack``. Every test writes its own symbols
(``T`` + random hex), so tests neither see nor disturb each other's rows.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from backbone.bars import Bar, synthetic_bars
from backbone.deadletter import DeadLetter
from backbone.settings import TimescaleConnectionSettings
from backbone.store import BUCKET_ORIGIN, BarStore, DuckDBStore, StoreError, TimescaleStore

pytestmark = pytest.mark.integration

T0 = datetime(2024, 1, 1, tzinfo=UTC)
FAR = datetime(2100, 1, 1, tzinfo=UTC)


def new_symbol() -> str:
    return "T" + uuid.uuid4().hex[:7].upper()


@pytest.fixture(scope="module")
def pg(local_stack) -> TimescaleConnectionSettings:
    conn = local_stack.document.timescale
    assert conn is not None, "the local stack's outputs document has no timescale section"
    return TimescaleConnectionSettings.from_section(conn)


def pooled(pg: TimescaleConnectionSettings, size: int) -> TimescaleConnectionSettings:
    return TimescaleConnectionSettings.from_section(pg, pool_max_size=size)


@pytest.fixture
def store(pg) -> Iterator[TimescaleStore]:
    with TimescaleStore(pooled(pg, 2)) as s:
        yield s


def raw(pg: TimescaleConnectionSettings) -> psycopg.Connection:
    return psycopg.connect(pg.conninfo(), password=pg.password.get_secret_value(), autocommit=True)


def test_it_is_a_bar_store_on_the_stacks_primary(store):
    assert isinstance(store, BarStore)
    assert "target_session_attrs=read-write" in store.connection.conninfo()


# --- idempotent upserts ------------------------------------------------------------


def test_a_second_write_of_the_same_bars_inserts_nothing(store):
    symbol = new_symbol()
    bars = list(synthetic_bars([symbol], "1m", 1_000, seed=1))
    assert store.write(bars) == 1_000
    assert store.write(bars) == 0
    more = list(synthetic_bars([symbol], "1m", 1_500, seed=1))
    assert store.write(more) == 500
    assert store.count(symbol) == 1_500


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    picks=st.lists(st.integers(0, 199), min_size=1, max_size=300),
    cuts=st.lists(st.integers(1, 300), max_size=4),
    seed=st.integers(0, 1000),
)
def test_duplicates_and_out_of_order_bars_keep_the_first_write(store, picks, cuts, seed):
    symbol = new_symbol()
    pool = list(synthetic_bars([symbol], "5m", 200, seed=seed))
    # a later write of the same key carries other values: the first one must win
    later = [Bar(b.symbol, b.timeframe, b.ts, 1.0, 2.0, 0.5, 1.5, 7.0, "backfill") for b in pool]
    stream = [pool[i] for i in picks] + [later[i] for i in picks]
    random.Random(seed).shuffle(stream[: len(picks)])
    edges = sorted({c for c in cuts if c < len(stream)})
    batches = [stream[a:b] for a, b in zip([0, *edges], [*edges, len(stream)], strict=True)]

    first: dict = {}
    for bar in stream:
        first.setdefault(bar.key, bar)
    assert sum(store.write(batch) for batch in batches) == len(first)
    got = store.read(symbol, "5m", T0, FAR)
    assert got == sorted(first.values(), key=lambda b: b.ts)


# --- the COPY path and one transaction per write -----------------------------------


def test_a_large_batch_goes_through_copy_in_one_call(store):
    symbol = new_symbol()
    bars = list(synthetic_bars([symbol], "1m", 50_000, seed=2))
    started = time.perf_counter()
    assert store.write(bars) == 50_000
    took = time.perf_counter() - started
    assert store.count(symbol, "1m") == 50_000
    assert store.latest(symbol, "1m") == bars[-1]
    print(f"COPY path: 50,000 bars in {took:.2f}s ({50_000 / took:,.0f} bars/s)")


def test_a_batch_the_database_refuses_leaves_nothing_behind(store):
    symbol = new_symbol()
    good = list(synthetic_bars([symbol], "1h", 100))
    poisoned = Bar(
        "NUL\x00BYTE", "1h", T0, 1.0, 1.0, 1.0, 1.0, 1.0
    )  # PostgreSQL text cannot hold NUL
    with pytest.raises(StoreError, match="nothing of it was stored"):
        store.write([*good[:50], poisoned, *good[50:]])
    assert store.count(symbol) == 0
    assert store.write(good) == 100


# --- state, ranges, buckets, snapshots ---------------------------------------------


def test_state_survives_a_new_client_process(store, local_stack):
    symbol = new_symbol()
    bars = list(synthetic_bars([symbol], "15m", 300, seed=5))
    store.write(bars)
    store.close()
    code = (
        "import json, sys\n"
        "from backbone.connections import load_document\n"
        "from backbone.store import TimescaleStore\n"
        "from backbone.settings import TimescaleConnectionSettings as T\n"
        "with TimescaleStore(T.from_section(load_document(sys.argv[1]).timescale)) as s:\n"
        "    last = s.latest(sys.argv[2], '15m')\n"
        "    print(json.dumps([s.count(sys.argv[2]), last.ts.isoformat(), last.close]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(local_stack.outputs_path), symbol],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout) == [300, bars[-1].ts.isoformat(), bars[-1].close]


def test_reads_by_range_are_half_open_and_ordered(store):
    symbol = new_symbol()
    bars = list(synthetic_bars([symbol], "1h", 24 * 10, seed=6))
    store.write(random.Random(6).sample(bars, len(bars)))
    lo, hi = T0 + timedelta(days=2, hours=5), T0 + timedelta(days=4)
    assert store.read(symbol, "1h", lo, hi) == [b for b in bars if lo <= b.ts < hi]
    assert store.read(symbol, "1d", lo, hi) == []
    assert store.latest(symbol, "1h") == bars[-1]
    assert store.latest(new_symbol(), "1h") is None


def test_bucketed_reads_match_duckdb(store):
    symbol = new_symbol()
    bars = list(synthetic_bars([symbol], "5m", 12 * 24 * 4, seed=7))
    store.write(bars)
    assert ("time_bucket(" if store.timescaledb else "date_bin(") in store.bucketed_sql()
    with DuckDBStore(":memory:") as duck:
        duck.write(bars)
        for bucket in (timedelta(minutes=30), timedelta(hours=3), timedelta(days=1)):
            lo, hi = T0 + timedelta(hours=1, minutes=25), T0 + timedelta(days=3, hours=2)
            got = store.bucketed(symbol, "5m", bucket, lo, hi)
            assert got == duck.bucketed(symbol, "5m", bucket, lo, hi)
            origin = datetime.fromisoformat(BUCKET_ORIGIN)
            assert all((b.ts - origin) % bucket == timedelta(0) for b in got)
            assert sum(b.volume for b in got) == sum(b.volume for b in bars if lo <= b.ts < hi)


def test_snapshot_streams_each_symbol_in_time_order(store):
    symbols = [new_symbol(), new_symbol(), new_symbol()]
    bars = list(synthetic_bars(symbols, "1m", 4_000, seed=8))
    store.write(bars[::-1])
    got = list(store.snapshot(T0, FAR, symbols=symbols[:2]))
    assert len(got) == 8_000 and {b.symbol for b in got} == set(symbols[:2])
    keys = [(b.ts, b.symbol, b.timeframe) for b in got]
    assert keys == sorted(keys)
    assert got == sorted(
        (b for b in bars if b.symbol in symbols[:2]), key=lambda b: (b.ts, b.symbol)
    )


# --- native partitioning, dead letters ---------------------------------------------


def test_rows_land_in_yearly_partitions(store, pg):
    if store.timescaledb:
        pytest.skip("this stack runs TimescaleDB: hypertable chunks, covered by the oracle test")
    symbol = new_symbol()
    start = datetime(2023, 12, 30, tzinfo=UTC)
    store.write(list(synthetic_bars([symbol], "1h", 24 * 4, start=start)))
    with raw(pg) as conn:
        where = dict(
            conn.execute(
                "SELECT tableoid::regclass::text, count(*) FROM bars WHERE symbol = %s GROUP BY 1",
                (symbol,),
            ).fetchall()
        )
        (kind,) = conn.execute(
            "SELECT relkind::text FROM pg_class WHERE oid = 'bars'::regclass"
        ).fetchone()
    assert kind == "p"  # a partitioned table
    assert where == {"bars_y2023": 48, "bars_y2024": 48}


def test_dead_letters_are_stored_with_reason_and_exact_bytes(store):
    origin = f"csv:{new_symbol()}.csv"
    items = [
        DeadLetter(f"{origin}:2", "high below low", b'{"symbol": "EURUSD"}'),
        DeadLetter(f"{origin}:3", "undecodable bytes (not UTF-8 at byte 0)", b"\xff\x00\xfe"),
    ]
    before = store.dead_letter_count()
    store.write_dead_letters(items)
    assert store.dead_letter_count() == before + 2
    assert [d for d in store.dead_letters() if d.origin.startswith(origin)] == items


# --- connections: retries, restarts, secrets ---------------------------------------


def test_a_write_is_retried_once_when_its_connection_is_cut(pg):
    name = f"backbone-test-{uuid.uuid4().hex[:8]}"
    symbol = new_symbol()
    with TimescaleStore(pooled(pg, 1), application_name=name) as s:
        s.write(list(synthetic_bars([symbol], "1m", 10)))
        with raw(pg) as conn:
            (cut,) = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (name,),
            ).fetchone()
        assert cut == 1
        assert s.write(list(synthetic_bars([symbol], "1m", 20))) == 10
        assert s.retried_transactions <= 1  # the pool's check may have caught it first
        assert s.count(symbol) == 20


@pytest.mark.slow
def test_a_write_during_a_postgres_restart_lands_once_it_is_back(pg, local_stack):
    symbol = new_symbol()
    node = next(n for n in local_stack.node_names() if n.startswith("postgres"))
    with TimescaleStore(pooled(pg, 1), timeout=60) as s:
        s.write(list(synthetic_bars([symbol], "1m", 10)))
        local_stack.stop_node(node)
        restarter = threading.Timer(2.0, local_stack.restart_node, args=(node,))
        restarter.start()
        try:
            assert s.write(list(synthetic_bars([symbol], "1m", 30))) == 20
        finally:
            restarter.join()
        assert s.count(symbol) == 30


def test_errors_never_show_the_password(pg):
    wrong = pg.model_copy(update={"password": SecretStr("Wr0ng-" + uuid.uuid4().hex)})
    with pytest.raises(StoreError) as caught:
        TimescaleStore(wrong, timeout=3)
    message = str(caught.value)
    assert "password authentication failed" in message
    assert wrong.password.get_secret_value() not in message
    assert pg.password.get_secret_value() not in message
    assert "harness status" in message
