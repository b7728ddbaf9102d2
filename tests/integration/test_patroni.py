"""PostgreSQL under Patroni on the session's ha stack: quorum commit and failover.

Each test leaves the stack as it found it (every node back, ``postgres-1``
primary), because other tests share ``ha_stack``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from backbone.bars import Bar
from backbone.settings import TimescaleConnectionSettings
from backbone.store.timescale import TimescaleStore
from backbone_infra.targets.local.provisioner import LocalStack

pytestmark = pytest.mark.integration

QUORUM_STANDBY = "standby (quorum)"


def _bars(n: int) -> list[Bar]:
    symbol = f"PT{secrets.token_hex(3).upper()}"
    t0 = datetime(2001, 1, 1, tzinfo=UTC)
    return [
        Bar(symbol, "1m", t0 + timedelta(minutes=i), 1.0, 1.1, 0.9, 1.05, 10.0) for i in range(n)
    ]


def _span(bars: list[Bar]) -> tuple[str, str, datetime, datetime]:
    """``read`` arguments covering ``bars`` (the end is exclusive)."""
    return bars[0].symbol, "1m", bars[0].ts, bars[-1].ts + timedelta(minutes=1)


def _wait(stack: LocalStack, what: str, check: object, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception as exc:  # a node mid-failover answers with errors
            last = exc
        time.sleep(0.2)
    pytest.fail(f"{what} did not happen; roles: {stack.roles()}; last error: {last}")


def _as_found(stack: LocalStack, node: str) -> None:
    """``node`` back as a quorum standby, then primary again; both others quorum standbys."""
    if not stack.node(node).running():
        stack.restart_node(node)
    _wait(stack, f"{node} rejoining", lambda: stack.roles()[node] in (QUORUM_STANDBY, "primary"))
    stack.postgres_switchover("postgres-1")
    _wait(
        stack,
        "every standby back in the quorum",
        lambda: (
            [r for n, r in sorted(stack.roles().items()) if n.startswith("postgres-")]
            == ["primary", QUORUM_STANDBY, QUORUM_STANDBY]
        ),
    )


@pytest.fixture
def store(ha_stack: LocalStack) -> Iterator[TimescaleStore]:
    section = ha_stack.document.timescale
    assert section is not None
    with TimescaleStore(
        TimescaleConnectionSettings.from_section(section, pool_max_size=2), timeout=90
    ) as opened:
        yield opened


def test_losing_one_standby_blocks_no_commit(ha_stack: LocalStack, store: TimescaleStore) -> None:
    """ANY 1 of two: with one standby killed, commits still return at once,
    acknowledged by the other; the killed one rejoins the quorum."""
    roles = ha_stack.roles()
    standby = next(n for n, r in sorted(roles.items()) if r == QUORUM_STANDBY)
    survivor = next(n for n, r in sorted(roles.items()) if r == QUORUM_STANDBY and n != standby)
    ha_stack.kill_node(standby)
    try:
        bars = _bars(50)
        # A commit under synchronous_commit=on returns only once a standby has
        # it; with FIRST 1 and this standby gone it would wait until it is back.
        assert store.write(bars) == len(bars)
        assert len(store.read(*_span(bars))) == len(bars)
        assert ha_stack.roles()[survivor] == QUORUM_STANDBY
    finally:
        _as_found(ha_stack, standby)


def test_a_commit_of_unknown_outcome_is_retried_across_a_failover_and_stored_once(
    ha_stack: LocalStack, store: TimescaleStore
) -> None:
    """The primary dies after a batch was committed but (as far as the client
    knows) not acknowledged; the client sends the same batch again. The retry
    reaches the promoted standby through the multi-host connection, finds every
    row already there (the quorum kept the commit) and stores none twice."""
    bars = _bars(200)
    assert store.write(bars) == len(bars)
    old = ha_stack.postgres_primary()
    ha_stack.kill_node(old)
    try:
        assert store.write(bars) == 0  # all present: nothing new, nothing doubled
        new = ha_stack.postgres_primary()
        assert new != old
        stored = store.read(*_span(bars))
        assert sorted(b.key for b in stored) == sorted(b.key for b in bars)
    finally:
        _as_found(ha_stack, old)
