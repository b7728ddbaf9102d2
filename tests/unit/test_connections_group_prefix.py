"""A stack's consumer groups: the clients check a group against the prefix the
Kafka ACLs grant, so a misnamed group is an error that names the rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from backbone.connections import DEFAULT_GROUP_PREFIX, ConnectionsError, KafkaConnection
from backbone.stream.consumer import DEFAULT_GROUP
from backbone_infra.spec import build_spec

_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=30)


def _kafka(prefix: str | None = None) -> KafkaConnection:
    """A Kafka section; ``None``: without ``group_prefix``, as older documents are."""
    topics = {t.logical: {"name": t.name} for t in build_spec("t").kafka.topics}
    section = {"bootstrap_servers": ["127.0.0.1:9092"], "topics": topics}
    return KafkaConnection.model_validate(
        section if prefix is None else {**section, "group_prefix": prefix}
    )


@given(prefix=_NAME, rest=_NAME)
def test_a_group_with_the_prefix_passes_and_one_without_is_refused(prefix: str, rest: str) -> None:
    kafka = _kafka(prefix)
    assert kafka.check_group(prefix + rest) == prefix + rest
    if not rest.startswith(prefix):
        with pytest.raises(ConnectionsError, match=f"name it '{prefix + rest}'"):
            kafka.check_group(rest)


def test_the_runtime_group_and_the_spec_use_the_default_prefix() -> None:
    assert DEFAULT_GROUP.startswith(DEFAULT_GROUP_PREFIX)
    assert build_spec("t").kafka.group_prefix == DEFAULT_GROUP_PREFIX
    assert _kafka().group_prefix == DEFAULT_GROUP_PREFIX  # a document without the field


@pytest.mark.parametrize("prefix", ["", "has space", "star*"])
def test_a_prefix_kafka_acls_cannot_hold_is_refused(prefix: str) -> None:
    with pytest.raises(ValidationError, match="group_prefix"):
        _kafka(prefix)
