"""The CI health snapshot is an output with verdicts, and only `publish` touches docs/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backbone_harness import ci_health
from backbone_harness.ci_health import THRESHOLDS, StackWindow, checks, publish, render_markdown


def _window() -> StackWindow:
    w = StackWindow("minimal", "http://127.0.0.1:1", 1_000.0, 1_300.0)
    w.freshness = {
        "EURUSD 1m": {"last": 120.0, "max": 130.0},
        "GBPUSD 1m": {"last": 7_200.0, "max": 7_200.0},
        "EURUSD 1d": {"last": 86_400.0, "max": 86_400.0},
        "EURUSD.13ED 1m": {"last": 9e7, "max": 9e7},
        "T1A2B3C4 1d": {"last": 9e7, "max": 9e7},
    }
    w.cache = {"backbone (redis)": {"hits": 1.0, "misses": 3.0, "ratio": 0.25}}
    w.consumer_lag = {"market-data.intraday-bars / backbone-ingest": {"max": 5_000.0, "last": 0.0}}
    return w


def test_each_figure_passes_or_fails_against_the_alert_lines() -> None:
    verdicts = {c["figure"]: c["ok"] for c in checks(_window())}
    assert verdicts == {
        "freshness EURUSD 1m": True,
        "freshness GBPUSD 1m": False,  # 2 h > 18 min
        "freshness EURUSD 1d": True,
        "cache hit rate backbone (redis)": False,  # 25 % < 50 %
        "consumer lag market-data.intraday-bars / backbone-ingest": True,
    }


@given(last=st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_intraday_freshness_verdict_is_the_threshold_comparison(last: float) -> None:
    w = StackWindow("s", "u", 0.0, 1.0, freshness={"AUDUSD 1m": {"last": last, "max": last}})
    (check,) = checks(w)
    assert check["ok"] == (last <= THRESHOLDS["freshness_intraday_s"])


def test_markdown_hides_test_symbols_and_states_each_verdict() -> None:
    text = render_markdown([_window()], generated_at=1_300.0)
    assert ".13ED" not in text and "T1A2B3C4" not in text
    assert "(2 series of the tests' throw-away symbols not listed.)" in text
    assert "Checks: 3 of 5 figures pass; **failing:" in text
    assert "| GBPUSD 1m | 120.0 min | 120.0 min | <= 18.0 min | **FAIL** |" in text
    assert "| EURUSD 1m | 2.0 min | 2.2 min | <= 18.0 min | pass |" in text


def test_a_run_writes_to_the_build_folder_and_publish_copies_it(tmp_path: Path) -> None:
    out, docs = tmp_path / "build" / "status", tmp_path / "docs" / "status"
    md, js = ci_health.write_snapshot([_window()], directory=out)
    assert md.parent == out and not docs.exists()
    assert json.loads(js.read_text())["stacks"][0]["checks"]
    written = publish(out, docs)
    assert [p.name for p in written] == ["ci_health.md", "ci_health.json"]
    assert (docs / "ci_health.md").read_text() == md.read_text()


def test_publish_without_a_run_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make ci-health-publish"):
        publish(tmp_path / "nothing", tmp_path / "docs")


def test_the_default_output_is_ignored_by_git() -> None:
    repo = Path(__file__).resolve().parents[2]
    if not os.environ.get("HARNESS_STATUS_DIR"):
        assert repo / "build" / "status" == ci_health.STATUS_DIR
    assert "build/" in (repo / ".gitignore").read_text().splitlines()
