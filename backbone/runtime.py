"""``Backbone``: one public API over both tiers.

=============  ============================================  ====================================
               Tier 0 — bootstrap                            Tier 1 — institutional
=============  ============================================  ====================================
store          DuckDB file (:class:`DuckDBStore`)            PostgreSQL/Timescale (COPY + upsert)
cache          :class:`MemoryCache`                          :class:`RedisCache` (Sentinel-aware)
streaming      none: the write *is* the ingest               producer → Kafka → consumer group
bus            in-process :class:`EventBus`                  same bus, fed by the Kafka bridge
dead letters   ``dead_letter`` table                          ``market-data.dead-letter`` topic
=============  ============================================  ====================================

On Tier 1 each client logs in as its job (issue 11, :mod:`backbone.job_logins`):
the producer as the writer; the consumer-group member, its dead letters and
health reports, the store and the cache as the consumer. Opened on one job's
document (``harness outputs --job``) it opens only what that job can use.

``ingest`` is synchronous on both tiers: it returns once every bar it was given
is stored (Tier 1: produced, consumed, stored, offsets committed), cached entries
are invalidated and the bus has the events. Every bar meets the bar contract
(:mod:`backbone.contract`) before it is stored or produced. Counts reconcile:
``records_in = stored + duplicates + corrections + conflicts + dead_lettered``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

from backbone.bars import Bar
from backbone.bus import EventBus
from backbone.cache import DegradableCache, MemoryCache, RedisCache
from backbone.cache.protocol import BarCache
from backbone.connections import ConnectionsDocument
from backbone.contract import BarContract, reason_code
from backbone.credentials import DocumentCredentials, RedisDocumentCredentials
from backbone.deadletter import DeadLetter
from backbone.job_logins import (
    Client,
    JobScopeError,
    RuntimeLogins,
    runtime_logins,
    section_follows,
)
from backbone.outputs import OUTPUTS_ENV, load_connections
from backbone.settings import (
    BackboneSettings,
    KafkaConnectionSettings,
    RedisConnectionSettings,
    load_settings,
)
from backbone.store.base import BarStore
from backbone.store.duckdb import DuckDBStore
from backbone.stream.bridge import EventBusBridge, streaming_enabled_from_env
from backbone.stream.consumer import DEFAULT_GROUP, BarConsumer, ConsumeStats, write_bars
from backbone.stream.producer import BarProducer, ProducerTuning
from backbone.telemetry import Telemetry
from backbone.tiers import CheckResult, resolve_tier

__all__ = ["HEALTH_TOPIC", "Backbone", "IngestResult", "JobScopeError", "KafkaLogin"]

_log = logging.getLogger(__name__)

#: Bus topic (and, on Tier 1, the Kafka topic ``telemetry.ingest.health``) of health reports.
HEALTH_TOPIC = "telemetry.ingest.health"
#: Bars handled per step; bounds memory and sets the progress granularity.
CHUNK = 20_000

Progress = Callable[[int], None]


@dataclass(frozen=True)
class IngestResult:
    """What one ``ingest`` call moved;
    ``records_in = stored + duplicates + corrections + conflicts + dead_lettered``."""

    records_in: int
    stored: int
    dead_lettered: int
    duplicates: int
    seconds: float
    tier: str
    #: Tier 1: records earlier producers had left in the topics, processed first
    #: (stored or dead-lettered then) and not part of the counts above.
    backlog: int = 0
    #: Degradable dependencies that were down during the call, with why
    #: (``{"cache": {"state": "degraded", ...}}``); empty when all served.
    degraded: dict[str, Any] = field(default_factory=dict)
    #: Re-sends with new values, applied as a new revision (``contract.corrections: revise``).
    corrections: int = 0
    #: Re-sends with new values, refused to the dead-letter stream (``refuse``).
    conflicts: int = 0
    #: Rejections per reason code (``dead_lettered`` and ``conflicts`` together).
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def reconciles(self) -> bool:
        return self.records_in == (
            self.stored + self.duplicates + self.corrections + self.conflicts + self.dead_lettered
        )

    @property
    def bars_per_second(self) -> float:
        return self.records_in / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reconciles"] = self.reconciles
        out["bars_per_second"] = round(self.bars_per_second, 1)
        return out


@dataclass
class KafkaLogin:
    """Kafka clients that log in as one job and follow its password in the
    outputs document file (kafka-python reads a password only when a client is
    built: :meth:`Backbone.reload_credentials` rebuilds them)."""

    #: The document file, as that job sees it (:meth:`DocumentCredentials.for_job`).
    source: DocumentCredentials
    #: The settings the clients were built with (updated by a reload).
    settings: KafkaConnectionSettings
    producers: list[BarProducer] = field(default_factory=list)
    consumers: list[BarConsumer] = field(default_factory=list)

    @property
    def job(self) -> str:
        return self.source.job or "application"

    def fresh(self) -> KafkaConnectionSettings | None:
        """The settings with the document's credentials now, if they changed."""
        section = self.source.document().kafka
        if section is None or (
            section.username == self.settings.username
            and section.password == self.settings.password
        ):
            return None
        return self.settings.model_copy(
            update={"username": section.username, "password": section.password}
        )


def _chunks(items: Iterable[Bar | DeadLetter], size: int) -> Iterator[list[Bar | DeadLetter]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


class Backbone:
    """The runtime: ``ingest``, ``read``, ``latest``, ``bus``, ``telemetry``, ``health``.

    Build it with :meth:`open`; the constructor takes ready parts (for tests).
    """

    def __init__(
        self,
        *,
        tier: str,
        settings: BackboneSettings,
        store: BarStore,
        cache: BarCache,
        bus: EventBus,
        telemetry: Telemetry,
        producer: BarProducer | None = None,
        consumer: BarConsumer | None = None,
        store_label: str = "duckdb",
        document: ConnectionsDocument | None = None,
        checks: Sequence[CheckResult] = (),
        credentials: DocumentCredentials | None = None,
        logins: RuntimeLogins | None = None,
        kafka_logins: Sequence[KafkaLogin] = (),
    ) -> None:
        self.tier = tier
        self.settings = settings
        self.store = store
        self.cache = cache
        self.bus = bus
        self.telemetry = telemetry
        self.producer = producer
        self.consumer = consumer
        self.store_label = store_label
        self.document = document
        #: The validation hooks' results (Tier 1); degradable failures stay listed.
        self.checks = tuple(checks)
        #: The outputs document file the runtime follows (``None``: opened without one).
        self.credentials = credentials
        #: Which login each client uses (Tier 1; :mod:`backbone.job_logins`).
        self.logins = logins
        #: The Kafka clients per login that follow the document file (rotation).
        self.kafka_logins = list(kafka_logins)
        #: The rules every bar meets before it is stored or produced.
        self.contract = (
            consumer.contract if consumer is not None else BarContract(settings.contract)
        )
        self.bridge = EventBusBridge(bus, tier=tier, enabled=_streaming_enabled(settings))
        if consumer is not None:
            consumer.bridge = self.bridge
        self._settings_follow_kafka = (
            credentials is not None
            and document is not None
            and section_follows(settings.kafka, document.kafka, "username")
        )
        self._closed = False

    # --- construction -------------------------------------------------------
    @classmethod
    def open(
        cls,
        tier: str | None = None,
        outputs: Path | str | None = None,
        settings: BackboneSettings | None = None,
        *,
        telemetry: Telemetry | None = None,
        group_id: str | None = None,
        consumer_start: str = "earliest",
        require_cache: bool | None = None,
    ) -> Backbone:
        """Open the runtime for ``tier`` (``None``: decided by :func:`resolve_tier`).

        Institutional runs the validation hooks first and raises
        :class:`~backbone.tiers.TierValidationError` listing every failing
        *required* check; without Redis it starts cache-degraded, unless
        ``require_cache`` (default: the ``require_cache`` setting) makes it required.
        ``group_id`` and ``consumer_start`` (``earliest``/``latest``: where a group
        without committed offsets begins) configure the Tier 1 consumer.
        """
        document = _load_document(outputs)
        if settings is None:
            settings = load_settings(document)
        chosen = _choose_tier(tier, settings, document)
        telemetry = telemetry or Telemetry()
        bus = EventBus()
        if chosen == "institutional":
            path = _document_path(outputs)
            source = (
                DocumentCredentials(path, document)
                if path is not None and document is not None
                else None
            )
            logins = runtime_logins(settings, document)
            return _open_institutional(
                cls,
                settings,
                document,
                bus,
                telemetry,
                group_id,
                consumer_start,
                require_cache,
                credentials=source,
                logins=logins,
            )
        return _open_bootstrap(cls, settings, document, bus, telemetry)

    # --- ingest -------------------------------------------------------------
    def ingest(
        self, items: Iterable[Bar | DeadLetter], *, progress: Progress | None = None
    ) -> IngestResult:
        """Validate, store, cache-invalidate and publish; returns the reconciled counts.

        ``items`` may hold :class:`DeadLetter` s a reader already refused (a bad
        CSV line): they are counted and dead-lettered like bars that break a rule.
        """
        self._check_open()
        if self.tier == "institutional" and (self.producer is None or self.consumer is None):
            raise self._scope_error(
                "ingest",
                "the writer's Kafka login (to produce) and the consumer's (to store what "
                "it produced)",
            )
        started = time.perf_counter()
        totals = ConsumeStats()
        self._rejected: dict[str, int] = {}
        pending: dict[tuple[str, int], int] = {}
        backlog = 0
        if self.consumer is not None:
            # Drain what others left first, so the counts below are this call's own.
            backlog = self.consumer.catch_up(timeout_s=120.0).records_in
        for chunk in _chunks(items, CHUNK):
            bars, dead = self._validate(chunk)
            totals.records_in += len(dead)
            totals.dead_lettered += len(dead)
            self._count_rejects(dead)
            if self.producer is None:
                self._ingest_local(bars, dead, totals)
            else:
                self._produce(bars, dead, pending, totals)
            if progress is not None:
                progress(len(chunk))
        if self.producer is not None:
            self._drain(pending, totals)
        # Degradation after the call too: a mode that began mid-call is reported.
        degraded = self.degraded()
        return IngestResult(
            records_in=totals.records_in,
            stored=totals.stored,
            dead_lettered=totals.dead_lettered,
            duplicates=totals.duplicates,
            seconds=time.perf_counter() - started,
            tier=self.tier,
            backlog=backlog,
            degraded=degraded,
            corrections=totals.corrections,
            conflicts=totals.conflicts,
            rejected_by_reason=_merged(self._rejected, totals.reasons),
        )

    def _count_rejects(self, dead: Sequence[DeadLetter]) -> None:
        for letter in dead:
            code = reason_code(letter.reason)
            self._rejected[code] = self._rejected.get(code, 0) + 1

    def _validate(self, chunk: Sequence[Bar | DeadLetter]) -> tuple[list[Bar], list[DeadLetter]]:
        bars: list[Bar] = []
        dead: list[DeadLetter] = []
        for item in chunk:
            if isinstance(item, DeadLetter):
                dead.append(item)
                continue
            admitted = self.contract.admit(item)
            if isinstance(admitted, Bar):
                bars.append(admitted)
            else:
                dead.append(self.contract.reject(item, admitted, origin=f"ingest:{item.source}"))
        for letter in dead:
            self.telemetry.dead_lettered(reason_code(letter.reason))
        return bars, dead

    def _ingest_local(self, bars: list[Bar], dead: list[DeadLetter], totals: ConsumeStats) -> None:
        if dead:
            self.store.write_dead_letters(dead)
        if not bars:
            return
        outcome, conflicts = write_bars(
            self.store, bars, self.contract.policy, origin=f"ingest:{self.tier}"
        )
        if conflicts:
            self.store.write_dead_letters(conflicts)
            self._count_rejects(conflicts)
            for letter in conflicts:
                self.telemetry.dead_lettered(reason_code(letter.reason))
        stored = outcome.stored
        totals.records_in += len(bars)
        totals.stored += stored
        totals.duplicates += outcome.duplicates
        totals.corrections += outcome.corrections
        totals.conflicts += len(conflicts)
        self.cache.on_new_bars(bars)
        self.bridge.publish(bars)
        self.telemetry.records_in("ingest", len(bars))
        self.telemetry.rows_written(self.store_label, stored)
        _observe_latest(self.telemetry, bars)

    def _produce(
        self,
        bars: list[Bar],
        dead: list[DeadLetter],
        pending: dict[tuple[str, int], int],
        totals: ConsumeStats,
    ) -> None:
        assert self.producer is not None and self.consumer is not None
        self.producer.send_bars(bars)
        if dead:
            self.producer.send_dead_letters(dead)
        for tp, offset in self.producer.flush().items():
            pending[tp] = max(offset, pending.get(tp, -1))
        # Consume what this chunk produced before producing the next one, so
        # memory and the end-to-end latency stay bounded.
        self._drain(pending, totals)

    def _drain(self, pending: dict[tuple[str, int], int], totals: ConsumeStats) -> None:
        assert self.consumer is not None
        bar_topics = {self.consumer.kafka.topic(t) for t in ("daily_bars", "intraday_bars")}
        targets = {tp: off for tp, off in pending.items() if tp[0] in bar_topics}
        if targets:
            totals.add(self.consumer.run_until(targets, timeout_s=120.0))
        pending.clear()

    def consume(
        self,
        *,
        max_records: int | None = None,
        timeout_s: float = 3600.0,
        idle_timeout_s: float | None = None,
    ) -> ConsumeStats:
        """Run as a consumer-group member (Tier 1 only) until a bound or :meth:`stop`.

        For processes that only consume (the producers being elsewhere): the same
        path ``ingest`` drains through — store, commit, cache, bus.
        """
        self._check_open()
        if self.consumer is None and self.logins is not None and self.logins.job is not None:
            raise self._scope_error("consume", "the consumer's Kafka login")
        if self.consumer is None:
            raise RuntimeError(
                "consuming needs the institutional tier (Kafka); open it with "
                "Backbone.open(tier='institutional', outputs=...)"
            )
        return self.consumer.run(
            max_records=max_records, timeout_s=timeout_s, idle_timeout_s=idle_timeout_s
        )

    # --- rotated credentials ------------------------------------------------
    def kafka_credentials_changed(self) -> bool:
        """Whether the outputs document on disk now holds other Kafka credentials than
        some client uses (always ``False`` when the runtime follows no document file)."""
        return any(login.fresh() is not None for login in self.kafka_logins)

    def reload_credentials(self) -> bool:
        """Re-read the outputs document and rebuild the Kafka clients whose login
        changed; returns whether any were rebuilt.

        Each client follows its own job's login (:class:`KafkaLogin`): a rotation
        of the consumer's password rebuilds the consumer and its producer, the
        writer's the ingest producer. Redis and PostgreSQL need no call: each of
        their new connections asks the document (:mod:`backbone.credentials`).
        kafka-python reads its password only when a client is built, so a producer
        is flushed and rebuilt (every acknowledged bar stays acknowledged; a send
        the old client could not deliver is sent again, same record and key) and
        the consumer leaves the group and joins again (it commits nothing on
        leaving; the new member resumes from the committed offsets, and the
        store's upsert absorbs anything read twice). Call it between
        ``ingest``/``consume`` calls, from the thread that runs them.
        """
        self._check_open()
        if self.credentials is None:
            return False
        self.document = self.credentials.document()
        rebuilt = False
        for login in self.kafka_logins:
            fresh = login.fresh()
            if fresh is None:
                continue
            resent = sum(producer.reconnect(fresh) for producer in login.producers)
            for consumer in login.consumers:
                consumer.reconnect(fresh)
            login.settings = fresh
            rebuilt = True
            _log.info(
                "Kafka clients of the %s login rebuilt with the credentials of %s "
                "(%d records re-sent)",
                login.job,
                self.credentials.path,
                resent,
            )
        self._follow_settings_kafka()
        return rebuilt

    def _follow_settings_kafka(self) -> None:
        # The settings keep the document's own Kafka login (dead-letter inspection
        # reads with it); they follow the file unless they were overridden.
        current = self.settings.kafka
        section = self.document.kafka if self.document is not None else None
        if current is None or section is None or not self._settings_follow_kafka:
            return
        if (current.username, current.password) != (section.username, section.password):
            self.settings = self.settings.model_copy(
                update={
                    "kafka": current.model_copy(
                        update={"username": section.username, "password": section.password}
                    )
                }
            )

    def stop(self) -> None:
        """Ask a running :meth:`consume` to return after its current poll (thread-safe)."""
        if self.consumer is not None:
            self.consumer.stop()

    # --- reads --------------------------------------------------------------
    def read(self, symbol: str, timeframe: str, start: datetime, end: datetime) -> list[Bar]:
        """Bars of one series with ``start <= ts < end``, through the cache."""
        self._check_open()
        return self.cache.get_range(
            symbol, timeframe, start, end, lambda: self.store.read(symbol, timeframe, start, end)
        )

    def latest(self, symbol: str, timeframe: str) -> Bar | None:
        """The latest stored bar of a series, through the cache."""
        self._check_open()
        return self.cache.get_latest(
            symbol, timeframe, lambda: self.store.latest(symbol, timeframe)
        )

    # --- degraded modes -----------------------------------------------------
    def degraded(self) -> dict[str, Any]:
        """Every degradable dependency not serving now, with since when and why.

        The cache's state is live (the probe may have re-attached it since);
        metrics and the health topic are as the validation hooks found them.
        """
        out: dict[str, Any] = {}
        if isinstance(self.cache, DegradableCache):
            state = self.cache.state()
            if state.degraded:
                out["cache"] = state.as_dict()
        for check in self.checks:
            if not check.ok and not check.required and check.service != "redis":
                out[check.service] = {"state": "degraded", "degraded_reason": check.detail}
        return out

    @property
    def health_producer(self) -> BarProducer | None:
        """The producer health reports go out on: the consumer's, whose login may
        write the health topic (the writer's may not); ``None`` without a consumer."""
        if self.consumer is None:
            return None
        return self.consumer.dead_letters or self.producer

    def _scope_error(self, call: str, needs: str) -> RuntimeError:
        if self.logins is not None and self.logins.job is not None:
            return self.logins.scope_error(call, needs)
        return RuntimeError(
            f"{call} needs {needs}, which this Backbone was not opened with; open it "
            "with Backbone.open(tier='institutional', outputs=...)"
        )

    def _health_topic_usable(self) -> bool:
        return not any(c.service == "health-topic" and not c.ok for c in self.checks)

    # --- health -------------------------------------------------------------
    def health(
        self, symbols: Sequence[str] | None = None, timeframes: Sequence[str] = ("1d", "1m")
    ) -> dict[str, Any]:
        """Freshness per series, counts, cache and consumer state, as a JSON-ready dict.

        Series are those ingested by this process, plus ``symbols`` x ``timeframes``
        looked up in the store. Published on the bus (``telemetry.ingest.health``)
        and, on Tier 1, to the Kafka topic of the same name.
        """
        self._check_open()
        now = time.time()
        latest = dict(self.telemetry.latest_bar_timestamps())
        for symbol in symbols or ():
            for timeframe in timeframes:
                bar = self.store.latest(symbol, timeframe)
                if bar is not None:
                    self.telemetry.bar_stored(symbol, timeframe, bar.ts)
                    latest[(symbol, timeframe)] = bar.ts.timestamp()
        series = [
            {
                "symbol": s,
                "timeframe": tf,
                "latest_ts": datetime.fromtimestamp(ts, UTC).isoformat(),
                "freshness_seconds": round(max(0.0, now - ts), 3),
            }
            for (s, tf), ts in sorted(latest.items())
        ]
        cache = self.cache.stats()
        report: dict[str, Any] = {
            "tier": self.tier,
            "at": datetime.fromtimestamp(now, UTC).isoformat(),
            "stack": self.document.stack if self.document else None,
            "streaming_enabled": self.bridge.enabled,
            "store": {
                "backend": self.store_label,
                "bars": self.store.count(),
                "dead_letters": self.store.dead_letter_count(),
            },
            "cache": {
                "backing": cache.backing,
                "hits": cache.hits,
                "misses": cache.misses,
                "evictions": cache.evictions,
                "hit_ratio": round(cache.hit_ratio, 4),
                "size": cache.size,
                **(
                    self.cache.state().as_dict()
                    if isinstance(self.cache, DegradableCache)
                    else {"state": "attached"}
                ),
            },
            "degraded": self.degraded(),
            "series": series,
        }
        report["dead_letters"] = _dead_letter_counts(self)
        if self.consumer is not None:
            self.consumer.report_lag()
            report["consumer"] = {
                "group": self.consumer.group_id,
                "committed": {
                    f"{tp.topic}/{tp.partition}": off
                    for tp, off in sorted(self.consumer.committed.items())
                },
                "lag": self.consumer.lag(),
                "paused_for_store": self.consumer.paused_for_store,
            }
        if self.producer is not None:
            report["producer"] = {"dead_letters_sent": self.producer.dead_letters_sent}
        self.bus.publish(HEALTH_TOPIC, report)
        # A missing health topic is a degraded mode: the report stays on the bus
        # (a send to it could block for the producer's max_block_ms).
        reports = self.health_producer
        if reports is not None and self._health_topic_usable():
            try:
                reports.send_json("ingest_health", report, key=self.tier)
                reports.flush()
            except Exception as exc:  # health reporting must not break the caller
                self.telemetry.health_published(False)
                _log.warning(
                    "could not publish the health report to Kafka (%s: %s); counted in "
                    "backbone_health_publish_failures_total",
                    type(exc).__name__,
                    exc,
                )
            else:
                self.telemetry.health_published(True)
        return report

    # --- lifecycle ----------------------------------------------------------
    def close(self) -> None:
        """Close every client (idempotent)."""
        if self._closed:
            return
        self._closed = True
        reports = self.health_producer
        own = reports if reports is not None and reports is not self.producer else None
        for part in (self.consumer, own, self.producer, self.cache, self.store):
            if part is None:
                continue
            try:
                part.close()
            except Exception as exc:
                _log.warning("closing %s: %s", type(part).__name__, exc)

    def __enter__(self) -> Backbone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Backbone is closed; open a new one with Backbone.open()")


def _dead_letter_counts(bb: Backbone) -> dict[str, int | None]:
    """Dead letters per place the tier keeps them (``None``: that place did not answer)."""
    from backbone.deadletter_queue import queues_for

    counts: dict[str, int | None] = {}
    for queue in queues_for(bb, count_only=True):
        try:
            counts[queue.where] = queue.count()
        except Exception as exc:  # a status report must not fail on one place
            _log.warning("counting dead letters in %s: %s", queue.where, exc)
            counts[queue.where] = None
    return counts


def _merged(*counts: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in counts:
        for code, n in part.items():
            out[code] = out.get(code, 0) + n
    return dict(sorted(out.items()))


def _streaming_enabled(settings: BackboneSettings) -> bool:
    return bool(settings.streaming_enabled) and streaming_enabled_from_env()


def _observe_latest(telemetry: Telemetry, bars: Sequence[Bar]) -> None:
    newest: dict[tuple[str, str], datetime] = {}
    for bar in bars:
        pair = (bar.symbol, bar.timeframe)
        if pair not in newest or bar.ts > newest[pair]:
            newest[pair] = bar.ts
    for (symbol, timeframe), ts in newest.items():
        telemetry.bar_stored(symbol, timeframe, ts)


def _load_document(outputs: Path | str | None) -> ConnectionsDocument | None:
    """The connections document from ``outputs`` or ``BACKBONE_OUTPUTS``; ``None`` if neither."""
    if outputs is None and not os.environ.get(OUTPUTS_ENV):
        return None
    return load_connections(outputs)


def _document_path(outputs: Path | str | None) -> Path | None:
    """The file :func:`_load_document` read (``None``: no file, settings from elsewhere)."""
    named = outputs if outputs is not None else os.environ.get(OUTPUTS_ENV)
    return Path(named) if named else None


def _choose_tier(
    tier: str | None, settings: BackboneSettings, document: ConnectionsDocument | None
) -> str:
    # --tier > the settings' tier (BACKBONE_TIER / DATA_BACKBONE_MODE, then config.yaml's
    # data_backbone_mode) > Redis or Kafka credentials from any source > the document >
    # bootstrap. The environment was read into the settings already.
    chosen = tier or settings.tier
    if chosen is None and settings.has_credentials:
        chosen = "institutional"
    return resolve_tier(chosen, env={}, document=document)


def _open_bootstrap(
    cls: type[Backbone],
    settings: BackboneSettings,
    document: ConnectionsDocument | None,
    bus: EventBus,
    telemetry: Telemetry,
) -> Backbone:
    store = DuckDBStore(settings.duckdb_path)
    cache = MemoryCache(settings.cache, namespace=settings.namespace, telemetry=telemetry, bus=bus)
    return cls(
        tier="bootstrap",
        settings=settings,
        store=store,
        cache=cache,
        bus=bus,
        telemetry=telemetry,
        store_label="duckdb",
        document=document,
    )


def _open_institutional(
    cls: type[Backbone],
    settings: BackboneSettings,
    document: ConnectionsDocument | None,
    bus: EventBus,
    telemetry: Telemetry,
    group_id: str | None,
    consumer_start: str,
    require_cache: bool | None = None,
    *,
    credentials: DocumentCredentials | None = None,
    logins: RuntimeLogins,
) -> Backbone:
    # Tier 1 clients load only when Tier 1 is chosen: Tier 0 needs no services.
    from backbone.store.timescale import TimescaleStore
    from backbone.tiers import switch_to_institutional

    # The checks log in as the clients will (a full document: the consumer's logins).
    checks = switch_to_institutional(
        document, logins.for_validation(settings), require_cache=require_cache
    )
    for check in checks:
        # The cache names its own cause when it starts detached (one line, not two).
        if not check.ok and check.service != "redis":
            _log.warning("degraded mode: %s", check)

    def follow(client: Client) -> DocumentCredentials | None:
        # A client follows the document file only if its credentials came from it.
        if credentials is None or client not in logins.follows:
            return None
        return credentials.for_job(logins.follows[client])

    if logins.store is None:
        raise logins.scope_error("the runtime", "a timescale section (the store)")
    parts: list[Any] = []
    kafka_logins: dict[str | None, KafkaLogin] = {}

    def followed(client: Client, kafka: KafkaConnectionSettings) -> KafkaLogin | None:
        source = follow(client)
        if source is None:
            return None
        return kafka_logins.setdefault(source.job, KafkaLogin(source, kafka))

    try:
        # Each client takes its settings section whole: no field is copied by hand.
        store = TimescaleStore(
            logins.store, credentials=follow("store"), read_only=logins.read_only
        )
        parts.append(store)
        cache: BarCache
        if logins.cache is None and logins.job is not None:
            # A job without a Redis login (the writer) shares no cache.
            cache = MemoryCache(
                settings.cache, namespace=settings.namespace, telemetry=telemetry, bus=bus
            )
        else:
            redis_source = follow("cache")
            cache = _open_cache(
                settings,
                logins.cache,
                checks,
                store,
                telemetry,
                bus,
                RedisDocumentCredentials(redis_source) if redis_source is not None else None,
                fills=not logins.read_only,
            )
        parts.append(cache)
        tuning = ProducerTuning(max_bars_in_flight=settings.max_bars_in_flight)
        producer = None
        if logins.producer is not None:
            producer = BarProducer(logins.producer, tuning=tuning)
            parts.append(producer)
            if (login := followed("producer", logins.producer)) is not None:
                login.producers.append(producer)
        consumer = None
        if logins.consumer is not None:
            # The consumer reports its rejects and its health with its own login,
            # which may write only those topics; one producer when both logins agree.
            reports = producer
            if producer is None or logins.consumer != logins.producer:
                reports = BarProducer(
                    logins.consumer, tuning=tuning, client_id="backbone-consumer-reports"
                )
                parts.append(reports)
            consumer = BarConsumer(
                logins.consumer,
                store,
                cache=cache,
                telemetry=telemetry,
                dead_letters=reports,
                group_id=group_id or DEFAULT_GROUP,
                store_label="timescale",
                start_at=consumer_start,
                store_outage_max_s=settings.store_outage_max_seconds,
                contract=BarContract(settings.contract),
            )
            parts.append(consumer)
            if (login := followed("consumer", logins.consumer)) is not None:
                login.consumers.append(consumer)
                if reports is not None and reports is not producer:
                    login.producers.append(reports)
    except BaseException:
        for part in reversed(parts):
            part.close()
        raise
    return cls(
        tier="institutional",
        settings=settings,
        store=store,
        cache=cache,
        bus=bus,
        telemetry=telemetry,
        producer=producer,
        consumer=consumer,
        store_label="timescale",
        document=document,
        checks=checks,
        credentials=credentials,
        logins=logins,
        kafka_logins=list(kafka_logins.values()),
    )


def _open_cache(
    settings: BackboneSettings,
    redis_settings: RedisConnectionSettings | None,
    checks: Sequence[CheckResult],
    store: BarStore,
    telemetry: Telemetry,
    bus: EventBus,
    credentials: RedisDocumentCredentials | None = None,
    *,
    fills: bool = True,
) -> DegradableCache:
    """The Tier 1 cache: attached when Redis answered validation, else cache-degraded.

    ``redis_settings``: the login the cache uses (:mod:`backbone.job_logins`);
    ``credentials``: each new Redis connection asks the outputs document (rotation)."""
    redis_check = next((c for c in checks if c.service == "redis"), None)

    def connect() -> RedisCache:
        if redis_settings is None:
            raise LookupError("no redis section in the settings or the outputs document")
        return RedisCache(
            redis_settings,
            settings.cache,
            namespace=settings.namespace,
            telemetry=telemetry,
            bus=bus,
            heartbeat_interval=settings.heartbeat_interval_seconds,
            credentials=credentials,
            fills=fills,
        )

    return DegradableCache(
        connect,
        policy=settings.cache,
        namespace=settings.namespace,
        telemetry=telemetry,
        warm=store.latest,
        probe_interval=settings.cache_probe_interval_seconds,
        endpoint=redis_settings.endpoint if redis_settings is not None else "-",
        reason=None if redis_check is None or redis_check.ok else redis_check.detail,
    )
