"""Run a drill on a stack and produce its :class:`~backbone_harness.drills.report.DrillReport`.

The runner owns the phases and the timing; a drill owns its workload, fault
target and reader (see :mod:`backbone_harness.drills.base`). Whatever happens, the
faulted node is brought back before the runner returns or raises. With
``load``, the Locust load runs from before the fault to the end of the tail
(:mod:`backbone_harness.drills.load`) and its curve goes into the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from backbone_harness.drills.base import Drill
from backbone_harness.drills.load import DrillLoad, LoadOptions, plot_name, summarize
from backbone_harness.drills.reconcile import reconcile
from backbone_harness.drills.report import AlertFired, DrillReport
from backbone_harness.drills.writer import Writer, longest_gap
from backbone_harness.stacks import Stack

__all__ = ["DRILLS", "drill_class", "errored_report", "run_drill"]

Log = Callable[[str], None]

#: What the log says a fault did to its target.
_DONE = {
    "kill": "killed",
    "stop": "stopped",
    "pause": "paused",
    "cut": "cut",
    "slow": "slowed",
    "disconnect": "disconnected",
    "rotate": "rotated",
}
#: Seconds of the tail (writing after recovery) when a load runs: its *after* phase.
LOADED_TAIL_S = 5.0


def _registry() -> dict[str, type[Drill]]:
    from backbone_harness.drills.consumer_crash import ConsumerCrashDrill
    from backbone_harness.drills.container_partition import ContainerPartitionDrill
    from backbone_harness.drills.credential_rotation import CredentialRotationDrill
    from backbone_harness.drills.kafka_leader import KafkaLeaderKillDrill
    from backbone_harness.drills.kafka_outage import KafkaOutageDrill
    from backbone_harness.drills.postgres_standby import PostgresStandbyKillDrill
    from backbone_harness.drills.redis_outage import RedisOutageRestartDrill
    from backbone_harness.drills.redis_primary import RedisPrimaryKillDrill
    from backbone_harness.drills.store_outage import StoreOutageDrill

    drills: list[type[Drill]] = [
        KafkaLeaderKillDrill,
        RedisPrimaryKillDrill,
        PostgresStandbyKillDrill,
        ConsumerCrashDrill,
        RedisOutageRestartDrill,
        StoreOutageDrill,
        KafkaOutageDrill,
        ContainerPartitionDrill,
        CredentialRotationDrill,
        *_ha_drills(),
    ]
    return {d.name: d for d in drills}


def _ha_drills() -> list[type[Drill]]:
    """The drills of issue 12 (quorum loss, full outages, churn, network faults)."""
    from backbone_harness.drills.kafka_controller import KafkaControllerKillDrill
    from backbone_harness.drills.kafka_min_isr import KafkaBelowMinIsrDrill
    from backbone_harness.drills.network import NetworkLatencyDrill, NetworkPartitionDrill
    from backbone_harness.drills.network_kafka import (
        KafkaLeaderLatencyDrill,
        KafkaLeaderPartitionDrill,
    )
    from backbone_harness.drills.postgres_primary import (
        PostgresNodeKillDrill,
        PostgresPrimaryKillDrill,
    )
    from backbone_harness.drills.rebalance_storm import ConsumerRebalanceStormDrill
    from backbone_harness.drills.redis_full_outage import RedisFullOutageDrill

    return [
        PostgresPrimaryKillDrill,
        PostgresNodeKillDrill,
        KafkaBelowMinIsrDrill,
        KafkaControllerKillDrill,
        RedisFullOutageDrill,
        ConsumerRebalanceStormDrill,
        NetworkPartitionDrill,
        NetworkLatencyDrill,
        KafkaLeaderPartitionDrill,
        KafkaLeaderLatencyDrill,
    ]


DRILLS: dict[str, type[Drill]] = _registry()


def drill_class(name: str) -> type[Drill]:
    """The drill called ``name``; a KeyError lists the known ones."""
    try:
        return DRILLS[name]
    except KeyError:
        raise KeyError(f"no drill {name!r}; known drills: {', '.join(sorted(DRILLS))}") from None


class _Prober:
    """Calls ``drill.probe`` every 0.1 s in its own thread while the drill runs."""

    def __init__(self, drill: Drill) -> None:
        self._drill = drill
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-probe", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self._drill.probe()

    def __enter__(self) -> _Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def run_drill(
    drill_cls: type[Drill],
    stack: Stack,
    *,
    max_write_s: float = 120.0,
    hold_s: float = 0.0,
    log: Log = lambda _msg: None,
    load: LoadOptions | None = None,
) -> DrillReport:
    """Run one drill on ``stack`` (local or compose) and return its report.

    ``hold_s`` keeps the fault at least that long (after the drill's own wait),
    so alerts with a ``for:`` window get the time to fire. ``load``: run the
    Locust load across the fault and put its curve in ``report.load``. A drill
    whose fault the stack's environment cannot make is not run: its report says
    "not applicable on ENV" and why (``applicable`` False), and counts as no failure.
    """
    why = drill_cls.not_applicable(stack)
    if why is not None:
        log(f"{drill_cls.name}: {why}")
        return DrillReport(
            drill=drill_cls.name,
            stack=stack.name,
            fault=f"{drill_cls.fault.kind} {drill_cls.fault.role}",
            target="-",
            date=datetime.now(UTC).isoformat(timespec="seconds"),
            environment=stack.environment,
            applicable=False,
            reason=why,
        )
    drill = drill_cls(stack)
    node = drill.target()
    report = DrillReport(
        drill=drill.name,
        stack=stack.name,
        fault=f"{drill.fault.kind} {drill.fault.role}",
        target=node,
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        environment=stack.environment,
        size=stack.spec.size,
    )
    log(f"{drill.name}: {drill.fault.kind} {node} ({drill.fault.role})")
    if load is not None and not drill.load_produces and load.profile != "read":
        log(f"{drill.name}: its writer consumes the bar topics; the load runs readers only")
        load = dataclasses.replace(load, profile="read")
    drill.prepare()
    faulted = recovered = False
    writer = Writer(drill.write, drill.bars(), max_s=max_write_s)
    loader: DrillLoad | None = None
    load_result: dict[str, Any] | None = None
    try:
        if load is not None:
            loader = DrillLoad(
                load,
                drill.load_outputs() or stack.outputs_path,
                stack.dir / "logs" / f"drill-{drill.name}",
            )
            log(f"{drill.name}: load of {load.users} users ({load.profile}) starting")
            loader.start()
        writer.start()
        with _Prober(drill):
            if not writer.wait_acknowledged(1, 60):
                raise RuntimeError(
                    f"no write was acknowledged before the fault: {writer.log.errors[:1]}"
                )
            time.sleep(drill.warmup_s)
            if loader is not None:
                loader.wait_baseline()
            fault_wall, fault_at = time.time(), time.monotonic()
            drill.inject(node)
            faulted = True
            log(f"{drill.name}: {node} {_DONE[drill.fault.kind]}; waiting")
            drill.during_fault(node)
            time.sleep(max(0.0, fault_at + hold_s - time.monotonic()))
            lifted_wall = time.time()
            drill.recover(node)
            recovered, recovered_wall = True, time.time()
            report.recovery_seconds = round(time.monotonic() - fault_at, 2)
            log(f"{drill.name}: {node} back after {report.recovery_seconds:.1f}s")
            time.sleep(max(drill.tail_s, LOADED_TAIL_S if loader else 0.0))
            acks = writer.stop()
        ended = time.monotonic()
        if loader is not None:
            load_result = loader.stop()
        found = drill.found_keys(list(acks.acknowledged))
    finally:
        if faulted and not recovered:
            with contextlib.suppress(Exception):
                drill.fault.undo(stack, node)
        with contextlib.suppress(Exception):
            writer.stop()
        if loader is not None:
            loader.kill()
        drill.close()
    result = reconcile(acks.acknowledged, found)
    report.acknowledged = result.acknowledged
    report.stored = result.stored
    report.lost_acknowledged = result.lost_acknowledged
    report.duplicates = result.duplicates
    report.stored_unacknowledged = result.stored_unacknowledged
    report.lost_examples = list(result.lost_examples)
    report.unavailable_seconds = round(longest_gap(acks.ok_at, fault_at, ended), 2)
    report.unavailable_budget_s = drill.max_unavailable_s
    report.failed_writes = len(acks.failed_at)
    report.slowest_write_s = round(acks.slowest_s, 2)
    report.write_errors = acks.errors[:5]
    report.figures = dict(drill.figures)
    if hold_s:
        report.figures["fault_held_at_least_s"] = hold_s
    if load is not None and load_result is not None:
        report.load = summarize(
            load_result,
            fault_start=fault_wall,
            fault_end=lifted_wall,
            recovered=recovered_wall,
            options=load,
            plot=plot_name(drill.name),
        )
    report.machine, report.versions = _machine_and_versions(stack)
    report.alerts = _alerts(stack, fault_wall)
    report.passed, report.reason = _verdict(drill, report)
    log(f"{drill.name}: {'PASS' if report.passed else 'FAIL'} ({report.reason})")
    return report


def errored_report(drill_cls: type[Drill], stack: Stack, error: Exception) -> DrillReport:
    """The failed report of a drill that raised ``error`` instead of finishing."""
    report = DrillReport(
        drill=drill_cls.name,
        stack=stack.name,
        fault=f"{drill_cls.fault.kind} {drill_cls.fault.role}",
        target="-",
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        environment=stack.environment,
        size=stack.spec.size,
        reason=f"the drill did not finish: {type(error).__name__}: {error}",
        unavailable_budget_s=drill_cls.max_unavailable_s,
    )
    report.machine, report.versions = _machine_and_versions(stack)
    return report


def _machine_and_versions(stack: Stack) -> tuple[dict[str, Any], dict[str, str]]:
    from backbone_harness.bench.performance import client_versions, machine_info, service_versions
    from backbone_harness.privileged import admin_document

    versions = client_versions()
    try:
        # As the stack's administrators, as the benches ask: no job (and not the
        # application) may run Redis INFO.
        versions.update(service_versions(admin_document(stack), stack.spec.kafka.version))
    except Exception:  # a version is context, not a reason to lose the report
        versions["kafka_broker"] = stack.spec.kafka.version
    return machine_info(), versions


def _alerts(stack: Stack, fault_wall: float) -> list[AlertFired]:
    monitoring = stack.document.monitoring
    if monitoring is None or monitoring.prometheus_url is None:
        return []
    from backbone_harness.observe import alerts_fired_between

    try:
        events = alerts_fired_between(monitoring.prometheus_url, fault_wall - 10, time.time())
    except Exception:  # Prometheus is an observer: its absence must not fail a drill
        return []
    return [
        AlertFired(
            name=e.name,
            node=e.labels.get("node"),
            time_to_fire_s=round(e.first_seen - fault_wall, 1),
            resolved_after_s=None
            if e.resolved_at is None
            else round(e.resolved_at - fault_wall, 1),
        )
        for e in events
        # An episode already firing when the fault began is not this fault's.
        if e.first_seen >= fault_wall - 0.5
    ]


def _verdict(drill: Drill, report: DrillReport) -> tuple[bool, str]:
    if report.lost_acknowledged:
        return False, f"{report.lost_acknowledged} acknowledged bars were lost"
    if report.duplicates:
        return False, f"{report.duplicates} bars were stored more than once"
    if report.acknowledged < drill.min_acknowledged:
        return False, (
            f"only {report.acknowledged} bars were acknowledged (< {drill.min_acknowledged}): "
            "the drill proves nothing"
        )
    if drill.problems:
        return False, "; ".join(dict.fromkeys(drill.problems))
    return True, f"all {report.acknowledged} acknowledged bars found, none lost"
