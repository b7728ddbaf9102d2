"""Outage drills on the session's ha stack: nothing acknowledged is lost.

Each drill faults a node chosen by role, keeps writing through the backbone's
public API, recovers the node, and reconciles every acknowledged bar against
where it must be. Each leaves the stack as it found it (the node back, roles
restored), because other tests share ``ha_stack``. The whole-service outage
drills of the degraded modes run on the minimal ``local_stack``.
"""

from __future__ import annotations

import pytest

from backbone_harness.drills import DRILLS, run_drill
from backbone_infra.targets.local.provisioner import LocalStack

pytestmark = pytest.mark.integration


def test_killing_the_partition_leader_during_acks_all_produce_loses_no_acknowledged_bar(
    ha_stack: LocalStack,
) -> None:
    topic = ha_stack.document.kafka.topics["intraday_bars"].name  # type: ignore[union-attr]
    leader_before = ha_stack.kafka_partition_leader(topic, 0)

    report = run_drill(DRILLS["kafka-leader-kill"], ha_stack, max_write_s=60)

    assert report.target == leader_before
    assert report.acknowledged >= 500, report
    assert report.lost_acknowledged == 0, report.lost_examples
    assert report.duplicates == 0, "the idempotent producer wrote a record twice"
    assert report.figures["new_leader"] != leader_before
    assert report.passed, report.reason
    assert report.recovery_seconds <= 60
    assert "fenced" not in ha_stack.roles().values() and "down" not in ha_stack.roles().values()


def test_killing_the_redis_primary_reads_never_fail_and_the_cache_follows_sentinel(
    ha_stack: LocalStack,
) -> None:
    primary_before = ha_stack.redis_primary()

    report = run_drill(DRILLS["redis-primary-kill"], ha_stack, max_write_s=60)

    assert report.target == primary_before
    assert report.acknowledged >= 200, report
    assert report.lost_acknowledged == 0, report.lost_examples
    assert report.figures["reads"] > 0 and report.figures["read_failures"] == 0, report.reason
    assert report.figures["new_primary"] != primary_before
    assert report.passed, report.reason
    assert ha_stack.redis_primary() == primary_before  # handed back: the stack as found


def test_a_consumer_killed_between_store_and_offset_commit_loses_nothing_and_stores_once(
    ha_stack: LocalStack,
) -> None:
    report = run_drill(DRILLS["consumer-crash-after-store-commit"], ha_stack, max_write_s=60)

    assert report.figures["crashing_consumer_exit"] == -9  # SIGKILL at the crash point
    assert report.acknowledged >= 200, report
    assert report.lost_acknowledged == 0, report.lost_examples
    assert report.duplicates == 0, "a redelivered bar was stored twice"
    assert report.figures["redelivered_bars_absorbed"] > 0, "the crash missed the window"
    assert report.passed, report.reason


def test_with_every_redis_node_stopped_reads_come_from_the_store_and_the_cache_warms_back(
    ha_stack: LocalStack,
) -> None:
    primary_before = ha_stack.redis_primary()

    report = run_drill(DRILLS["redis-full-outage"], ha_stack, max_write_s=60)

    assert report.target.split(",")[-1] == primary_before  # the primary stopped last
    assert report.acknowledged >= 200, report
    assert report.lost_acknowledged == 0, report.lost_examples
    assert report.figures["reads"] > 0 and report.figures["read_failures"] == 0, report.reason
    assert report.figures["hit_ratio_during_outage"] == 0.0  # every read went to the store
    assert report.figures["warm_reads_served_by_store_fallback"] > 0
    assert report.figures["warm_hit_ratio_reached"] >= report.figures["warm_hit_ratio_target"]
    assert report.passed, report.reason
    assert ha_stack.redis_primary() == primary_before  # the stack as found


def test_members_joining_and_leaving_the_group_under_load_lose_nothing_and_store_once(
    ha_stack: LocalStack,
) -> None:
    report = run_drill(DRILLS["consumer-rebalance-storm"], ha_stack, max_write_s=60)

    assert report.figures["member_joins"] >= 6, "no storm happened"
    assert report.figures["member_leaves"] == report.figures["member_joins"]
    assert report.acknowledged >= 200, report
    assert report.lost_acknowledged == 0, report.lost_examples
    assert report.duplicates == 0, "a bar re-read after a rebalance was stored twice"
    assert report.passed, report.reason


# --- degraded modes (issue 16): whole-service outages on the minimal stack ------------


def test_redis_outage_with_a_consumer_restart_ingests_on_and_reattaches_without_stale_reads(
    local_stack: LocalStack,
) -> None:
    report = run_drill(DRILLS["redis-outage-restart"], local_stack, max_write_s=60, hold_s=3)

    assert report.figures["started_cache_degraded"] == "True"
    assert report.figures["acknowledged_while_redis_down"] > 0  # type: ignore[operator]
    assert report.figures["stale_reads"] == 0 and report.figures["read_failures"] == 0
    assert report.figures["quiet_hot_symbol_hits_after_reattach"] > 0  # type: ignore[operator]
    assert report.lost_acknowledged == 0, report.lost_examples
    assert report.duplicates == 0
    assert report.passed, report.reason
    assert local_stack.node(report.target).running()  # the stack as found


def test_a_store_outage_pauses_the_consumer_and_loses_or_doubles_nothing(
    local_stack: LocalStack,
) -> None:
    report = run_drill(DRILLS["store-outage"], local_stack, max_write_s=90, hold_s=1)

    assert report.figures["store_pauses"] >= 1  # type: ignore[operator]
    assert report.failed_writes == 0, report.write_errors  # blocked, never crashed
    assert report.lost_acknowledged == 0, report.lost_examples
    assert report.duplicates == 0
    assert report.passed, report.reason
    assert local_stack.node(report.target).running()


def test_killing_the_postgres_primary_fails_over_loses_nothing_and_the_node_rejoins(
    ha_stack: LocalStack,
) -> None:
    report = run_drill(DRILLS["postgres-primary-kill"], ha_stack, max_write_s=150, hold_s=0)

    assert report.figures["new_primary"] != report.target  # Patroni promoted another node
    assert report.lost_acknowledged == 0, report.lost_examples
    assert report.duplicates == 0
    assert report.passed, report.reason
    # The old primary rejoined as a standby, then got the role back: as found.
    assert ha_stack.postgres_primary() == report.target
    assert report.figures["pg_rewind"] != "unknown (no log)"
