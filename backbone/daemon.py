"""``backbone consume`` as a service: a consumer that can be watched and paged on.

A consumer that dies or hangs must be *seen*. :class:`ConsumerDaemon` runs the
consumer in short slices and after each one:

- sets ``backbone_heartbeat_timestamp_seconds{process="consume"}`` (a hung loop
  stops moving it; a dead process stops being scraped — rules
  ``BackboneHeartbeatStale``, ``BackboneTargetDown``, ``BackboneAbsent``);
- counts processed and committed records, sets the committed offsets and the
  number of assigned partitions (``ConsumerStalled`` compares them with the
  broker-side lag);
- every ``health_interval_s`` publishes a report to ``telemetry.ingest.health``
  (:func:`health_report`, shape :data:`HEALTH_SCHEMA`); a failed publish is
  counted (``backbone_health_publish_failures_total``) and logged;
- every ``summary_interval_s`` logs one line: bars/s, lag, last commit;
- on request (SIGHUP: :meth:`ConsumerDaemon.request_reload`, signal-safe) and on
  its own when Kafka refuses its credentials while the outputs document on disk
  holds new ones, calls ``Backbone.reload_credentials()`` between two slices
  (``docs/credential-rotation.md``).

It serves ``/metrics`` on the port the stack's Prometheus scrapes
(``settings.metrics_port``, which the outputs document sets).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from kafka.errors import SaslAuthenticationFailedError

from backbone.runtime import HEALTH_TOPIC, Backbone
from backbone.stream.consumer import BarConsumer, ConsumeStats
from backbone.stream.producer import ProduceError
from backbone.telemetry import MetricsServer, serve_metrics

__all__ = ["HEALTH_SCHEMA", "ConsumerDaemon", "health_report"]

_log = logging.getLogger(__name__)

#: Schema of the documents on ``telemetry.ingest.health`` (docs/monitoring.md).
HEALTH_SCHEMA = "backbone.ingest-health/v1"
#: Longest slice the consumer runs between two heartbeats, seconds.
_TICK_S = 1.0
#: ``process`` label of the consumer's heartbeat.
PROCESS = "consume"


def health_report(
    consumer: BarConsumer,
    totals: ConsumeStats,
    *,
    stack: str | None,
    started_at: float,
    now: float,
    cache_available: bool | None,
) -> dict[str, Any]:
    """The heartbeat document one consumer publishes (schema :data:`HEALTH_SCHEMA`).

    ``lag`` is the member's own view (committed offset to high watermark);
    the broker-side figure is the lag exporter's.
    """
    assigned = sorted(consumer.assigned())
    elapsed = max(1e-9, now - started_at)
    return {
        "schema": HEALTH_SCHEMA,
        "at": datetime.fromtimestamp(now, UTC).isoformat(),
        "stack": stack,
        "group": consumer.group_id,
        "member": f"{socket.gethostname()}:{os.getpid()}",
        "uptime_seconds": round(now - started_at, 3),
        "assigned_partitions": [f"{tp.topic}/{tp.partition}" for tp in assigned],
        "processed": totals.records_in,
        "stored": totals.stored,
        "dead_lettered": totals.dead_lettered,
        "duplicates": totals.duplicates,
        "bars_per_second": round(totals.records_in / elapsed, 1),
        "committed": {
            f"{tp.topic}/{tp.partition}": off for tp, off in sorted(consumer.committed.items())
        },
        "last_commit_at": (
            datetime.fromtimestamp(totals.last_stored_at, UTC).isoformat()
            if totals.last_stored_at is not None
            else None
        ),
        "lag": consumer.lag(),
        "cache_available": cache_available,
    }


class ConsumerDaemon:
    """Runs ``bb``'s consumer until stopped, observable all the while.

    ``metrics_port=None`` serves no ``/metrics`` (tests that read the registry).
    """

    def __init__(
        self,
        bb: Backbone,
        *,
        metrics_port: int | None,
        metrics_host: str = "127.0.0.1",
        health_interval_s: float | None = None,
        summary_interval_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if bb.consumer is None:
            raise ValueError(
                "the consumer daemon needs the institutional tier (Kafka); open the "
                "backbone with tier='institutional'"
            )
        self.bb = bb
        self.consumer: BarConsumer = bb.consumer
        self.group = self.consumer.group_id
        self.health_interval_s = health_interval_s or bb.settings.health_interval_seconds
        self.summary_interval_s = summary_interval_s or bb.settings.summary_interval_seconds
        self._clock = clock
        self._stop = threading.Event()
        self._metrics_port = metrics_port
        self._metrics_host = metrics_host
        self.server: MetricsServer | None = None
        self.totals = ConsumeStats()
        self.health_published = 0
        self.health_failures = 0
        self._reload = threading.Event()
        #: Times the Kafka clients were rebuilt with new credentials.
        self.credential_reloads = 0

    # --- lifecycle ------------------------------------------------------------
    def serve(self) -> None:
        """Start serving ``/metrics`` (idempotent; raises :class:`OSError` if the
        port is taken) and record a first heartbeat."""
        if self.server is None and self._metrics_port is not None:
            self.server = serve_metrics(
                self.bb.telemetry.registry, self._metrics_port, host=self._metrics_host
            )
            _log.info("serving %s", self.server.url)
        self._observe(ConsumeStats())

    def __enter__(self) -> ConsumerDaemon:
        self.serve()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def stop(self) -> None:
        """Return from :meth:`run` after the current slice (thread- and signal-safe)."""
        self._stop.set()
        self.consumer.stop()

    def request_reload(self) -> None:
        """Re-read the credentials after the current slice (thread- and signal-safe:
        it only sets a flag; ``backbone consume`` calls it on SIGHUP)."""
        self._reload.set()

    def _reload_credentials(self, why: str) -> None:
        if self.bb.reload_credentials():
            self.credential_reloads += 1
            _log.info("credentials reloaded (%s); consuming on", why)
        else:
            _log.info("credentials reload (%s): the Kafka credentials are unchanged", why)

    def _slice(self, max_records: int | None, timeout_s: float) -> ConsumeStats:
        """One slice of consuming; a refused Kafka login while the document on disk
        has other credentials rebuilds the clients instead of failing."""
        if self._reload.is_set():
            self._reload.clear()
            self._reload_credentials("requested")
        try:
            return self.consumer.run(max_records=max_records, timeout_s=timeout_s)
        except (SaslAuthenticationFailedError, ProduceError) as exc:
            refused = not isinstance(exc, ProduceError) or exc.auth_failed
            if not refused or not self.bb.kafka_credentials_changed():
                raise  # not a login, or the document has nothing newer: a real failure
            # The failed poll was rewound (nothing committed): it is read again.
            self._reload_credentials("Kafka refused the old credentials")
            return ConsumeStats()

    # --- the loop -------------------------------------------------------------
    def run(
        self,
        *,
        max_records: int | None = None,
        timeout_s: float | None = None,
        idle_timeout_s: float | None = None,
    ) -> ConsumeStats:
        """Consume until :meth:`stop`, or one of the optional bounds; returns the totals."""
        started = self._clock()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        last_data = time.monotonic()
        next_health = started
        next_summary = started + self.summary_interval_s
        last_summary = (started, 0)
        while not self._stop.is_set():
            now_mono = time.monotonic()
            slice_s = _TICK_S if deadline is None else min(_TICK_S, deadline - now_mono)
            if slice_s <= 0:
                break
            remaining = None if max_records is None else max_records - self.totals.records_in
            batch = self._slice(remaining, slice_s)
            self.totals.add(batch)
            self._observe(batch)
            now = self._clock()
            if now >= next_health:
                self.publish_health(started, now)
                next_health = now + self.health_interval_s
            if now >= next_summary:
                self._log_summary(last_summary, now)
                last_summary = (now, self.totals.records_in)
                next_summary = now + self.summary_interval_s
            if batch.kafka_records:
                last_data = time.monotonic()
            elif idle_timeout_s is not None and time.monotonic() - last_data >= idle_timeout_s:
                break
            if max_records is not None and self.totals.records_in >= max_records:
                break
        return self.totals

    def _observe(self, batch: ConsumeStats) -> None:
        tel = self.bb.telemetry
        tel.heartbeat(PROCESS, self._clock())
        tel.consumer_processed(self.group, batch.records_in)
        committed = {(tp.topic, tp.partition): off for tp, off in self.consumer.committed.items()}
        tel.consumer_committed(self.group, committed)
        tel.consumer_assigned(self.group, len(self.consumer.assigned()))

    def publish_health(self, started_at: float, now: float) -> dict[str, Any]:
        """Publish one report to the bus and the Kafka topic; failures are counted."""
        cache_available = getattr(self.bb.cache, "available", None)
        report = health_report(
            self.consumer,
            self.totals,
            stack=self.bb.document.stack if self.bb.document else None,
            started_at=started_at,
            now=now,
            cache_available=cache_available if isinstance(cache_available, bool) else None,
        )
        self.bb.bus.publish(HEALTH_TOPIC, report)
        producer = self.bb.health_producer
        try:
            if producer is None:
                raise RuntimeError("this backbone has no Kafka producer")
            producer.send_json("ingest_health", report, key=self.group)
            producer.flush()
        except Exception as exc:  # any failure is counted and logged
            self.health_failures += 1
            self.bb.telemetry.health_published(False)
            # A refused login after a rotation published new credentials: reload
            # them before the next slice (the consumer may not have noticed yet).
            refused = isinstance(exc, ProduceError) and exc.auth_failed
            if refused and self.bb.kafka_credentials_changed():
                self.request_reload()
            _log.warning(
                "could not publish the health report to %s (%s: %s); counted in "
                "backbone_health_publish_failures_total, next try in %.0f s",
                HEALTH_TOPIC, type(exc).__name__, exc, self.health_interval_s,
            )  # fmt: skip
        else:
            self.health_published += 1
            self.bb.telemetry.health_published(True)
        return report

    def _log_summary(self, since: tuple[float, int], now: float) -> None:
        then, records_then = since
        rate = (self.totals.records_in - records_then) / max(1e-9, now - then)
        lag = sum(self.consumer.lag().values())
        last = self.totals.last_stored_at
        last_commit = (
            datetime.fromtimestamp(last, UTC).strftime("%H:%M:%SZ") if last is not None else "never"
        )
        _log.info(
            "consume %s: %.1f bars/s, lag %d, last commit %s, %d partitions, %d processed",
            self.group, rate, lag, last_commit, len(self.consumer.assigned()),
            self.totals.records_in,
        )  # fmt: skip
