"""A drill's load curve: the timeline cut at the fault marks, and its plot."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from backbone_harness.drills.load import PHASES, LoadOptions, plot_name, summarize
from backbone_harness.load.histogram import histogram_percentile
from backbone_harness.load.plots import plot_fault_window

STARTED = 1_700_000_000.0

#: One interval of one profile: {ms: count} (Locust's rounded response times) and how
#: many of those requests failed (Locust counts and times failed requests too).
intervals = st.tuples(
    st.dictionaries(st.integers(0, 3000), st.integers(1, 20), max_size=6),
    st.integers(0, 5),
)


def _result(kafka: list[Any], read: list[Any]) -> dict[str, Any]:
    rows = []
    for i, ((kh, kf), (rh, rf)) in enumerate(zip(kafka, read, strict=True)):
        row: dict[str, Any] = {"t": float(i + 1)}
        for kind, hist, failed in (("kafka", kh, kf), ("read", rh, rf)):
            n = sum(hist.values())
            row |= {
                f"{kind}_requests": n,
                f"{kind}_failures": min(failed, n),
                f"{kind}_rps": float(n),
                f"{kind}_fail_ps": float(min(failed, n)),
                f"{kind}_p50_ms": histogram_percentile(hist, 0.5) if n else None,
                f"{kind}_p95_ms": histogram_percentile(hist, 0.95) if n else None,
                f"{kind}_p99_ms": histogram_percentile(hist, 0.99) if n else None,
                # as the load process prints it: JSON keys are strings
                f"{kind}_hist": {str(ms): c for ms, c in hist.items()},
            }
        rows.append(row)
    return {"started_at": STARTED, "users": 4, "requests": 0, "failures": 0, "timeline": rows}


@settings(max_examples=50, deadline=None)
@given(
    data=st.lists(st.tuples(intervals, intervals), min_size=3, max_size=40),
    cuts=st.tuples(st.floats(0, 40), st.floats(0, 40), st.floats(0, 40)).map(sorted),
)
def test_the_phases_add_up_to_the_timeline_and_their_percentiles_are_the_merged_ones(
    data: list[Any], cuts: list[float]
) -> None:
    result = _result([k for k, _ in data], [r for _, r in data])
    start, end, back = cuts
    load = summarize(
        result,
        fault_start=STARTED + start,
        fault_end=STARTED + end,
        recovered=STARTED + back,
        options=LoadOptions(),
        plot="x.png",
    )

    # Offsets from the load's start, to the hundredth (as wall-clock differences:
    # 0.855 after a start of 1.7e9 is 0.8549999..., which rounds to 0.85).
    assert (load["fault_start_s"], load["fault_end_s"], load["recovered_s"]) == tuple(
        round((STARTED + t) - STARTED, 2) for t in (start, end, back)
    )
    rows = result["timeline"]
    # the fault as summarize sees it: wall-clock marks, as offsets from the start
    fault_from, fault_to = (STARTED + start) - STARTED, (STARTED + end) - STARTED
    for kind in ("kafka", "read"):
        phases = load["phases"][kind]
        assert list(phases) == list(PHASES)
        assert sum(p["requests"] for p in phases.values()) == sum(
            r[f"{kind}_requests"] for r in rows
        )
        assert sum(p["failures"] for p in phases.values()) == sum(
            r[f"{kind}_failures"] for r in rows
        )
        assert round(sum(p["seconds"] for p in phases.values()), 2) == rows[-1]["t"]
        # "during" is exactly the intervals whose midpoint lies inside the fault
        inside = [r for r in rows if fault_from <= r["t"] - 0.5 < fault_to]
        merged: Counter[int] = Counter()
        for r in inside:
            merged.update({int(ms): c for ms, c in r[f"{kind}_hist"].items()})
        assert phases["during"]["requests"] == sum(r[f"{kind}_requests"] for r in inside)
        assert phases["during"]["p99_ms"] == histogram_percentile(merged, 0.99)
        assert phases["during"]["max_ms"] == (max(merged) if merged else None)
        for p in phases.values():
            if p["p50_ms"] is not None:
                assert p["p50_ms"] <= p["p95_ms"] <= p["p99_ms"] <= p["max_ms"]
    assert not any(k.endswith("_hist") for r in load["timeline"] for k in r)


def test_the_plot_is_a_png_with_the_three_panels_of_the_fault_window(tmp_path: Path) -> None:
    result = _result(
        [({12: 30, 15: 5}, 0)] * 5 + [({2000: 3}, 3)] * 4 + [({40: 10, 900: 2}, 1)] * 5,
        [({1: 100, 2: 10}, 0)] * 14,
    )
    load = summarize(
        result,
        fault_start=STARTED + 5,
        fault_end=STARTED + 9,
        recovered=STARTED + 11,
        options=LoadOptions(),
        plot=plot_name("network-partition-kafka"),
    )
    marks = {k: load[k] for k in ("fault_start_s", "fault_end_s", "recovered_s")}

    path = plot_fault_window(load["timeline"], marks, tmp_path / load["plot"], "a drill")

    assert path.name == "drill-network-partition-kafka-load.png"
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert (width, height) == (800, 750)  # 8 x 7.5 in at 100 dpi: three stacked panels
    during = load["phases"]["kafka"]["during"]  # every send failed after 2 s
    assert (during["requests"], during["failures_per_s"], during["p50_ms"]) == (12, 3.0, 2000)
    assert load["phases"]["kafka"]["before"]["failures"] == 0
