"""The pieces every benchmark figure is made of: ratio, load, profile hot spots."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backbone_harness.bench.measure import figure, profiled


@given(
    value=st.floats(min_value=0.1, max_value=1e9),
    ceiling=st.floats(min_value=0.1, max_value=1e9),
)
def test_a_figure_carries_its_ceiling_the_ratio_and_the_load(value: float, ceiling: float) -> None:
    f = figure("p", "ours", value, "rows/s", "c", ceiling)
    assert f["ratio"] == pytest.approx(value / ceiling, rel=1e-2, abs=1e-3)
    assert len(f["load_average"]) == 3 and all(x >= 0 for x in f["load_average"])


def test_a_zero_ceiling_gives_no_ratio_rather_than_a_crash() -> None:
    assert figure("p", "ours", 5.0, "rows/s", "c", 0.0)["ratio"] is None


def _spin() -> int:
    total = 0
    for i in range(300_000):
        total += i * i % 7
    return total


def _nap() -> None:
    time.sleep(0.2)


def test_the_profile_names_the_function_that_spends_the_time_and_its_kind() -> None:
    result, hot = profiled(lambda: (_spin(), _nap()))
    assert result[0] > 0
    names = [h["function"] for h in hot]
    assert any(n.startswith("_spin (") for n in names), names
    kinds = {h["function"].split(" ")[0]: h["kind"] for h in hot}
    assert kinds["_spin"] == "CPU"
    sleeps = [h for h in hot if "time.sleep" in h["function"]]
    assert sleeps and sleeps[0]["kind"] == "I/O or wait", hot
    assert sum(h["share_of_own_time"] for h in hot) <= 1.0 + 1e-9
