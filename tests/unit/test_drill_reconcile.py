"""Reconciliation of a drill: acknowledged keys against what a reader found."""

from __future__ import annotations

import itertools
from collections import Counter
from itertools import islice

from hypothesis import given
from hypothesis import strategies as st

from backbone.store.duckdb import DuckDBStore
from backbone_harness.drills.reconcile import reconcile
from backbone_harness.drills.writer import drill_bars, longest_gap, stored_keys

keys = st.integers(min_value=0, max_value=60)


@given(acked=st.lists(keys), found=st.lists(keys))
def test_lost_is_exactly_the_acknowledged_keys_no_reader_found(
    acked: list[int], found: list[int]
) -> None:
    r = reconcile(acked, found)
    assert r.lost_acknowledged == len(set(acked) - set(found))
    assert r.acknowledged == len(set(acked))
    assert r.stored == len(set(found))
    assert r.stored_unacknowledged == len(set(found) - set(acked))


@given(found=st.lists(keys))
def test_duplicates_count_every_extra_copy(found: list[int]) -> None:
    r = reconcile([], found)
    assert r.duplicates == len(found) - len(set(found))
    assert r.duplicates == sum(n - 1 for n in Counter(found).values())


@given(acked=st.lists(keys, min_size=1))
def test_everything_found_once_is_a_clean_reconciliation(acked: list[int]) -> None:
    r = reconcile(acked, set(acked))
    assert (r.lost_acknowledged, r.duplicates, r.stored_unacknowledged) == (0, 0, 0)
    assert r.lost_examples == ()


def test_lost_examples_name_the_missing_keys() -> None:
    r = reconcile(["a", "b", "c"], ["b", "b"])
    assert r.lost_acknowledged == 2 and r.lost_examples == ("a", "c")
    assert r.duplicates == 1


@given(
    ok=st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=30),
    since=st.floats(min_value=0, max_value=100, allow_nan=False),
)
def test_the_longest_gap_is_never_shorter_than_any_gap_after_the_fault(
    ok: list[float], since: float
) -> None:
    until = 120.0
    gap = longest_gap(ok, since, until)
    later = sorted(t for t in ok if t > since)
    points = [since, *later]
    assert all(gap >= b - a for a, b in itertools.pairwise(points))
    if not later:
        assert gap == until - since
    else:
        assert gap in {b - a for a, b in itertools.pairwise(points)}


def test_drill_bars_have_unique_keys_and_are_valid() -> None:

    from backbone.contract import BarContract

    bars = list(islice(drill_bars(["A", "B"]), 2000))
    assert len({b.key for b in bars}) == 2000
    assert all(BarContract().check(b) is None for b in bars)


def test_stored_keys_reads_back_exactly_the_drill_symbols_bars_in_the_drill_span() -> None:
    written = list(islice(drill_bars(["A", "B"]), 300))
    other = list(islice(drill_bars(["C"]), 50))
    with DuckDBStore(":memory:") as store:
        store.write(written + other)
        found = stored_keys(store, ["A", "B"], "1m")
    assert Counter(found) == Counter(b.key for b in written)
    assert not any(key[0] == "C" for key in found)  # type: ignore[index]
