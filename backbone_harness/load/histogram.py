"""Percentiles of a response-time histogram, as Locust keeps them ({ms: count}).

Pure (no Locust import, so no gevent patching): the load timeline takes the
difference of two cumulative histograms and asks for the percentiles of that
interval alone.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["histogram_percentile"]


def histogram_percentile(hist: Mapping[int, int], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0 < q <= 1) of ``hist``; None when it is empty."""
    if not 0.0 < q <= 1.0:
        raise ValueError(f"percentile {q} is not in (0, 1]")
    total = sum(n for n in hist.values() if n > 0)
    if not total:
        return None
    seen = 0
    for ms in sorted(k for k, n in hist.items() if n > 0):
        seen += hist[ms]
        if seen >= q * total:
            return float(ms)
    raise AssertionError("unreachable: the counts add up to the total")
