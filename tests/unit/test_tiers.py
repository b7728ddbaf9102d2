"""The tier toggle: how the tier is chosen, and refusing institutional with every failure named."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from backbone.settings import load_settings
from backbone.tiers import (
    TierError,
    TierValidationError,
    resolve_tier,
    switch_to_institutional,
    validate_institutional,
)
from tests.unit.test_settings import KAFKA_PW, PG_PW, REDIS_PW, document


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_flag_beats_environment_beats_document() -> None:
    doc = document()
    assert resolve_tier("bootstrap", {"BACKBONE_TIER": "institutional"}, doc) == "bootstrap"
    assert resolve_tier(None, {"BACKBONE_TIER": "bootstrap"}, doc) == "bootstrap"
    assert resolve_tier(None, {"BACKBONE_TIER": "Institutional"}, None) == "institutional"
    assert resolve_tier(None, {}, doc) == "institutional"
    assert resolve_tier(None, {}, None) == "bootstrap"


def test_a_document_without_redis_or_kafka_means_bootstrap() -> None:
    doc = document(tier="bootstrap", redis=None, kafka=None, timescale=None)
    assert resolve_tier(None, {}, doc) == "bootstrap"


def test_an_unknown_tier_is_refused_with_the_valid_choices() -> None:
    with pytest.raises(TierError, match="bootstrap, institutional"):
        resolve_tier("tier1", {}, None)
    with pytest.raises(TierError, match="BACKBONE_TIER"):
        resolve_tier(None, {"BACKBONE_TIER": "fast"}, None)


def _unreachable_settings() -> tuple[Any, dict[str, int]]:
    ports = {"redis": closed_port(), "kafka": closed_port(), "pg1": closed_port()}
    doc = document()
    settings = load_settings(
        doc,
        redis={"port": ports["redis"]},
        kafka={"bootstrap_servers": [f"127.0.0.1:{ports['kafka']}"]},
        timescale={"hosts": [{"host": "127.0.0.1", "port": ports["pg1"]}]},
    )
    return settings, ports


def test_every_hook_runs_and_each_failure_names_service_endpoint_and_kind() -> None:
    settings, ports = _unreachable_settings()
    results = validate_institutional(None, settings, timeout=1.0)
    assert [r.service for r in results] == [
        "redis",
        "kafka",
        "postgresql",
        "metrics",
        "health-topic",
    ]
    assert not any(r.ok for r in results)
    assert results[0].endpoint == f"127.0.0.1:{ports['redis']}"
    assert results[1].endpoint == f"127.0.0.1:{ports['kafka']}"
    assert results[2].endpoint == f"127.0.0.1:{ports['pg1']}"
    # Kafka and the store are required; the cache, metrics and the health topic degrade.
    assert {r.service: r.required for r in results} == {
        "redis": False,
        "kafka": True,
        "postgresql": True,
        "metrics": False,
        "health-topic": False,
    }
    assert "DEGRADED" in str(results[0]) and "degradable" in str(results[0])
    assert "FAILED" in str(results[1])
    # Hooks run at once: the timeouts cost about one.
    assert max(r.seconds for r in results) < 4.0


def test_switch_refuses_only_on_required_failures_naming_each_and_no_secret() -> None:
    settings, ports = _unreachable_settings()
    with pytest.raises(TierValidationError) as caught:
        switch_to_institutional(None, settings, timeout=1.0)
    message = str(caught.value)
    assert "2 of 2 required checks failed" in message
    assert f"kafka at 127.0.0.1:{ports['kafka']}" in message
    assert f"postgresql at 127.0.0.1:{ports['pg1']}" in message
    assert "redis" not in message  # degradable: not a reason to refuse
    assert "--tier bootstrap" in message
    for secret in (REDIS_PW, KAFKA_PW, PG_PW):
        assert secret not in message
    assert [f.service for f in caught.value.failures] == ["kafka", "postgresql"]


@pytest.mark.parametrize("how", ["flag", "config"])
def test_require_cache_makes_redis_a_refusing_check(how: str) -> None:
    settings, ports = _unreachable_settings()
    if how == "config":
        settings = settings.model_copy(update={"require_cache": True})
    flag = True if how == "flag" else None
    with pytest.raises(TierValidationError) as caught:
        switch_to_institutional(None, settings, timeout=1.0, require_cache=flag)
    message = str(caught.value)
    assert "3 of 3 required checks failed" in message
    assert f"redis at 127.0.0.1:{ports['redis']}" in message
    assert "--require-cache" in message
    assert {f.service for f in caught.value.failures} == {"redis", "kafka", "postgresql"}


def test_a_missing_section_is_a_failing_check_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TierValidationError) as caught:
        switch_to_institutional(None, load_settings(), timeout=0.5)
    assert "not configured" in str(caught.value)
    assert {f.service for f in caught.value.failures} == {"kafka", "postgresql"}
