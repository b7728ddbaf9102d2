"""Dead letters on Tier 0: counted per reason code, listed, shown, re-submitted after a fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backbone.bars import Bar
from backbone.contract import REASON_CODES
from backbone.runtime import Backbone
from backbone.settings import load_settings

HEADER = "symbol,timeframe,ts,open,high,low,close,volume\n"
ROWS = [
    "CLSPREAD,1m,2024-01-02T10:00:00Z,-1,-0.5,-2,-1,100",  # price_not_positive
    "CLSPREAD,1m,2024-01-02T10:01:00Z,-1,-0.5,-2,-1,100",  # price_not_positive
    "EURUSD,1m,2024-01-02T10:03:30Z,1.1,1.2,1.0,1.1,100",  # ts_misaligned
    'EURUSD,1m,"2024-01-02T10:04:00Z,1.1,1.2,1.0,1.1,100',  # csv_malformed
    "EURUSD,1m,2024-01-02T10:05:00Z,1.1,1.2,1.0,1.1,100",  # stored
]


def backbone_cli(tmp_path: Path, *args: str, config: str = "") -> subprocess.CompletedProcess[str]:
    (tmp_path / "config.yaml").write_text(config or "{}\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "BACKBONE_DUCKDB_PATH": str(tmp_path / "t0.duckdb"),
        "BACKBONE_CONFIG": str(tmp_path / "config.yaml"),
    }
    return subprocess.run(
        [sys.executable, "-m", "backbone", *args, "--tier", "bootstrap"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip


@pytest.fixture
def ingested(tmp_path: Path) -> Path:
    path = tmp_path / "rows.csv"
    path.write_text(HEADER + "\n".join(ROWS) + "\n")
    done = backbone_cli(tmp_path, "ingest", "--csv", str(path), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["dead_lettered"] == 4
    return tmp_path


def test_list_counts_by_reason_code_and_origin(ingested: Path) -> None:
    done = backbone_cli(ingested, "dead-letters", "list", "--json")
    assert done.returncode == 0, done.stderr
    (place,) = json.loads(done.stdout)["places"]
    assert place["where"] == "duckdb:dead_letter" and place["count"] == 4
    assert {(g["code"], g["origin"], g["count"]) for g in place["by_reason"]} == {
        ("price_not_positive", "csv", 2),
        ("ts_misaligned", "csv", 1),
        ("csv_malformed", "csv", 1),
    }
    only = backbone_cli(ingested, "dead-letters", "list", "--reason", "ts_misaligned", "--json")
    (place,) = json.loads(only.stdout)["places"]
    assert [e["code"] for e in place["latest"]] == ["ts_misaligned"]
    assert place["latest"][0]["origin"].endswith("rows.csv:4")


def test_show_prints_the_reason_and_the_raw_payload(ingested: Path) -> None:
    done = backbone_cli(ingested, "dead-letters", "show", "4", "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["code"] == "csv_malformed" and "unbalanced quote" in shown["reason"]
    assert shown["payload"] == ROWS[3]
    missing = backbone_cli(ingested, "dead-letters", "show", "99")
    assert missing.returncode == 2 and "no dead letter with id 99" in missing.stderr
    bad = backbone_cli(ingested, "dead-letters", "show", "0@3")
    assert bad.returncode == 2 and "no dead letter with id 0@3" in bad.stderr


def test_replay_after_a_config_fix_stores_them_and_marks_them_replayed(ingested: Path) -> None:
    unfixed = backbone_cli(ingested, "dead-letters", "replay", "--reason", "price_not_positive",
                           "--json")  # fmt: skip
    assert unfixed.returncode == 0, unfixed.stderr
    result = json.loads(unfixed.stdout)
    assert (result["stored"], result["dead_lettered"]) == (0, 2)  # refused again, same reason
    fix = "contract:\n  non_positive_price_symbols: [CLSPREAD]\n"
    fixed = backbone_cli(ingested, "dead-letters", "replay", "1", "2", "--json", config=fix)
    assert fixed.returncode == 0, fixed.stderr
    result = json.loads(fixed.stdout)
    assert (result["replayed"], result["stored"], result["reconciles"]) == (["1", "2"], 2, True)
    listed = backbone_cli(ingested, "dead-letters", "list", "--limit", "50", "--json")
    latest = {e["id"]: e for e in json.loads(listed.stdout)["places"][0]["latest"]}
    assert latest["1"]["replayed_at"] and latest["2"]["replayed_at"]
    assert latest["3"]["replayed_at"] is None
    unreadable = backbone_cli(ingested, "dead-letters", "replay", "4", "--json")
    assert json.loads(unreadable.stdout)["not_replayable"][0].startswith("4: not replayable")


def test_replay_needs_ids_or_a_reason(ingested: Path) -> None:
    done = backbone_cli(ingested, "dead-letters", "replay")
    assert done.returncode == 2 and "name the dead letters" in done.stderr
    done = backbone_cli(ingested, "dead-letters", "list", "--reason", "made_up")
    assert done.returncode == 2 and "is not a reason code" in done.stderr


def test_status_counts_dead_letters_where_they_are(ingested: Path) -> None:
    done = backbone_cli(ingested, "status", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["dead_letters"] == {"duckdb:dead_letter": 4}


def test_prometheus_counts_dead_letters_per_reason_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BACKBONE_OUTPUTS", raising=False)
    from datetime import UTC, datetime

    ts = datetime(2024, 1, 2, 10, tzinfo=UTC)
    bad = [
        Bar("EURUSD", "1m", ts, -1.0, 1.0, -2.0, 0.5, 1.0),
        Bar("EURUSD", "1m", ts, 1.0, 1.0, 1.0, 1.0, -1.0),
        Bar("EURUSD", "1m", ts.replace(second=1), 1.0, 1.0, 1.0, 1.0, 1.0),
        Bar("EURUSD", "1m", ts.replace(second=2), 1.0, 1.0, 1.0, 1.0, 1.0),
    ]
    settings = load_settings(duckdb_path=str(tmp_path / "t0.duckdb"))
    with Backbone.open(tier="bootstrap", settings=settings) as bb:
        bb.ingest(bad)
        value = bb.telemetry.value
        assert value("backbone_dead_letter_total", reason="price_not_positive") == 1
        assert value("backbone_dead_letter_total", reason="volume_negative") == 1
        assert value("backbone_dead_letter_total", reason="ts_misaligned") == 2
        rendered = bb.telemetry.render().decode()
    labels = {
        line.split('reason="')[1].split('"')[0]
        for line in rendered.splitlines()
        if line.startswith("backbone_dead_letter_total{")
    }
    assert labels <= set(REASON_CODES), "the label is the code, never free text"
