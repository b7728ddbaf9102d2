"""The exported ``connections`` document: ``backbone.connections/v1`` exactly,
per tier, size and target, with the stack's real credentials."""

from __future__ import annotations

import pytest
from pulumi_rendering import (
    ALL_IDS,
    BOOTSTRAP_IDS,
    INSTITUTIONAL_IDS,
    Rendering,
    Renderings,
)

from backbone.connections import TOPIC_NAMES, parse_document
from backbone_infra.program import EXPORT_KEYS

#: Seconds the issue allows for running the program under mocks for every combination.
BUDGET_S = 30.0


@pytest.mark.parametrize("rendering", ALL_IDS, indirect=True)
def test_connections_validates_as_backbone_connections_v1(rendering: Rendering) -> None:
    doc = parse_document(rendering.exports["connections"])
    assert doc.stack == rendering.config.stack
    assert doc.environment == rendering.config.target
    assert (doc.tier, doc.size) == (rendering.config.tier, rendering.config.size)
    assert "connections" in rendering.secret_exports
    assert set(rendering.exports) == set(EXPORT_KEYS[doc.tier])


@pytest.mark.parametrize("rendering", BOOTSTRAP_IDS, indirect=True)
def test_bootstrap_exports_only_the_embedded_duckdb(rendering: Rendering) -> None:
    raw = rendering.exports["connections"]
    assert set(raw) == {"schema", "stack", "environment", "tier", "size", "duckdb"}
    assert raw["duckdb"]["path"] == rendering.exports["duckdb_path"]


@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_institutional_document_matches_the_spec(rendering: Rendering) -> None:
    spec = rendering.result.spec
    doc = parse_document(rendering.exports["connections"])
    assert doc.redis and doc.kafka and doc.timescale and doc.monitoring
    if spec.redis.sentinels:
        assert doc.redis.mode == "sentinel" and len(doc.redis.sentinels) == spec.redis.sentinels
        assert doc.redis.master_name == spec.redis.master_name
    else:
        assert doc.redis.mode == "standalone" and doc.redis.host
    assert len(doc.kafka.bootstrap_servers) == spec.kafka.brokers
    assert set(doc.kafka.topics) == set(TOPIC_NAMES)
    for t in spec.kafka.topics:
        info = doc.kafka.topics[t.logical]
        assert (info.name, info.partitions, info.replication_factor) == (
            t.name,
            t.partitions,
            t.replication_factor,
        )
    assert doc.kafka.sasl_mechanism == spec.kafka.sasl_mechanism
    assert len(doc.timescale.hosts) == spec.postgres.nodes and doc.timescale.timescaledb
    creds = rendering.credentials
    assert doc.redis.password.get_secret_value() == creds["redis_password"]
    assert doc.kafka.password and doc.kafka.password.get_secret_value() == creds["kafka_password"]
    assert doc.timescale.password.get_secret_value() == creds["postgres_password"]


@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_friendly_outputs_agree_with_the_document(rendering: Rendering) -> None:
    doc = rendering.exports["connections"]
    out = rendering.exports
    assert out["prometheus_url"] == doc["monitoring"]["prometheus_url"]
    assert out["grafana_url"] == doc["monitoring"]["grafana_url"]
    assert out["kafka_bootstrap"].split(",") == doc["kafka"]["bootstrap_servers"]
    assert out["timescale_hosts"] == [f"{h['host']}:{h['port']}" for h in doc["timescale"]["hosts"]]


def test_every_combination_renders_within_the_budget(renderings: Renderings) -> None:
    assert len(renderings.by_id) == len(ALL_IDS)
    assert renderings.seconds < BUDGET_S, (
        f"rendering {len(ALL_IDS)} combinations took {renderings.seconds:.1f} s"
    )
