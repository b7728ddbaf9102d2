"""The alert rules are code: promtool checks and unit-tests them, and every
rule carries what an operator needs (a ``for:`` window, a severity, a summary,
a description and a runbook that exists)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from backbone_infra.monitoring.assets import RULES_TEST_FILE, rules_file

REPO = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian package `prometheus`); run `make setup`",
)


def _alerts() -> list[dict]:
    doc = yaml.safe_load(rules_file().read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=300, check=False
    )


@needs_promtool
def test_promtool_accepts_the_rules_file() -> None:
    result = _promtool("check", "rules", str(rules_file()))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests_of_every_rule_pass() -> None:
    result = _promtool("test", "rules", str(RULES_TEST_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n- name: g\n  rules:\n  - alert: X\n    expr: up ==\n")
    result = _promtool("check", "rules", str(bad))
    assert result.returncode != 0


@pytest.mark.parametrize("rule", _alerts(), ids=lambda r: r["alert"])
def test_every_alert_has_a_window_severity_text_and_runbook(rule: dict) -> None:
    assert "for" in rule, f"{rule['alert']} has no for: window"
    assert rule["labels"]["severity"] in {"info", "warning", "critical"}
    ann = rule["annotations"]
    assert ann["summary"].strip() and ann["description"].strip()
    # The link is the stack's runbook base URL (an external label) + the file.
    assert ann["runbook_url"] == "{{ $externalLabels.runbook_base }}/" + f"{rule['alert']}.md"
    runbook = REPO / "docs" / "runbooks" / f"{rule['alert']}.md"
    assert runbook.is_file(), f"write the runbook {runbook}"
    assert rule["alert"] in runbook.read_text()


@pytest.mark.parametrize("rule", _alerts(), ids=lambda r: r["alert"])
def test_every_runbook_names_the_drill_that_rehearses_its_alert_or_says_there_is_none(
    rule: dict,
) -> None:
    from backbone_harness.drills import DRILLS

    text = (REPO / "docs" / "runbooks" / f"{rule['alert']}.md").read_text()
    assert "**Rehearsed by**" in text, f"{rule['alert']}.md: say which drill rehearses it"
    section = text[text.index("**Rehearsed by**") :]
    named = [name for name in DRILLS if f"`{name}`" in section or f"run {name}" in section]
    assert named or "no drill" in section, (
        f"{rule['alert']}.md names no drill of `harness drill list` and does not say none does"
    )


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    doc = yaml.safe_load(RULES_TEST_FILE.read_text())
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert names - fired == set(), "alerts without a test that fires them"
    # The Watchdog fires always, by design: it has no quiet case.
    assert names - quiet == {"Watchdog"}, "alerts without a test where they stay quiet"
