"""The bar consumer: Kafka → store, committing offsets only after the store commits.

One poll is one unit of work, in this order:

1. decode every record (:func:`~backbone.stream.codec.decode_record`): valid bars
   and dead letters with reasons;
2. write the valid bars to the store in **one transaction** (idempotent upsert);
3. make the dead letters durable (the dead-letter topic on Tier 1, flushed; or
   the store's ``dead_letter`` table when no dead-letter producer is given);
4. **commit the offsets** of the poll — only now, so a crash anywhere before
   this point redelivers the whole poll and the upsert absorbs what was already
   stored (at-least-once delivery, exactly-once rows);
5. tell the cache (``on_new_bars``) and the event-bus bridge.

**The store unreachable** (:class:`~backbone.store.base.StoreUnavailableError`)
at step 2 does not fail the poll: the consumer *pauses* its partitions (nothing
more is fetched), keeps the poll's records in hand, commits nothing, and
retries the same store transaction with exponential backoff and jitter
(tenacity) for up to ``store_outage_max_s``. When the store answers, the poll
goes on from step 2: stored once, committed, partitions resumed — 0 lost,
0 duplicated, and never an offset past what is stored. Only past the limit
does it give up (rewinding, so the records are read again), with an error
saying so. ``max.poll.interval.ms`` is raised above that limit, so holding a
poll never costs the group membership.

**Kafka unreachable**: a poll that cannot reach the brokers returns nothing
(after a short back-off) instead of raising, offset look-ups are retried, and
a commit that cannot reach them counts as a commit failure (the records are
read again and the store absorbs them). A bounded run that cannot finish
ends with a :class:`TimeoutError` saying so — never a raw connection error.

Counts reconcile per item (a bar, or an unreadable record):
``records_in = stored + duplicates + corrections + conflicts + dead_lettered``
(conflicts, refused corrections, also go to the dead-letter stream).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import (
    CommitFailedError,
    KafkaError,
    RebalanceInProgressError,
    RetriableError,
)
from kafka.structs import OffsetAndMetadata
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential_jitter,
)

from backbone.bars import Bar
from backbone.contract import DEFAULT_POLICY, BarContract, ContractPolicy, reason_code
from backbone.deadletter import DeadLetter
from backbone.settings import KafkaConnectionSettings
from backbone.store.base import StoreUnavailableError
from backbone.store.revisions import WriteOutcome, conflict_letter
from backbone.stream.bridge import EventBusBridge
from backbone.stream.codec import decode_record
from backbone.stream.producer import BarProducer, kafka_client_config
from backbone.telemetry import Telemetry

__all__ = [
    "CRASH_POINT_ENV",
    "DEFAULT_GROUP",
    "TRANSIENT_KAFKA_ERRORS",
    "BarConsumer",
    "ConsumeStats",
    "write_bars",
]

_T = TypeVar("_T")

_log = logging.getLogger(__name__)

#: Kafka errors that mean "the brokers do not answer now": wait, retry.
TRANSIENT_KAFKA_ERRORS: tuple[type[Exception], ...] = (RetriableError,)
#: Seconds to back off after a poll that could not reach the brokers.
_KAFKA_BACKOFF_S = 0.5

DEFAULT_GROUP = "backbone-ingest"
#: Test hook: ``after-store-commit`` makes the consumer SIGKILL itself after the
#: store transaction committed and before the offsets are committed.
CRASH_POINT_ENV = "BACKBONE_TEST_CRASH_POINT"


@dataclass
class ConsumeStats:
    """What a consumer run moved;
    ``records_in = stored + duplicates + corrections + conflicts + dead_lettered``."""

    records_in: int = 0
    stored: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    #: Re-sends with new values applied as a new revision (policy ``revise``).
    corrections: int = 0
    #: Re-sends with new values refused to the dead-letter stream (policy ``refuse``).
    conflicts: int = 0
    #: Rejections (dead letters and conflicts) per reason code.
    reasons: dict[str, int] = field(default_factory=dict)
    kafka_records: int = 0
    polls: int = 0
    commit_failures: int = 0
    #: Polls held while the store was unreachable, and the seconds they were held.
    store_pauses: int = 0
    store_paused_s: float = 0.0
    #: Produce-to-stored latency per Kafka record, seconds (record timestamp → store commit).
    latencies_s: list[float] = field(default_factory=list)
    #: Wall-clock time (Unix s) of the first and the last store commit.
    first_stored_at: float | None = None
    last_stored_at: float | None = None

    def add(self, other: ConsumeStats) -> None:
        self.records_in += other.records_in
        self.stored += other.stored
        self.dead_lettered += other.dead_lettered
        self.duplicates += other.duplicates
        self.corrections += other.corrections
        self.conflicts += other.conflicts
        for code, n in other.reasons.items():
            self.reasons[code] = self.reasons.get(code, 0) + n
        self.kafka_records += other.kafka_records
        self.polls += other.polls
        self.commit_failures += other.commit_failures
        self.store_pauses += other.store_pauses
        self.store_paused_s += other.store_paused_s
        self.latencies_s.extend(other.latencies_s)
        if other.first_stored_at is not None:
            self.first_stored_at = min(
                self.first_stored_at or other.first_stored_at, other.first_stored_at
            )
            self.last_stored_at = max(self.last_stored_at or 0.0, other.last_stored_at or 0.0)

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0..100) of the latencies, seconds; ``None`` if none."""
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
        return ordered[index]

    @property
    def reconciles(self) -> bool:
        return self.records_in == (
            self.stored + self.duplicates + self.corrections + self.conflicts + self.dead_lettered
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counts and latency percentiles (milliseconds)."""

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 2)

        return {
            "records_in": self.records_in,
            "stored": self.stored,
            "dead_lettered": self.dead_lettered,
            "duplicates": self.duplicates,
            "corrections": self.corrections,
            "conflicts": self.conflicts,
            "rejected_by_reason": dict(sorted(self.reasons.items())),
            "reconciles": self.reconciles,
            "kafka_records": self.kafka_records,
            "commit_failures": self.commit_failures,
            "store_pauses": self.store_pauses,
            "store_paused_s": round(self.store_paused_s, 2),
            "first_stored_at": self.first_stored_at,
            "last_stored_at": self.last_stored_at,
            "latency_ms": {
                "p50": ms(self.percentile(50)),
                "p95": ms(self.percentile(95)),
                "p99": ms(self.percentile(99)),
                "max": ms(self.percentile(100)),
            },
        }


def write_bars(
    store: Any, bars: Sequence[Bar], policy: ContractPolicy, *, origin: str
) -> tuple[WriteOutcome, list[DeadLetter]]:
    """Write ``bars`` in one store transaction under the correction policy.

    Returns what the store did and the dead letters of refused corrections
    (``correction_conflict``), which the caller makes durable with its other rejects.
    """
    if not bars:
        return WriteOutcome(), []
    outcome: WriteOutcome = store.apply(bars, corrections=policy.corrections)
    letters = [conflict_letter(new, old, origin=origin) for new, old in outcome.conflicts]
    return outcome, letters


class _ResumeAt(ConsumerRebalanceListener):
    """After a reconnect, the new client's first assignment resumes each partition
    where the old client stopped (its fetch position: every record before it is
    stored). Without it, a partition the group has no committed offset for would
    start at ``auto_offset_reset`` — ``latest`` skips what arrived meanwhile."""

    def __init__(self, positions: dict[TopicPartition, int]) -> None:
        self.positions = positions
        self.consumer: KafkaConsumer | None = None

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        # Once: a later rebalance resumes from the committed offsets as usual.
        positions, self.positions = self.positions, {}
        for tp in assigned:
            if tp in positions and self.consumer is not None:
                self.consumer.seek(tp, positions[tp])  # local state only: no I/O


class BarConsumer:
    """A member of a consumer group that moves bars from Kafka into a store.

    ``dead_letters`` is a producer for ``market-data.dead-letter``; without one,
    rejects go to ``store.write_dead_letters`` (the Tier 0 table).
    """

    def __init__(
        self,
        kafka: KafkaConnectionSettings,
        store: Any,
        *,
        cache: Any = None,
        bridge: EventBusBridge | None = None,
        telemetry: Telemetry | None = None,
        dead_letters: BarProducer | None = None,
        group_id: str = DEFAULT_GROUP,
        topics: Iterable[str] = ("daily_bars", "intraday_bars"),
        max_poll_records: int = 2000,
        session_timeout_ms: int = 20_000,
        client_id: str = "backbone-consumer",
        store_label: str = "timescale",
        start_at: str = "earliest",
        store_outage_max_s: float = 300.0,
        store_retry_max_wait_s: float = 5.0,
        contract: BarContract | None = None,
    ) -> None:
        self.kafka = kafka
        #: Records from any producer meet the same contract as local ingest.
        self.contract = contract or BarContract(DEFAULT_POLICY)
        self.store = store
        self.cache = cache
        self.bridge = bridge
        self.telemetry = telemetry
        self.dead_letters = dead_letters
        #: Checked against the stack's group prefix (the ACLs grant no other group).
        self.group_id = kafka.check_group(group_id)
        self.store_label = store_label
        self.stats = ConsumeStats()
        self.store_outage_max_s = store_outage_max_s
        self._store_retry_max_wait_s = store_retry_max_wait_s
        #: Whether a poll is held now because the store does not answer.
        self.paused_for_store = False
        if telemetry is not None:
            # The series exists (at 0) from the start, so a dashboard or a rule sees
            # "not paused" rather than nothing until the first outage.
            telemetry.store_paused(group_id, False)
        self._stop = threading.Event()
        self._crash_point = os.environ.get(CRASH_POINT_ENV, "")
        #: Next offset to read per partition, as committed by this consumer.
        self.committed: dict[TopicPartition, int] = {}
        self._client_id = client_id
        self._start_at = start_at
        self._max_poll_records = max_poll_records
        self._session_timeout_ms = session_timeout_ms
        self.topics = [self.kafka.topic(t) for t in topics]
        self._consumer = self._join(kafka)

    def _join(
        self, kafka: KafkaConnectionSettings, resume: _ResumeAt | None = None
    ) -> KafkaConsumer:
        """A new group member on ``kafka``, subscribed to :attr:`topics`."""
        consumer = KafkaConsumer(
            **kafka_client_config(kafka, client_id=self._client_id),
            group_id=self.group_id,
            enable_auto_commit=False,
            # Where a group without committed offsets starts: ``earliest`` (nothing
            # retained is skipped) or ``latest`` (only what arrives from now on).
            auto_offset_reset=self._start_at,
            max_poll_records=self._max_poll_records,
            # A poll held through a store outage must not cost the membership.
            max_poll_interval_ms=int(max(300.0, self.store_outage_max_s + 60.0) * 1000),
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=max(1000, self._session_timeout_ms // 4),
            # Each poll costs a store transaction and an offset commit, whatever its
            # size: let the broker gather 64 KB (~350 bars) or wait 100 ms first, so
            # a steady trickle arrives in few, larger polls.
            fetch_min_bytes=64 * 1024,
            fetch_max_wait_ms=100,
            # A record holds up to 500 bars (~90 KB): let one fetch bring many.
            max_partition_fetch_bytes=8 * 1024 * 1024,
            # Refresh metadata every 30 s (default 5 min), so a member that joined
            # with stale metadata rebalances onto the partitions soon.
            metadata_max_age_ms=30_000,
        )
        # Learn the topics' partitions before joining: a group leader without that
        # metadata computes an empty assignment, and kafka-python would only notice
        # at its next metadata refresh.
        for topic in self.topics:
            consumer.partitions_for_topic(topic)
        if resume is not None:
            resume.consumer = consumer
            consumer.subscribe(self.topics, listener=resume)
        else:
            consumer.subscribe(self.topics)
        return consumer

    def reconnect(self, kafka: KafkaConnectionSettings) -> None:
        """Leave the group and join it again with a client built from ``kafka``
        (new credentials; kafka-python reads them only when a client is built).

        Call it between polls: every poll is stored and committed (or rewound)
        before :meth:`poll_once` returns, so closing commits nothing new, and the
        new member resumes from the group's committed offsets — nothing is lost,
        and what a failed commit leaves is read again and absorbed by the store's
        upsert (no duplicate rows). Partitions it gets back resume at the old
        client's fetch positions (see :class:`_ResumeAt`).
        """
        positions = self._positions()
        self.close()
        self.kafka = kafka
        self._consumer = self._join(kafka, _ResumeAt(positions))

    def _positions(self) -> dict[TopicPartition, int]:
        """The fetch position of every assigned partition the client knows (locally:
        a refused client cannot ask the brokers)."""
        out: dict[TopicPartition, int] = {}
        for tp in self._consumer.assignment():
            try:
                position = self._consumer.position(tp, timeout_ms=1000)
            except KafkaError:
                continue
            if position is not None:
                out[tp] = position
        return out

    # --- one unit of work ---------------------------------------------------
    def poll_once(self, timeout_ms: int = 500) -> ConsumeStats:
        """Poll once and carry the records through store, commit, cache and bridge."""
        batch = ConsumeStats(polls=1)
        try:
            polled = self._consumer.poll(timeout_ms=timeout_ms)
        except TRANSIENT_KAFKA_ERRORS as exc:
            _log.warning("Kafka unreachable (%s: %s); polling again", type(exc).__name__, exc)
            time.sleep(_KAFKA_BACKOFF_S)
            return batch
        if not polled:
            self.report_lag()
            return batch
        bars: list[Bar] = []
        backfill_bars: dict[str, list[Bar]] = {}
        dead: list[DeadLetter] = []
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        first: dict[TopicPartition, int] = {}
        timestamps: list[float] = []
        for tp, records in polled.items():
            first[tp] = records[0].offset
            for rec in records:
                decoded = decode_record(
                    rec.value,
                    rec.headers,
                    key=rec.key,
                    origin=f"kafka:{rec.topic}/{rec.partition}@{rec.offset}",
                    contract=self.contract,
                )
                batch.records_in += decoded.items
                dead.extend(decoded.dead_letters)
                if decoded.backfill is not None:
                    backfill_bars.setdefault(decoded.backfill, []).extend(decoded.bars)
                else:
                    bars.extend(decoded.bars)
                timestamps.append(rec.timestamp / 1000.0)
            batch.kafka_records += len(records)
            offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
        every_bar = bars + [b for group in backfill_bars.values() for b in group]
        try:
            outcome, conflicts = self._store_holding(
                lambda: write_bars(
                    self.store, every_bar, self.contract.policy, origin=f"kafka:{self.group_id}"
                ),
                len(every_bar),
                list(first),
                batch,
            )
            self._persist_dead_letters(dead + conflicts)
        except Exception:
            # Nothing of this poll is committed: rewind so it is read again.
            for tp, offset in first.items():
                self._consumer.seek(tp, offset)
            raise
        batch.stored, batch.duplicates = outcome.stored, outcome.duplicates
        batch.corrections, batch.conflicts = outcome.corrections, len(conflicts)
        batch.dead_lettered = len(dead)
        dead = dead + conflicts
        for letter in dead:
            code = reason_code(letter.reason)
            batch.reasons[code] = batch.reasons.get(code, 0) + 1
        stored_at = time.time()
        batch.latencies_s = [max(0.0, stored_at - ts) for ts in timestamps]
        batch.first_stored_at = batch.last_stored_at = stored_at
        if self._crash_point == "after-store-commit":
            os.kill(os.getpid(), signal.SIGKILL)
        self._commit(offsets, batch)
        self._after_commit(bars, backfill_bars, dead, batch)
        self.stats.add(batch)
        return batch

    def _store_holding(
        self,
        write: Callable[[], _T],
        held: int,
        partitions: list[TopicPartition],
        batch: ConsumeStats,
    ) -> _T:
        """Run ``write`` (one store transaction of ``held`` bars); while the store is
        unreachable, pause and retry (see the module doc)."""
        try:
            return write()
        except StoreUnavailableError as exc:
            first_error = exc
        assigned = set(self._consumer.assignment()) | set(partitions)
        self._consumer.pause(*assigned)
        self.paused_for_store = True
        if self.telemetry is not None:
            self.telemetry.store_paused(self.group_id, True)
        began = time.monotonic()
        _log.warning(
            "store unreachable (%s); consumer %s paused %d partitions, holding %d bars "
            "uncommitted, retrying with backoff for up to %.0fs",
            first_error,
            self.group_id,
            len(assigned),
            held,
            self.store_outage_max_s,
        )

        def before_sleep(state: RetryCallState) -> None:
            _log.info(
                "store still unreachable after %d retries (%.0fs held)",
                state.attempt_number,
                time.monotonic() - began,
            )

        retrying = Retrying(
            retry=retry_if_exception_type(StoreUnavailableError),
            wait=wait_exponential_jitter(
                multiplier=0.5, max=self._store_retry_max_wait_s, jitter=1
            ),
            # Stopping hands the poll back uncommitted (re-read by the next owner).
            stop=stop_after_delay(self.store_outage_max_s) | stop_when_event_set(self._stop),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    result = write()
        except StoreUnavailableError as exc:
            raise StoreUnavailableError(
                f"{exc} — the consumer held its poll for {time.monotonic() - began:.0f}s "
                f"(store_outage_max_seconds {self.store_outage_max_s:.0f}) and gave up; "
                "nothing of it was committed, so it is read again on restart"
            ) from None
        finally:
            self._consumer.resume(*assigned)
            self.paused_for_store = False
            if self.telemetry is not None:
                self.telemetry.store_paused(self.group_id, False)
            batch.store_pauses += 1
            batch.store_paused_s += time.monotonic() - began
        _log.warning(
            "store answers again after %.1fs; the held poll is stored, partitions resumed",
            time.monotonic() - began,
        )
        return result

    def _persist_dead_letters(self, dead: Sequence[DeadLetter]) -> None:
        if not dead:
            return
        if self.dead_letters is not None:
            self.dead_letters.send_dead_letters(dead)
            self.dead_letters.flush()
        else:
            self.store.write_dead_letters(dead)

    def _commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata], batch: Any) -> None:
        try:
            self._consumer.commit(offsets=dict(offsets))
        except (CommitFailedError, RebalanceInProgressError, *TRANSIENT_KAFKA_ERRORS) as exc:
            # The group rebalanced (or the brokers are gone): the partitions' next
            # owner (maybe this member again) re-reads these records from the last
            # committed offset and the store absorbs them. Nothing is lost; count it.
            batch.commit_failures += 1
            _log.warning("offset commit failed (%s); records will be re-read", exc)
            return
        for tp, meta in offsets.items():
            self.committed[tp] = meta.offset

    def _after_commit(
        self,
        bars: list[Bar],
        backfill_bars: dict[str, list[Bar]],
        dead: Sequence[DeadLetter],
        batch: ConsumeStats,
    ) -> None:
        every_bar = bars + [b for group in backfill_bars.values() for b in group]
        if self.cache is not None and every_bar:
            try:
                self.cache.on_new_bars(every_bar)
            except Exception as exc:  # the cache is an accelerator; the store has the bars
                _log.warning("cache invalidation failed (%s); entries expire by TTL", exc)
        if self.bridge is not None:
            self.bridge.publish(bars)
            for name, group in backfill_bars.items():
                self.bridge.publish(group, backfill=name)
        if self.telemetry is not None:
            self._record_telemetry(every_bar, dead, batch)

    def _record_telemetry(
        self, bars: Sequence[Bar], dead: Sequence[DeadLetter], batch: ConsumeStats
    ) -> None:
        tel = self.telemetry
        assert tel is not None
        tel.records_in("kafka", batch.records_in)
        tel.rows_written(self.store_label, batch.stored)
        for letter in dead:
            tel.dead_lettered(reason_code(letter.reason))
        newest: dict[tuple[str, str], Bar] = {}
        for bar in bars:
            seen = newest.get((bar.symbol, bar.timeframe))
            if seen is None or bar.ts > seen.ts:
                newest[(bar.symbol, bar.timeframe)] = bar
        for bar in newest.values():
            tel.bar_stored(bar.symbol, bar.timeframe, bar.ts)
        self.report_lag()

    def lag(self) -> dict[str, int]:
        """Records behind the log end per ``topic/partition`` (committed offset to
        high watermark, as of the last fetch)."""
        out: dict[str, int] = {}
        for tp in sorted(self._consumer.assignment()):
            high = self._consumer.highwater(tp)
            # Not committed by this member yet: nothing polled there, so the fetch
            # position (the group's committed offset or the reset point) is the mark.
            done = self.committed.get(tp)
            if done is None and high is not None:
                with contextlib.suppress(KafkaError):
                    done = self._consumer.position(tp)
            if high is not None and done is not None:
                out[f"{tp.topic}/{tp.partition}"] = max(0, high - done)
        return out

    def report_lag(self) -> None:
        """Set the consumer-lag gauge of every assigned partition (no-op without telemetry)."""
        if self.telemetry is None:
            return
        for name, lag in self.lag().items():
            topic, _, partition = name.rpartition("/")
            self.telemetry.consumer_lag(topic, int(partition), self.group_id, lag)

    # --- bounded runs -------------------------------------------------------
    def run(
        self,
        *,
        max_records: int | None = None,
        timeout_s: float = 30.0,
        idle_timeout_s: float | None = None,
    ) -> ConsumeStats:
        """Consume until ``max_records`` items, ``timeout_s``, ``idle_timeout_s`` without
        records, or :meth:`stop`; returns what this run moved."""
        run = ConsumeStats()
        deadline = time.monotonic() + timeout_s
        last_data = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < deadline:
            batch = self.poll_once(timeout_ms=200)
            run.add(batch)
            now = time.monotonic()
            if batch.kafka_records:
                last_data = now
            elif idle_timeout_s is not None and now - last_data >= idle_timeout_s:
                break
            if max_records is not None and run.records_in >= max_records:
                break
        return run

    def run_until(
        self, targets: Mapping[tuple[str, int], int], *, timeout_s: float = 60.0
    ) -> ConsumeStats:
        """Consume until this member has processed and committed every (topic, partition)
        in ``targets`` up to and including the given offset (e.g. the producer's last
        acknowledged offsets). Partitions the group gave another member are skipped."""
        run = ConsumeStats()
        deadline = time.monotonic() + timeout_s
        wanted = {TopicPartition(t, p): off + 1 for (t, p), off in targets.items()}
        while behind := self._behind(wanted):
            if self._stop.is_set():
                break
            if time.monotonic() >= deadline:
                named = {f"{tp.topic}/{tp.partition}": n for tp, n in behind.items()}
                raise TimeoutError(
                    f"the consumer did not catch up within {timeout_s:.0f}s (behind: {named}); "
                    "check the store and the brokers with `backbone status`"
                )
            batch = self.poll_once(timeout_ms=200)
            # Time held through a store outage is not the consumer falling behind.
            deadline += batch.store_paused_s
            run.add(batch)
        return run

    def _behind(self, wanted: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        # After poll_once every polled record is processed (or rewound on failure),
        # so the fetch position is the next offset still to process.
        assigned = self._consumer.assignment()
        out: dict[TopicPartition, int] = {}
        for tp, off in wanted.items():
            if tp not in assigned:
                if not assigned:
                    out[tp] = off  # not joined yet: everything is still ahead
                continue
            try:
                position = self._consumer.position(tp)
            except TRANSIENT_KAFKA_ERRORS:
                out[tp] = off  # the brokers do not answer: not known to be done
                continue
            if position is None or position < off:
                out[tp] = off - (position or 0)
        return out

    def catch_up(self, *, timeout_s: float = 60.0) -> ConsumeStats:
        """Join the group if needed, then process everything already in the assigned
        partitions (up to their end offsets now); returns what that moved."""
        deadline = time.monotonic() + timeout_s
        run = ConsumeStats()
        while not self._consumer.assignment() and time.monotonic() < deadline:
            run.add(self.poll_once(timeout_ms=200))
        assigned = list(self._consumer.assignment())
        if not assigned:
            raise TimeoutError(
                f"the consumer group {self.group_id!r} assigned no partitions within "
                f"{timeout_s:.0f}s; check the brokers with `harness status`"
            )
        ends = self._until_answered(
            lambda: self._start_positions_and_ends(assigned), deadline, "the end offsets"
        )
        targets = {(tp.topic, tp.partition): end - 1 for tp, end in ends.items() if end > 0}
        run.add(self.run_until(targets, timeout_s=max(1.0, deadline - time.monotonic())))
        return run

    def _start_positions_and_ends(self, assigned: list[TopicPartition]) -> dict[Any, int]:
        for tp in assigned:
            # Resolve the start position now: with ``start_at="latest"`` a partition
            # still empty here would otherwise resolve it lazily, after the caller's
            # next produce, and skip those records.
            self._consumer.position(tp)
        self._pin_group_start(assigned)
        return dict(self._consumer.end_offsets(assigned))

    def _pin_group_start(self, assigned: Iterable[TopicPartition]) -> None:
        """With ``start_at="latest"``, commit the resolved start of every assigned
        partition the group has no offset for yet.

        Otherwise the group's start lives only in this member: a partition it is
        given but receives nothing on keeps no committed offset, and the next
        member (another process, or the default ``earliest``) begins at the log's
        start and re-reads everything retained there (a drill's drain met 800k
        bars of earlier runs that way). Committing the start that was resolved
        skips nothing: no record at or after it has been read yet.
        """
        if self._start_at != "latest":
            return
        try:
            unpinned = [tp for tp in assigned if self._consumer.committed(tp) is None]
            if unpinned:
                self._commit_positions(unpinned)
        except (CommitFailedError, RebalanceInProgressError, *TRANSIENT_KAFKA_ERRORS) as exc:
            # Only a convenience for the next member: records are never lost by it.
            _log.info("could not pin the group's start offsets yet (%s)", exc)

    def _commit_positions(self, partitions: Iterable[TopicPartition]) -> None:
        offsets = {tp: OffsetAndMetadata(self._consumer.position(tp), "", -1) for tp in partitions}
        self._consumer.commit(offsets=offsets)
        for tp, meta in offsets.items():
            self.committed[tp] = meta.offset

    def _until_answered(self, call: Any, deadline: float, what: str) -> Any:
        """``call()``, retried while the brokers do not answer, until ``deadline``."""
        while True:
            try:
                return call()
            except TRANSIENT_KAFKA_ERRORS as exc:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"Kafka did not answer for {what} ({type(exc).__name__}: {exc}); "
                        "nothing uncommitted is lost (it is read again when the brokers "
                        "answer): check them with `harness status`"
                    ) from None
                time.sleep(_KAFKA_BACKOFF_S)

    def wait_for_assignment(self, timeout_s: float = 30.0) -> set[TopicPartition]:
        """Poll until the group assigned this member partitions (records that arrive
        meanwhile are processed as usual)."""
        deadline = time.monotonic() + timeout_s
        while not self._consumer.assignment() and time.monotonic() < deadline:
            self.poll_once(timeout_ms=200)
        assigned = set(self._consumer.assignment())
        for tp in assigned:
            # Resolve the start position now (committed offset or the reset
            # policy), so records produced after this call are all consumed.
            self._consumer.position(tp)
        self._pin_group_start(assigned)
        return assigned

    def assigned(self) -> set[TopicPartition]:
        """The partitions the group assigned to this member now."""
        return set(self._consumer.assignment())

    def stop(self) -> None:
        """Ask a running :meth:`run` to return after the current poll (thread-safe)."""
        self._stop.set()

    def close(self) -> None:
        """Leave the group and close connections; uncommitted records are re-read later."""
        try:
            self._consumer.close(autocommit=False)
        except KafkaError as exc:
            _log.warning("closing the Kafka consumer: %s", exc)
