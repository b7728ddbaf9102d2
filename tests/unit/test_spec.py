"""The stack spec: two sizes, defined once, as plain validated data."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from backbone.connections import TOPIC_NAMES
from backbone_infra.spec import SIZES, StackSpec, build_spec


def test_minimal_is_one_node_of_each_service() -> None:
    spec = build_spec("dev")
    assert (spec.tier, spec.size) == ("institutional", "minimal")
    assert spec.redis.nodes == 1 and spec.redis.sentinels == 0
    assert spec.kafka.brokers == 1
    assert spec.postgres.nodes == 1
    assert spec.kafka.replication_factor == 1 and spec.kafka.min_insync_replicas == 1


def test_ha_has_replicas_sentinels_a_kraft_quorum_and_patroni_with_two_standbys() -> None:
    spec = build_spec("dev", size="ha")
    assert spec.redis.replicas == 1 and spec.redis.sentinels == 3
    assert spec.redis.quorum == 2
    assert spec.kafka.brokers == 3 and spec.kafka.combined_mode
    assert spec.kafka.replication_factor == 3 and spec.kafka.min_insync_replicas == 2
    assert spec.postgres.standbys == 2 and spec.postgres.synchronous
    assert spec.postgres.patroni is not None
    assert spec.postgres.patroni.synchronous_node_count == 1
    assert build_spec("dev").postgres.patroni is None


@pytest.mark.parametrize("size", SIZES)
def test_every_topic_of_the_backbone_is_declared_with_the_size_replication(size: str) -> None:
    spec = build_spec("dev", size=size)  # type: ignore[arg-type]
    assert {t.logical: t.name for t in spec.kafka.topics} == TOPIC_NAMES
    for topic in spec.kafka.topics:
        assert topic.replication_factor == spec.kafka.replication_factor
        assert topic.min_insync_replicas == spec.kafka.min_insync_replicas
        assert topic.min_insync_replicas <= topic.replication_factor
        assert topic.retention_ms > 0


def test_sentinel_timings_are_tuned_down_for_fast_local_failover() -> None:
    redis = build_spec("dev", size="ha").redis
    assert redis.down_after_ms < 30_000 and redis.failover_timeout_ms < 180_000
    assert redis.down_after_ms < redis.failover_timeout_ms


def test_bootstrap_tier_runs_no_services() -> None:
    assert not build_spec("dev", tier="bootstrap").has_services
    assert build_spec("dev", tier="institutional").has_services


@pytest.mark.parametrize(("kwargs", "word"), [({"size": "huge"}, "size"), ({"tier": "x"}, "tier")])
def test_unknown_size_or_tier_is_refused_with_the_choices(
    kwargs: dict[str, str], word: str
) -> None:
    with pytest.raises(ValueError, match=f"unknown {word}.*choose one of"):
        build_spec("dev", **kwargs)  # type: ignore[arg-type]


def test_the_spec_is_frozen_and_rejects_unknown_fields() -> None:
    spec = build_spec("dev")
    with pytest.raises(ValidationError):
        spec.redis.replicas = 3  # type: ignore[misc]
    with pytest.raises(ValidationError):
        StackSpec.model_validate({**spec.model_dump(), "surprise": 1})


def test_the_spec_round_trips_through_json() -> None:
    spec = build_spec("dev", size="ha")
    assert StackSpec.model_validate_json(spec.model_dump_json()) == spec


@given(st.from_regex(r"[a-z0-9][a-z0-9-]{0,38}", fullmatch=True))
def test_any_dns_like_name_is_a_valid_stack_name(name: str) -> None:
    assert build_spec(name).name == name


@given(
    st.text(min_size=1, max_size=60).filter(
        lambda s: (
            not (s[0].isascii() and (s[0].islower() or s[0].isdigit()))
            or len(s) > 39
            or any(not (c.isascii() and (c.islower() or c.isdigit() or c == "-")) for c in s)
        )
    )
)
def test_names_that_could_not_be_a_directory_or_dns_label_are_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        build_spec(name)
