"""Percentiles of Locust-style response-time histograms, against the expanded samples."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backbone_harness.load.histogram import histogram_percentile

histograms = st.dictionaries(st.integers(0, 5000), st.integers(1, 50), min_size=1, max_size=30)
quantiles = st.floats(min_value=0.01, max_value=1.0)


@given(histograms, quantiles)
def test_the_percentile_is_the_nearest_rank_of_the_expanded_samples(
    hist: dict[int, int], q: float
) -> None:
    samples = sorted(ms for ms, n in hist.items() for _ in range(n))
    rank = max(1, math.ceil(q * len(samples) - 1e-9))

    assert histogram_percentile(hist, q) == float(samples[rank - 1])


@given(histograms)
def test_percentiles_never_decrease_and_the_top_one_is_the_maximum(hist: dict[int, int]) -> None:
    values = [histogram_percentile(hist, q) for q in (0.5, 0.95, 0.99, 1.0)]

    assert values == sorted(values)  # type: ignore[type-var]
    assert values[-1] == float(max(hist))


def test_an_interval_with_no_requests_has_no_percentile() -> None:
    assert histogram_percentile({}, 0.5) is None
    assert histogram_percentile({120: 0}, 0.95) is None


def test_a_percentile_outside_0_to_1_is_refused() -> None:
    with pytest.raises(ValueError, match="not in"):
        histogram_percentile({1: 1}, 0.0)
