"""The sprint-close page, rendered from fixture status pages into a temporary folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from backbone_harness.bench.sprint_close import MissingProofError, write_sprint_close

REPO = Path(__file__).resolve().parents[2]

BRIEF_ITEMS = (
    "Redis stubs replaced",
    "Kafka streaming to the runtime bus",
    "The tier toggle",
    "Freshness in the CI health snapshot",
    "Cache hit ratio in the CI health snapshot",
    "Consumer lag in the CI health snapshot",
    "Runbooks",
    "Outage drills",
)

PAGES = {
    "performance": {
        "date": "2026-12-01T10:00:00+00:00",
        "tier0": {"bars_per_s": 111_111},
        "end_to_end": {"bars_per_s": 54_321, "reconciles": True},
        "cache": {"latest_per_s": 7_654},
    },
    "ci_health": {
        "generated_at": "2026-12-01T11:00:00Z",
        "stacks": [
            {
                "stack": "minimal",
                "freshness": {
                    "EURUSD 1m": {"last": 12.0, "max": 30.0},
                    "OLD 1d": {"last": 9e7, "max": 9e7},
                },
                "cache": {"backbone (redis)": {"hits": 30.0, "misses": 10.0, "ratio": 0.75}},
                "consumer_lag": {"bars / ingest": {"last": 0.0, "max": 4_321.0}},
            }
        ],
    },
    "drills": {
        "kafka-leader-kill": {
            "date": "2026-12-01T09:00:00+00:00",
            "passed": True,
            "acknowledged": 1_000,
            "lost_acknowledged": 0,
            "recovery_seconds": 5,
        },
        "redis-primary-kill": {
            "date": "2026-12-01T09:30:00+00:00",
            "passed": True,
            "acknowledged": 500,
            "lost_acknowledged": 0,
            "recovery_seconds": 7,
            "figures": {"cache_followed_after_s": 3.5, "read_failures": 0},
        },
    },
    "load": {
        "date": "2026-12-01T08:00:00+00:00",
        "locust": {"requests": 999, "failures": 0, "users": 4, "run_seconds": 30},
    },
}


def _status(tmp_path: Path, pages: dict[str, object]) -> Path:
    status = tmp_path / "status"
    status.mkdir()
    for name, page in pages.items():
        (status / f"{name}.json").write_text(json.dumps(page))
    return status


def _rows(text: str) -> dict[str, str]:
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| ---") and "proved by" not in line:
            rows[line.split(" | ")[0].lstrip("| ")] = line
    return rows


def test_every_item_of_the_brief_has_a_row_with_before_after_and_proof(tmp_path: Path) -> None:
    out = tmp_path / "page" / "sprint-close.md"
    write_sprint_close(_status(tmp_path, PAGES), out)
    rows = _rows(out.read_text())
    for item in BRIEF_ITEMS:
        matching = [line for name, line in rows.items() if name.startswith(item)]
        assert len(matching) == 1, f"no single row for {item!r} in {list(rows)}"
        cells = matching[0].strip("|").split(" | ")
        assert len(cells) == 4 and all(c.strip() for c in cells), matching[0]
        assert "](" in cells[3], f"{item!r} links to no proof"


def test_every_link_points_at_a_file_and_every_named_test_exists(tmp_path: Path) -> None:
    out = tmp_path / "page" / "sprint-close.md"
    write_sprint_close(_status(tmp_path, PAGES), out)
    links = re.findall(r"\[`([^`]+)`\]\(([^)]+)\)", out.read_text())
    assert len(links) >= len(BRIEF_ITEMS)
    for label, href in links:
        target = (out.parent / href).resolve()
        assert target.is_file(), f"{label} -> {href} does not exist"
        assert target.is_relative_to(REPO), f"{href} leaves the repository"
        if "::" in label:
            test = label.split("::")[1]
            assert re.search(rf"^def {test}\(", target.read_text(), re.M), label


def test_the_after_column_quotes_the_measured_pages(tmp_path: Path) -> None:
    out = tmp_path / "sprint-close.md"
    write_sprint_close(_status(tmp_path, PAGES), out)
    rows = _rows(out.read_text())
    assert "54,321 bars/s end to end" in rows["Kafka streaming to the runtime bus"]
    assert "111,111 bars/s" in rows["Kafka streaming to the runtime bus"]  # the Tier 0 "before"
    assert "75% (30 hits / 10 misses)" in rows["Cache hit ratio in the CI health snapshot"]
    assert "max lag 4,321 records" in rows["Consumer lag in the CI health snapshot"]
    assert "1 written live, 12 to 12 s behind" in rows["Freshness in the CI health snapshot"]
    assert "2 of 2 drills passed; 1,500 acknowledged bars, 0 lost" in rows["Outage drills"]
    assert "cache followed in 3.5 s" in rows["Redis stubs replaced by a real Redis cache"]


def test_a_missing_page_says_not_measured_instead_of_inventing_a_figure(tmp_path: Path) -> None:
    pages = {k: v for k, v in PAGES.items() if k != "drills"}
    out = tmp_path / "sprint-close.md"
    write_sprint_close(_status(tmp_path, pages), out)
    text = out.read_text()
    assert "`drills.json` (missing)" in text
    assert "not measured (run `harness drill run all`)" in _rows(text)["Outage drills"]


def test_a_proof_that_is_not_in_the_repository_is_an_error(tmp_path: Path) -> None:
    empty_repo = tmp_path / "repo"
    (empty_repo / "docs/runbooks").mkdir(parents=True)
    with pytest.raises(MissingProofError, match="does not exist"):
        write_sprint_close(_status(tmp_path, PAGES), tmp_path / "x.md", repo=empty_repo)


def test_the_command_names_a_missing_status_folder_with_exit_code_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from backbone_harness.cli import app

    result = CliRunner().invoke(
        app,
        [
            "bench",
            "sprint-close",
            "--status",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "x.md"),
        ],
    )
    assert result.exit_code == 2
    assert "is not a folder of status pages" in result.output
    assert not (tmp_path / "x.md").exists()
