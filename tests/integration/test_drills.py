"""Outage drills on the session's ha stack: nothing acknowledged is lost.

Each drill faults a node chosen by role, keeps writing through the backbone's
public API, recovers the node, and reconciles every acknowledged bar against
where it must be. Each leaves the stack as it found it (the node back, roles
restored), because other tests share ``ha_stack``. The whole-service outage
drills of the degraded modes run on the minimal ``local_stack``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backbone_harness.drills import DRILLS, run_drill, write_report
from backbone_harness.drills.load import PHASES, LoadOptions
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
    assert report.figures["acknowledged_while_redis_down"] > 0
    assert report.figures["stale_reads"] == 0 and report.figures["read_failures"] == 0
    assert report.figures["quiet_hot_symbol_hits_after_reattach"] > 0
    assert report.lost_acknowledged == 0, report.lost_examples
    assert report.duplicates == 0
    assert report.passed, report.reason
    assert local_stack.node(report.target).running()  # the stack as found


def test_a_store_outage_pauses_the_consumer_and_loses_or_doubles_nothing(
    local_stack: LocalStack,
) -> None:
    report = run_drill(DRILLS["store-outage"], local_stack, max_write_s=90, hold_s=1)

    assert report.figures["store_pauses"] >= 1
    assert report.failed_writes == 0, report.write_errors  # blocked, never crashed
    assert report.lost_acknowledged == 0, report.lost_examples
    assert report.duplicates == 0
    assert report.passed, report.reason
    assert local_stack.node(report.target).running()


# --- network faults (issue 12): the path cut or slowed, the node untouched ------------


@pytest.mark.parametrize("drill", ["network-partition", "network-partition-kafka"])
def test_a_cut_path_acknowledges_nothing_then_heals_with_nothing_lost_or_twice(
    ha_stack: LocalStack, drill: str
) -> None:
    leader = ha_stack.kafka_partition_leader(
        ha_stack.document.kafka.topics["intraday_bars"].name,  # type: ignore[union-attr]
        0,
    )
    role_holder = leader if drill.endswith("kafka") else ha_stack.postgres_primary()

    report = run_drill(DRILLS[drill], ha_stack, max_write_s=90, hold_s=4)

    assert report.target == role_holder  # picked by role at run time
    assert report.figures["writes_acknowledged_in_first_s_of_partition"] == 0
    assert report.lost_acknowledged == 0, report.lost_examples
    assert report.duplicates == 0, "a write retried after the partition landed twice"
    assert report.passed, report.reason
    if drill.endswith("kafka"):
        # only the clients' path was cut: the brokers kept the leader where it was
        assert report.figures["leader_after_heal"] == leader


@pytest.mark.parametrize("drill", ["network-latency", "network-latency-kafka"])
def test_a_slow_path_slows_writes_and_loses_none(ha_stack: LocalStack, drill: str) -> None:
    report = run_drill(DRILLS[drill], ha_stack, max_write_s=90)

    assert report.figures["writes_acknowledged_during_fault"] >= 5
    assert report.lost_acknowledged == 0, report.lost_examples
    assert report.duplicates == 0
    # passed includes the drill's own check that the latency applied to the writes
    assert report.passed, report.reason


# --- under load (issue 12): the Locust load across a drill's fault ----------------------


def test_a_drill_under_a_tiny_load_reports_its_curve_across_the_fault(
    ha_stack: LocalStack, tmp_path: Path
) -> None:
    report = run_drill(
        DRILLS["network-partition-kafka"], ha_stack, max_write_s=90, load=LoadOptions(users=2)
    )
    md = write_report(report, tmp_path)

    # the drill's own invariants hold under load
    assert report.lost_acknowledged == 0, report.lost_examples
    assert report.duplicates == 0
    assert report.passed, report.reason
    load = report.load
    assert load is not None
    png = tmp_path / load["plot"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"]({load['plot']})" in md.read_text()
    assert (
        json.loads((tmp_path / "drills.json").read_text())["network-partition-kafka"]["load"]
        == load
    )
    # the marks lie on the run's timeline, in order
    rows = load["timeline"]
    assert 0 < load["fault_start_s"] < load["fault_end_s"] <= load["recovered_s"] < rows[-1]["t"]
    # both profiles ran; every request is in exactly one phase
    assert set(load["phases"]) == {"kafka", "read"}
    for kind, phases in load["phases"].items():
        assert list(phases) == list(PHASES)
        total = load["profiles"][kind]["requests"]
        assert sum(r.get(f"{kind}_requests", 0) for r in rows) == total
        assert sum(p["requests"] for p in phases.values()) == total
        assert sum(p["failures"] for p in phases.values()) == load["profiles"][kind]["failures"]
        assert phases["before"]["requests"] > 0, f"no {kind} load before the fault"
        for p in phases.values():
            if p["requests"]:
                assert p["p50_ms"] <= p["p95_ms"] <= p["p99_ms"]


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
