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

``ingest`` is synchronous on both tiers: it returns once every bar it was given
is stored (Tier 1: produced, consumed, stored, offsets committed), cached entries
are invalidated and the bus has the events. Counts reconcile:
``records_in = stored + dead_lettered + duplicates``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from backbone.bars import Bar, bar_problem, reject_bar
from backbone.bus import EventBus
from backbone.cache import MemoryCache, RedisCache
from backbone.cache.protocol import BarCache
from backbone.connections import ConnectionsDocument, TimescaleConnection
from backbone.deadletter import DeadLetter
from backbone.outputs import OUTPUTS_ENV, load_connections
from backbone.settings import BackboneSettings, load_settings
from backbone.store.base import BarStore
from backbone.store.duckdb import DuckDBStore
from backbone.stream.bridge import EventBusBridge, streaming_enabled_from_env
from backbone.stream.consumer import DEFAULT_GROUP, BarConsumer, ConsumeStats, write_bars
from backbone.stream.producer import BarProducer
from backbone.telemetry import Telemetry
from backbone.tiers import TIER_ENV, resolve_tier

__all__ = ["HEALTH_TOPIC", "Backbone", "IngestResult"]

_log = logging.getLogger(__name__)

#: Bus topic (and, on Tier 1, the Kafka topic ``telemetry.ingest.health``) of health reports.
HEALTH_TOPIC = "telemetry.ingest.health"
#: Bars handled per step; bounds memory and sets the progress granularity.
CHUNK = 20_000

Progress = Callable[[int], None]


@dataclass(frozen=True)
class IngestResult:
    """What one ``ingest`` call moved; ``records_in = stored + dead_lettered + duplicates``."""

    records_in: int
    stored: int
    dead_lettered: int
    duplicates: int
    seconds: float
    tier: str
    #: Tier 1: records earlier producers had left in the topics, processed first
    #: (stored or dead-lettered then) and not part of the counts above.
    backlog: int = 0

    @property
    def reconciles(self) -> bool:
        return self.records_in == self.stored + self.dead_lettered + self.duplicates

    @property
    def bars_per_second(self) -> float:
        return self.records_in / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reconciles"] = self.reconciles
        out["bars_per_second"] = round(self.bars_per_second, 1)
        return out


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
        self.bridge = EventBusBridge(bus, tier=tier, enabled=_streaming_enabled(settings))
        if consumer is not None:
            consumer.bridge = self.bridge
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
    ) -> Backbone:
        """Open the runtime for ``tier`` (``None``: decided by :func:`resolve_tier`).

        Institutional runs the validation hooks first and raises
        :class:`~backbone.tiers.TierValidationError` listing every failing check.
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
            return _open_institutional(
                cls, settings, document, bus, telemetry, group_id, consumer_start
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
        started = time.perf_counter()
        totals = ConsumeStats()
        pending: dict[tuple[str, int], int] = {}
        backlog = 0
        if self.consumer is not None:
            # Drain what others left first, so the counts below are this call's own.
            backlog = self.consumer.catch_up(timeout_s=120.0).records_in
        for chunk in _chunks(items, CHUNK):
            bars, dead = self._validate(chunk)
            totals.records_in += len(dead)
            totals.dead_lettered += len(dead)
            if self.producer is None:
                self._ingest_local(bars, dead, totals)
            else:
                self._produce(bars, dead, pending, totals)
            if progress is not None:
                progress(len(chunk))
        if self.producer is not None:
            self._drain(pending, totals)
        return IngestResult(
            records_in=totals.records_in,
            stored=totals.stored,
            dead_lettered=totals.dead_lettered,
            duplicates=totals.duplicates,
            seconds=time.perf_counter() - started,
            tier=self.tier,
            backlog=backlog,
        )

    def _validate(self, chunk: Sequence[Bar | DeadLetter]) -> tuple[list[Bar], list[DeadLetter]]:
        bars: list[Bar] = []
        dead: list[DeadLetter] = []
        for item in chunk:
            if isinstance(item, DeadLetter):
                dead.append(item)
                continue
            problem = bar_problem(item)
            if problem is None:
                bars.append(item)
            else:
                dead.append(reject_bar(item, problem, origin=f"ingest:{item.source}"))
        if dead:
            for letter in dead:
                self.telemetry.dead_lettered(letter.reason)
        return bars, dead

    def _ingest_local(self, bars: list[Bar], dead: list[DeadLetter], totals: ConsumeStats) -> None:
        if dead:
            self.store.write_dead_letters(dead)
        if not bars:
            return
        stored, dupes = write_bars(self.store, bars)
        totals.records_in += len(bars)
        totals.stored += stored
        totals.duplicates += dupes
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
        if self.consumer is None:
            raise RuntimeError(
                "consuming needs the institutional tier (Kafka); open it with "
                "Backbone.open(tier='institutional', outputs=...)"
            )
        return self.consumer.run(
            max_records=max_records, timeout_s=timeout_s, idle_timeout_s=idle_timeout_s
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
            },
            "series": series,
        }
        if self.consumer is not None:
            self.consumer.report_lag()
            report["consumer"] = {
                "group": self.consumer.group_id,
                "committed": {
                    f"{tp.topic}/{tp.partition}": off
                    for tp, off in sorted(self.consumer.committed.items())
                },
                "lag": self.consumer.lag(),
            }
        if self.producer is not None:
            report["producer"] = {"dead_letters_sent": self.producer.dead_letters_sent}
        self.bus.publish(HEALTH_TOPIC, report)
        if self.producer is not None:
            try:
                self.producer.send_json("ingest_health", report, key=self.tier)
                self.producer.flush()
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
        for part in (self.consumer, self.producer, self.cache, self.store):
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


def _choose_tier(
    tier: str | None, settings: BackboneSettings, document: ConnectionsDocument | None
) -> str:
    # --tier > BACKBONE_TIER > config.yaml's ``tier`` > the document > bootstrap.
    return resolve_tier(tier or os.environ.get(TIER_ENV) or settings.tier, document=document)


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
) -> Backbone:
    # Tier 1 clients load only when Tier 1 is chosen: Tier 0 needs no services.
    from backbone.store.timescale import TimescaleStore
    from backbone.tiers import switch_to_institutional

    switch_to_institutional(document, settings)
    assert settings.kafka is not None and settings.timescale is not None
    assert settings.redis is not None
    parts: list[Any] = []
    try:
        ts = settings.timescale
        store = TimescaleStore(
            TimescaleConnection(
                hosts=ts.hosts,
                dbname=ts.dbname,
                user=ts.user,
                password=ts.password or SecretStr(""),
                sslmode=ts.sslmode,
                timescaledb=ts.timescaledb,
            ),
            pool_size=ts.pool_max_size,
        )
        parts.append(store)
        cache = RedisCache(
            settings.redis,
            settings.cache,
            namespace=settings.namespace,
            telemetry=telemetry,
            bus=bus,
            heartbeat_interval=settings.heartbeat_interval_seconds,
        )
        parts.append(cache)
        producer = BarProducer(settings.kafka)
        parts.append(producer)
        consumer = BarConsumer(
            settings.kafka,
            store,
            cache=cache,
            telemetry=telemetry,
            dead_letters=producer,
            group_id=group_id or DEFAULT_GROUP,
            store_label="timescale",
            start_at=consumer_start,
        )
        parts.append(consumer)
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
    )
