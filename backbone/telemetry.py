"""Prometheus telemetry: one registry per runtime, one class that updates it.

Other modules call :class:`Telemetry` methods and never touch
``prometheus_client`` themselves, so the metric names below stay the single
list that alert rules and dashboards are built on (``docs/metrics.md``).

Ingest freshness is computed at scrape time (now - timestamp of the latest
stored bar), so it keeps growing while ingest is stalled, which is what an
alert on staleness needs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

__all__ = [
    "DAEMON_METRIC_NAMES",
    "METRIC_NAMES",
    "CacheMeters",
    "MetricsServer",
    "Telemetry",
    "serve_metrics",
]

#: Every series name this package exports (counters with their ``_total`` suffix).
METRIC_NAMES: tuple[str, ...] = (
    "backbone_ingest_freshness_seconds",
    "backbone_ingest_last_bar_timestamp_seconds",
    "backbone_cache_hits_total",
    "backbone_cache_misses_total",
    "backbone_cache_evictions_total",
    "backbone_cache_hit_ratio",
    "backbone_cache_degraded",
    "backbone_consumer_lag",
    "backbone_consumer_store_paused",
    "backbone_dead_letter_total",
    "backbone_rows_written_total",
    "backbone_records_in_total",
    "backbone_cache_available",
    "backbone_cache_fallbacks_total",
    "backbone_heartbeat_timestamp_seconds",
    "backbone_consumer_records_processed_total",
    "backbone_consumer_records_committed_total",
    "backbone_consumer_committed_offset",
    "backbone_consumer_assigned_partitions",
    "backbone_health_published_total",
    "backbone_health_publish_failures_total",
)

#: The subset only a long-running ``backbone consume`` exports (its main loop sets them).
DAEMON_METRIC_NAMES: tuple[str, ...] = (
    "backbone_heartbeat_timestamp_seconds",
    "backbone_consumer_records_processed_total",
    "backbone_consumer_records_committed_total",
    "backbone_consumer_committed_offset",
    "backbone_consumer_assigned_partitions",
)


class _FreshnessCollector(Collector):
    """Yields freshness and last-bar timestamp per (symbol, timeframe) at scrape time."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, str], float] = {}

    def observe(self, symbol: str, timeframe: str, ts_seconds: float) -> None:
        key = (symbol, timeframe)
        with self._lock:
            if ts_seconds > self._latest.get(key, float("-inf")):
                self._latest[key] = ts_seconds

    def snapshot(self) -> dict[tuple[str, str], float]:
        with self._lock:
            return dict(self._latest)

    def collect(self) -> Iterable[Metric]:
        now = self._clock()
        latest = self.snapshot()
        freshness = GaugeMetricFamily(
            "backbone_ingest_freshness_seconds",
            "Seconds between now and the timestamp of the latest stored bar.",
            labels=["symbol", "timeframe"],
        )
        last = GaugeMetricFamily(
            "backbone_ingest_last_bar_timestamp_seconds",
            "Unix timestamp of the latest stored bar.",
            labels=["symbol", "timeframe"],
        )
        for (symbol, timeframe), ts in sorted(latest.items()):
            freshness.add_metric([symbol, timeframe], max(0.0, now - ts))
            last.add_metric([symbol, timeframe], ts)
        yield freshness
        yield last

    def describe(self) -> Iterable[Metric]:
        # Registering must not call collect() with a half-built runtime.
        return []


@dataclass(frozen=True)
class CacheMeters:
    """One cache's counters, bound to its labels once (a read then costs one increment)."""

    hit: Callable[[float], None]
    miss: Callable[[float], None]
    evicted: Callable[[float], None]
    #: A read answered by the loader because the backing (Redis) was down.
    fallback: Callable[[float], None] = lambda _n: None


class Telemetry:
    """The backbone's metrics on a registry it owns (never the global one).

    ``clock`` returns Unix seconds; tests inject one to make freshness exact.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._freshness = _FreshnessCollector(clock)
        self.registry.register(self._freshness)
        cache_labels = ["namespace", "backing"]
        self._cache_hits = Counter(
            "backbone_cache_hits",
            "Cache reads answered from the cache.",
            cache_labels,
            registry=self.registry,
        )
        self._cache_misses = Counter(
            "backbone_cache_misses",
            "Cache reads that went to the loader (the store).",
            cache_labels,
            registry=self.registry,
        )
        self._cache_evictions = Counter(
            "backbone_cache_evictions",
            "Entries evicted to keep the cache within max keys.",
            cache_labels,
            registry=self.registry,
        )
        self._cache_hit_ratio = Gauge(
            "backbone_cache_hit_ratio",
            "hits / (hits + misses) since the cache started.",
            cache_labels,
            registry=self.registry,
        )
        self._cache_degraded = Gauge(
            "backbone_cache_degraded",
            "1 while the Tier 1 cache is detached or Redis does not answer (reads go to "
            "the store), else 0.",
            ["namespace"],
            registry=self.registry,
        )
        self._store_paused = Gauge(
            "backbone_consumer_store_paused",
            "1 while the consumer holds its partitions paused because the store is "
            "unreachable (offsets uncommitted), else 0.",
            ["group"],
            registry=self.registry,
        )
        self._consumer_lag = Gauge(
            "backbone_consumer_lag",
            "Records between the committed offset and the log end.",
            ["topic", "partition", "group"],
            registry=self.registry,
        )
        self._dead_letter = Counter(
            "backbone_dead_letter",
            "Records dead-lettered, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self._rows_written = Counter(
            "backbone_rows_written",
            "Bar rows written, by store.",
            ["store"],
            registry=self.registry,
        )
        self._records_in = Counter(
            "backbone_records_in",
            "Records received for ingest, by source.",
            ["source"],
            registry=self.registry,
        )
        self._daemon_metrics()

    def _daemon_metrics(self) -> None:
        """What a long-running process (``backbone consume``) proves it is alive with."""
        self._cache_available = Gauge(
            "backbone_cache_available",
            "1 while the cache's backing (Redis) answered its last command or heartbeat.",
            ["namespace", "backing"],
            registry=self.registry,
        )
        self._cache_fallbacks = Counter(
            "backbone_cache_fallbacks",
            "Cache reads answered by the store because the backing was down.",
            ["namespace", "backing"],
            registry=self.registry,
        )
        self._heartbeat = Gauge(
            "backbone_heartbeat_timestamp_seconds",
            "Unix time of the process's last main-loop turn; stops moving when it hangs.",
            ["process"],
            registry=self.registry,
        )
        self._processed = Counter(
            "backbone_consumer_records_processed",
            "Items (bars or unreadable records) the consumer carried through a poll.",
            ["group"],
            registry=self.registry,
        )
        self._committed_records = Counter(
            "backbone_consumer_records_committed",
            "Offsets the consumer committed to Kafka (records moved past), all partitions.",
            ["group"],
            registry=self.registry,
        )
        self._committed_offset = Gauge(
            "backbone_consumer_committed_offset",
            "The next offset to read, as this member last committed it.",
            ["group", "topic", "partition"],
            registry=self.registry,
        )
        self._assigned = Gauge(
            "backbone_consumer_assigned_partitions",
            "Partitions the group assigned to this member.",
            ["group"],
            registry=self.registry,
        )
        self._health_published = Counter(
            "backbone_health_published",
            "Health reports published to the telemetry.ingest.health topic.",
            registry=self.registry,
        )
        self._last_committed: dict[tuple[str, str, int], int] = {}
        self._health_failures = Counter(
            "backbone_health_publish_failures",
            "Health reports that could not be published to the topic.",
            registry=self.registry,
        )

    # --- ingest -------------------------------------------------------------
    def bar_stored(self, symbol: str, timeframe: str, ts: datetime | float) -> None:
        """Record that a bar with timestamp ``ts`` is now in the store."""
        seconds = ts.timestamp() if isinstance(ts, datetime) else float(ts)
        self._freshness.observe(symbol, timeframe, seconds)

    def latest_bar_timestamps(self) -> dict[tuple[str, str], float]:
        """(symbol, timeframe) -> Unix timestamp of the latest stored bar."""
        return self._freshness.snapshot()

    def records_in(self, source: str, count: int = 1) -> None:
        """Count records received from ``source`` (``synthetic``, ``csv``, ``kafka`` ...)."""
        self._records_in.labels(source=source).inc(count)

    def rows_written(self, store: str, count: int) -> None:
        """Count rows a store committed (``timescale``, ``duckdb``)."""
        self._rows_written.labels(store=store).inc(count)

    def dead_lettered(self, reason: str, count: int = 1) -> None:
        """Count records sent to the dead letter, by reason."""
        self._dead_letter.labels(reason=reason).inc(count)

    def consumer_lag(self, topic: str, partition: int, group: str, lag: int) -> None:
        """Set the lag of ``group`` on one partition."""
        self._consumer_lag.labels(topic=topic, partition=str(partition), group=group).set(lag)

    # --- cache --------------------------------------------------------------
    def cache_hit(self, namespace: str, backing: str, count: int = 1) -> None:
        """Count cache hits (``backing`` is ``redis`` or ``memory``)."""
        self._cache_hits.labels(namespace=namespace, backing=backing).inc(count)

    def cache_miss(self, namespace: str, backing: str, count: int = 1) -> None:
        """Count cache misses."""
        self._cache_misses.labels(namespace=namespace, backing=backing).inc(count)

    def cache_evicted(self, namespace: str, backing: str, count: int = 1) -> None:
        """Count entries evicted for max keys."""
        self._cache_evictions.labels(namespace=namespace, backing=backing).inc(count)

    def cache_hit_ratio(self, namespace: str, backing: str, ratio: float) -> None:
        """Set the cache's hit ratio (0..1)."""
        self._cache_hit_ratio.labels(namespace=namespace, backing=backing).set(ratio)

    def cache_meters(
        self, namespace: str, backing: str, *, hit_ratio: Callable[[], float] | None = None
    ) -> CacheMeters:
        """Counters bound to one cache's labels; ``hit_ratio`` is read at scrape time.

        The last cache bound to a (namespace, backing) pair owns its ratio gauge.
        """
        labels = {"namespace": namespace, "backing": backing}
        if hit_ratio is not None:
            self._cache_hit_ratio.labels(**labels).set_function(hit_ratio)
        return CacheMeters(
            hit=self._cache_hits.labels(**labels).inc,
            miss=self._cache_misses.labels(**labels).inc,
            evicted=self._cache_evictions.labels(**labels).inc,
            fallback=self._cache_fallbacks.labels(**labels).inc,
        )

    def cache_degraded(self, namespace: str, degraded: Callable[[], float]) -> None:
        """Bind the cache-degraded gauge of ``namespace`` to ``degraded()`` (read at scrape)."""
        self._cache_degraded.labels(namespace=namespace).set_function(degraded)

    def store_paused(self, group: str, paused: bool) -> None:
        """Set whether ``group``'s consumer is paused on a store outage."""
        self._store_paused.labels(group=group).set(1 if paused else 0)

    def cache_available(self, namespace: str, backing: str, available: Callable[[], bool]) -> None:
        """Bind the availability gauge of one cache to ``available()`` (read at scrape)."""
        gauge = self._cache_available.labels(namespace=namespace, backing=backing)
        gauge.set_function(lambda: 1.0 if available() else 0.0)

    # --- long-running processes ---------------------------------------------
    def heartbeat(self, process: str, at: float | None = None) -> None:
        """Record one turn of ``process``'s main loop (``at``: Unix s, default now)."""
        self._heartbeat.labels(process=process).set(time.time() if at is None else at)

    def consumer_processed(self, group: str, count: int) -> None:
        """Count items the consumer carried through store, commit, cache and bus."""
        if count > 0:
            self._processed.labels(group=group).inc(count)

    def consumer_committed(self, group: str, offsets: dict[tuple[str, int], int]) -> None:
        """Set the committed offsets and count how far they moved since the last call."""
        counter = self._committed_records.labels(group=group)  # at 0 before any commit
        for (topic, partition), offset in offsets.items():
            # A partition seen for the first time (startup, a rebalance) sets the
            # mark; only movement after that is counted as committed work.
            before = self._last_committed.get((group, topic, partition))
            if before is not None and offset > before:
                counter.inc(offset - before)
            self._last_committed[(group, topic, partition)] = offset
            self._committed_offset.labels(group=group, topic=topic, partition=str(partition)).set(
                offset
            )

    def consumer_assigned(self, group: str, partitions: int) -> None:
        """Set how many partitions this member holds."""
        self._assigned.labels(group=group).set(partitions)

    def health_published(self, ok: bool) -> None:
        """Count one health report publish, or one failed attempt."""
        (self._health_published if ok else self._health_failures).inc()

    # --- reading back -------------------------------------------------------
    def value(self, name: str, **labels: str) -> float | None:
        """One sample's current value (e.g. ``backbone_cache_hits_total``), or ``None``."""
        return self.registry.get_sample_value(name, labels)

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it and joins its thread."""

    server: WSGIServer
    thread: threading.Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def serve_metrics(
    registry: CollectorRegistry, port: int, *, host: str = "127.0.0.1"
) -> MetricsServer:
    """Serve ``registry`` on ``http://host:port/metrics`` (``port=0`` picks a free one).

    Binds loopback by default; pass ``host`` to expose it further on purpose.
    """
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server=server, thread=thread, host=host, port=int(server.server_port))
