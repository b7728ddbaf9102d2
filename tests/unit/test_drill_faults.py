"""Faults on node groups: the target string names every node, in the order hit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backbone_harness.drills.faults import NodeGroupFault, join_nodes, split_nodes

node_names = st.lists(
    st.from_regex(r"[a-z]+-[0-9]", fullmatch=True), min_size=1, max_size=6, unique=True
)


@given(node_names)
def test_a_target_names_the_nodes_in_the_order_the_fault_hits_them(nodes: list[str]) -> None:
    assert split_nodes(join_nodes(nodes)) == nodes


def test_a_group_fault_needs_a_node() -> None:
    with pytest.raises(ValueError, match="at least one node"):
        join_nodes([])


class _Recorder:
    """Stands in for the stack's node control: records the calls, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def stop_node(self, name: str) -> None:
        self.calls.append(("stop", name))

    def kill_node(self, name: str) -> None:
        self.calls.append(("kill", name))

    def pause_node(self, name: str) -> None:
        self.calls.append(("pause", name))

    def restart_node(self, name: str) -> float:
        self.calls.append(("restart", name))
        if name == "bad-1":
            raise RuntimeError("bad-1 did not start")
        return 0.0


def test_a_group_fault_is_undone_in_reverse_order_and_every_node_is_tried() -> None:
    stack = _Recorder()
    fault = NodeGroupFault(role="two nodes", kind="stop")

    fault.apply(stack, "sentinel-1,bad-1,redis-1")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="bad-1"):
        fault.undo(stack, "sentinel-1,bad-1,redis-1")  # type: ignore[arg-type]

    assert stack.calls == [
        ("stop", "sentinel-1"), ("stop", "bad-1"), ("stop", "redis-1"),
        ("restart", "redis-1"), ("restart", "bad-1"), ("restart", "sentinel-1"),
    ]  # fmt: skip


def test_a_group_fault_restarted_together_restarts_every_node() -> None:
    stack = _Recorder()
    fault = NodeGroupFault(role="two brokers", kind="stop", together=True)

    fault.undo(stack, "kafka-2,kafka-3")  # type: ignore[arg-type]

    assert sorted(stack.calls) == [("restart", "kafka-2"), ("restart", "kafka-3")]


def test_every_fault_kind_has_the_word_the_drill_log_prints_and_every_drill_uses_a_known_kind() -> (
    None
):
    from typing import get_args

    from backbone_harness.drills.base import FaultKind
    from backbone_harness.drills.runner import _DONE, DRILLS

    assert set(_DONE) == set(get_args(FaultKind))
    assert {cls.fault.kind for cls in DRILLS.values()} <= set(_DONE)
