"""Consumer lag as the *broker* sees it: committed offsets vs. log-end offsets.

A consumer's own lag gauge (``backbone_consumer_lag``) dies with the consumer:
a stopped or hung member reports nothing, which is exactly when lag matters.
This collector asks the brokers instead, through the admin API (``list_groups``,
``list_group_offsets``, ``list_partition_offsets`` with ``OffsetSpec.LATEST``),
so a stopped consumer shows lag growing while producers keep writing. A
background thread measures every ``interval_s`` and a scrape serves the last
reading: a round of admin requests takes longer than a local stack's 1 s scrape
timeout, and a scrape must not wait on a broker that is down.
``backbone lag-exporter`` serves it; every environment runs one next to
Prometheus (job ``kafka-lag``).

Series (``group``, ``topic``, ``partition``):

- ``backbone_broker_consumer_lag`` — log end - committed offset (never below 0);
- ``backbone_broker_committed_offset`` — the group's committed offset;
- ``backbone_broker_log_end_offset`` — the partition's log-end offset;
- ``backbone_broker_lag_up`` — 1 if the last measurement reached the brokers;
- ``backbone_broker_lag_measured_timestamp_seconds`` — when the served reading
  was taken (Unix s).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec
from kafka.errors import KafkaError
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backbone.settings import KafkaConnectionSettings

__all__ = ["BROKER_LAG_METRICS", "BrokerLagCollector", "GroupLag", "measure_lag"]

#: Every series the lag exporter serves (``docs/metrics.md``).
BROKER_LAG_METRICS: tuple[str, ...] = (
    "backbone_broker_consumer_lag",
    "backbone_broker_committed_offset",
    "backbone_broker_log_end_offset",
    "backbone_broker_lag_up",
    "backbone_broker_lag_measured_timestamp_seconds",
    "backbone_broker_lag_measure_seconds",
)

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupLag:
    """One partition of one group, as the brokers report it."""

    group: str
    topic: str
    partition: int
    committed: int
    log_end: int

    @property
    def lag(self) -> int:
        return max(0, self.log_end - self.committed)


def measure_lag(admin: KafkaAdminClient, groups: Sequence[str] | None = None) -> list[GroupLag]:
    """Committed and log-end offsets of every partition ``groups`` committed to
    (``None``: every consumer group the cluster knows)."""
    if groups is None:
        listed = admin.list_groups()
        groups = sorted(str(g["group_id"]) for g in listed)
    if not groups:
        return []
    committed: dict[str, dict[TopicPartition, int]] = {}
    for group in groups:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
        committed[group] = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    partitions = {tp for per_group in committed.values() for tp in per_group}
    if not partitions:
        return []
    ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in partitions})
    return [
        GroupLag(group, tp.topic, tp.partition, offset, int(ends[tp].offset))
        for group, per_group in sorted(committed.items())
        for tp, offset in sorted(per_group.items())
        if tp in ends
    ]


class BrokerLagCollector(Collector):
    """Measures lag from the brokers every ``interval_s`` in a thread; scrapes
    serve the last reading (one admin client, reused).

    ``groups=None`` watches every consumer group. A measurement that cannot
    reach the brokers sets ``backbone_broker_lag_up`` to 0, keeps the previous
    reading (with its timestamp), and logs why.
    """

    def __init__(
        self,
        kafka: KafkaConnectionSettings,
        *,
        groups: Sequence[str] | None = None,
        client_id: str = "backbone-lag-exporter",
    ) -> None:
        self.kafka = kafka
        self.groups = list(groups) if groups else None
        self._client_id = client_id
        self._admin: KafkaAdminClient | None = None
        self._lock = threading.Lock()
        self._readings: list[GroupLag] = []
        self._up = False
        self._measured_at: float | None = None
        self._seconds = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _client(self) -> KafkaAdminClient:
        if self._admin is None:
            self._admin = KafkaAdminClient(**self.kafka.client_kwargs(), client_id=self._client_id)
        return self._admin

    def measure(self) -> list[GroupLag]:
        """Take one reading now and keep it for scrapes; raises :class:`KafkaError`
        (after recording the failure) when the brokers do not answer."""
        started = time.monotonic()
        try:
            readings = measure_lag(self._client(), self.groups)
        except (KafkaError, OSError):
            self._close_client()  # a fresh client next time: metadata may be stale
            with self._lock:
                self._up = False
            raise
        with self._lock:
            self._readings, self._up = readings, True
            self._measured_at = time.time()
            self._seconds = time.monotonic() - started
        return readings

    def start(self, interval_s: float) -> None:
        """Measure every ``interval_s`` seconds in a daemon thread until :meth:`close`."""
        if interval_s <= 0:
            raise ValueError("the lag measurement interval must be positive seconds")
        self._thread = threading.Thread(
            target=self._loop, args=(interval_s,), name="broker-lag", daemon=True
        )
        self._thread.start()

    def _loop(self, interval_s: float) -> None:
        while not self._stop.is_set():
            try:
                self.measure()
            except (KafkaError, OSError) as exc:
                _log.warning("lag measurement could not reach the brokers: %s: %s",
                             type(exc).__name__, exc)  # fmt: skip
            self._stop.wait(interval_s)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            readings, up, at, seconds = self._readings, self._up, self._measured_at, self._seconds
        labels = ["group", "topic", "partition"]
        up_family = GaugeMetricFamily(
            "backbone_broker_lag_up", "1 if the last lag measurement reached the brokers."
        )
        up_family.add_metric([], 1.0 if up else 0.0)
        lag = GaugeMetricFamily(
            "backbone_broker_consumer_lag",
            "Records between the group's committed offset and the log end, from the brokers.",
            labels=labels,
        )
        committed = GaugeMetricFamily(
            "backbone_broker_committed_offset",
            "The group's committed offset, from the brokers.",
            labels=labels,
        )
        log_end = GaugeMetricFamily(
            "backbone_broker_log_end_offset", "The partition's log-end offset.", labels=labels
        )
        for r in readings:
            key = [r.group, r.topic, str(r.partition)]
            lag.add_metric(key, r.lag)
            committed.add_metric(key, r.committed)
            log_end.add_metric(key, r.log_end)
        yield from (up_family, lag, committed, log_end)
        if at is not None:
            when = GaugeMetricFamily(
                "backbone_broker_lag_measured_timestamp_seconds",
                "When the served lag reading was taken (Unix s).",
            )
            when.add_metric([], at)
            took = GaugeMetricFamily(
                "backbone_broker_lag_measure_seconds", "How long that measurement took."
            )
            took.add_metric([], seconds)
            yield from (when, took)

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not reach for the brokers

    def _close_client(self) -> None:
        if self._admin is not None:
            try:
                self._admin.close()
            except KafkaError as exc:  # closing is best effort
                _log.debug("closing the lag admin client: %s", exc)
            self._admin = None

    def close(self) -> None:
        """Stop the measuring thread and close the admin client."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._close_client()
