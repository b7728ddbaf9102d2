"""The bar producer: bars to ``market-data.*-bars``, rejects to ``market-data.dead-letter``.

kafka-python 3.x already defaults to ``acks=all`` with idempotence (KIP-679);
both are set explicitly here so a future default change cannot weaken delivery,
and kafka-python then *raises* on a conflicting setting instead of silently
turning idempotence off. With idempotence the broker de-duplicates the
producer's retries, and up to 5 in-flight requests keep per-partition order.

**Bounded in flight.** At most ``ProducerTuning.max_bars_in_flight`` bars are
sent and not yet acknowledged: the send that would pass the bound first waits
for the acknowledgements (back-pressure: ``ingest`` blocks). If Kafka does not
acknowledge within ``flush_timeout_s`` — the brokers are gone — it raises
:class:`ProduceError` naming how many bars are unacknowledged: never a silent
drop. Acknowledged offsets are kept until :meth:`BarProducer.flush` returns
them and nothing acknowledged is ever sent again by this class.

**New credentials** (:meth:`BarProducer.reconnect`): kafka-python reads its SASL
password when a client is built, so a rotated password needs a new client. The
old one is flushed first; what it cannot get acknowledged (its connections were
refused) is sent again, the same records with the same keys, through the new one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from kafka import KafkaProducer
from kafka.errors import KafkaError, SaslAuthenticationFailedError

from backbone.bars import Bar
from backbone.deadletter import DeadLetter
from backbone.settings import KafkaConnectionSettings
from backbone.stream.codec import (
    HEADER_REASON,
    MAX_BARS_PER_RECORD,
    BarRecord,
    batch_records,
)

__all__ = [
    "BarProducer",
    "ProduceError",
    "ProducerTuning",
    "kafka_client_config",
]

_log = logging.getLogger(__name__)


class ProduceError(RuntimeError):
    """Records the broker did not acknowledge; the message says how many and why.

    ``auth_failed``: a broker refused the client's credentials (a rotated
    password: ``Backbone.reload_credentials()`` builds clients with the new one).
    """

    def __init__(self, message: str, *, auth_failed: bool = False) -> None:
        super().__init__(message)
        self.auth_failed = auth_failed


class _Sent(NamedTuple):
    """One send in flight: its future, and what to send again on a new client."""

    future: Any
    topic: str
    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]]
    #: Bars the record carries (0 for dead letters and reports).
    bars: int = 0


def _close_quietly(producer: KafkaProducer) -> None:
    """Close a replaced client once its pending batches have expired or been sent."""
    timeout_s = producer.config.get("delivery_timeout_ms", 120_000) / 1000 + 10
    try:
        producer.close(timeout=timeout_s)
    except KafkaError as exc:
        _log.info("the replaced Kafka producer closed with %s", type(exc).__name__)


def kafka_client_config(kafka: KafkaConnectionSettings, *, client_id: str) -> dict[str, Any]:
    """kafka-python connection settings (servers, SASL, TLS with verification, timeout).

    Exactly :meth:`KafkaConnectionSettings.client_kwargs` plus the client id:
    every setting reaches the client as configured.
    """
    return {**kafka.client_kwargs(), "client_id": client_id}


@dataclass(frozen=True, slots=True)
class ProducerTuning:
    """Throughput knobs; the defaults were chosen with ``harness bench perf``."""

    #: Bars per Kafka record (see ``docs/streaming.md``: batching).
    bars_per_record: int = MAX_BARS_PER_RECORD
    #: Wait this long for more records before sending a request.
    linger_ms: int = 5
    #: Per-partition request batch, bytes.
    batch_size: int = 512 * 1024
    #: ``lz4`` (the default), ``zstd``, ``gzip`` or ``None``. Measured by
    #: ``backbone bench-contract`` (docs/status/contract.md): lz4 stores ~5x fewer
    #: bytes than none and produces faster, because fewer bytes go over the wire;
    #: zstd compresses ~9x at a lower rate. lz4 and zstandard are dependencies.
    compression_type: str | None = "lz4"
    #: How long ``flush``/``close`` wait for acknowledgements, seconds.
    flush_timeout_s: float = 60.0
    #: Bars sent and not yet acknowledged, at most (back-pressure beyond it).
    max_bars_in_flight: int = 50_000


class BarProducer:
    """Sends bars, batched per symbol, and dead letters with their reason.

    ``send_bars`` is asynchronous; ``flush`` waits for every acknowledgement and
    returns the last acknowledged offset per (topic, partition).
    """

    def __init__(
        self,
        kafka: KafkaConnectionSettings,
        *,
        tuning: ProducerTuning | None = None,
        client_id: str = "backbone-producer",
    ) -> None:
        self.kafka = kafka
        self.tuning = tuning or ProducerTuning()
        self._client_id = client_id
        self._producer = self._build(kafka)
        self._pending: list[_Sent] = []
        #: Bars in ``_pending`` (sent, acknowledgement not yet seen).
        self.bars_in_flight = 0
        #: Last acknowledged offset per (topic, partition) since the last ``flush``.
        self._acked: dict[tuple[str, int], int] = {}
        #: Times a send waited for acknowledgements because the bound was reached.
        self.backpressure_waits = 0
        self.records_sent = 0
        self.bars_sent = 0
        self.dead_letters_sent = 0

    def _build(self, kafka: KafkaConnectionSettings) -> KafkaProducer:
        return KafkaProducer(
            **kafka_client_config(kafka, client_id=self._client_id),
            acks="all",
            enable_idempotence=True,
            max_in_flight_requests_per_connection=5,
            linger_ms=self.tuning.linger_ms,
            batch_size=self.tuning.batch_size,
            compression_type=self.tuning.compression_type,
        )

    def _send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        bars: int = 0,
    ) -> None:
        future = self._producer.send(topic, value=value, key=key, headers=headers)
        self._pending.append(_Sent(future, topic, value, key, headers, bars))

    @property
    def api_version(self) -> tuple[int, ...]:
        """The protocol version kafka-python negotiated with the broker."""
        return tuple(self._producer.config["api_version"])

    @property
    def idempotent(self) -> bool:
        """Whether the client kept idempotence on after negotiating."""
        return bool(self._producer.config["enable_idempotence"])

    def send_record(self, record: BarRecord) -> None:
        """Send one encoded record to its topic (asynchronously)."""
        topic = self.kafka.topic(record.logical_topic)
        if self._pending and self.bars_in_flight + record.bars > self.tuning.max_bars_in_flight:
            self._wait_for_room()
        try:
            self._send(topic, record.value, record.key, list(record.headers), record.bars)
        except KafkaError as exc:  # no metadata within max_block_ms: the brokers are gone
            raise ProduceError(
                f"Kafka did not take a record for {topic} ({type(exc).__name__}: {exc}); "
                f"{self.bars_in_flight} bars sent before it are not acknowledged yet and "
                "nothing was dropped silently: check the brokers with `harness status`, "
                "then resend what was not acknowledged (the store keeps each bar once)"
            ) from None
        self.bars_in_flight += record.bars
        self.records_sent += 1
        self.bars_sent += record.bars

    def send_bars(self, bars: Iterable[Bar], *, backfill: str | None = None) -> int:
        """Send bars (key = symbol, topic by timeframe); returns how many were sent.

        Bars are not validated here: the consumer dead-letters bad ones with the
        reason, so bad input is reported the same way whoever produced it.
        """
        sent = 0
        for record in batch_records(bars, max_bars=self.tuning.bars_per_record, backfill=backfill):
            self.send_record(record)
            sent += record.bars
        return sent

    def send_dead_letters(self, dead: Sequence[DeadLetter]) -> int:
        """Send rejects to the dead-letter topic with ``reason`` and ``origin`` headers.

        The key is the origin (``topic/partition/offset``): a reject redelivered
        after a consumer crash carries the same key, so readers can de-duplicate.
        """
        topic = self.kafka.topic("dead_letter")
        for letter in dead:
            headers = [
                (HEADER_REASON, letter.reason.encode("utf-8", "replace")),
                ("origin", letter.origin.encode("utf-8", "replace")),
                ("content-type", b"application/octet-stream"),
            ]
            self._send(
                topic, bytes(letter.payload), letter.origin.encode("utf-8", "replace"), headers
            )
        self.dead_letters_sent += len(dead)
        return len(dead)

    def send_json(self, logical_topic: str, payload: Any, *, key: str | None = None) -> None:
        """Send one JSON document (e.g. a health report) to a logical topic."""
        value = json.dumps(payload, separators=(",", ":"), default=str).encode()
        self._send(
            self.kafka.topic(logical_topic),
            value,
            key.encode() if key is not None else None,
            [("content-type", b"application/json")],
        )

    def flush(self, timeout_s: float | None = None) -> dict[tuple[str, int], int]:
        """Wait for every send since the last flush; last offset per (topic, partition).

        Raises :class:`ProduceError` if any record was not acknowledged.
        """
        self._settle(self.tuning.flush_timeout_s if timeout_s is None else timeout_s)
        acked, self._acked = self._acked, {}
        return acked

    def _wait_for_room(self) -> None:
        """Back-pressure: the bound of bars in flight is reached; wait for their acks."""
        self.backpressure_waits += 1
        self._settle(self.tuning.flush_timeout_s)

    def _settle(self, timeout: float) -> None:
        """Wait for the pending sends; keep their offsets; raise on any not acknowledged."""
        deadline = time.monotonic() + timeout
        in_flight = self.bars_in_flight
        try:
            self._producer.flush(timeout=timeout)
        except KafkaError as exc:  # KafkaTimeoutError: the brokers did not answer in time
            _log.warning("flush: %s", exc)
        pending, self._pending = self._pending, []
        self.bars_in_flight = 0
        failed = self._collect(pending, deadline)
        failures = [f"{type(exc).__name__}: {exc}" for _, exc in failed]
        if failures:
            raise ProduceError(
                f"Kafka did not acknowledge {len(failures)} of {len(pending)} records "
                f"(up to {in_flight} bars; at most {self.tuning.max_bars_in_flight} are "
                f"kept in flight) within {timeout:.0f}s (first: {failures[0]}); "
                "nothing was dropped silently and nothing unacknowledged counts as "
                "ingested: check the brokers with `harness status`, then resend those bars "
                "(the store keeps each bar once)",
                auth_failed=any(
                    isinstance(exc, SaslAuthenticationFailedError) for _, exc in failed
                ),
            )

    def _collect(self, pending: list[_Sent], deadline: float) -> list[tuple[_Sent, KafkaError]]:
        """Keep the acknowledged offsets of ``pending``; return the sends that failed."""
        failed: list[tuple[_Sent, KafkaError]] = []
        for sent in pending:
            try:
                meta = sent.future.get(timeout=max(0.0, deadline - time.monotonic()))
            except KafkaError as exc:
                failed.append((sent, exc))
                continue
            key = (meta.topic, meta.partition)
            if meta.offset > self._acked.get(key, -1):
                self._acked[key] = meta.offset
        return failed

    def reconnect(self, kafka: KafkaConnectionSettings, *, timeout_s: float = 10.0) -> int:
        """Replace the Kafka client with one built from ``kafka`` (new credentials).

        Every send still in flight is settled first: acknowledged ones stay
        acknowledged (their offsets are kept for the next :meth:`flush`); the ones
        the old client could not deliver within ``timeout_s`` are sent again,
        same records and keys, on the new client. Returns how many were re-sent;
        the next :meth:`flush` waits for them like for any other send.
        """
        deadline = time.monotonic() + timeout_s
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:  # refused or timed out: settled per send below
            _log.info("flush before reconnecting: %s", type(exc).__name__)
        pending, self._pending = self._pending, []
        self.bars_in_flight = 0
        failed = self._collect(pending, deadline)
        # kafka-python's close() flushes first and raises while a batch is pending
        # (it never force-closes then): the old client closes in the background,
        # once its refused batches expire (delivery_timeout_ms). What failed is
        # re-sent below; should the old client still deliver some of it, the
        # store keeps each bar once.
        old = self._producer
        threading.Thread(
            target=_close_quietly, args=(old,), name="kafka-producer-retire", daemon=True
        ).start()
        self._producer = self._build(kafka)
        self.kafka = kafka
        for sent, _exc in failed:
            self._send(sent.topic, sent.value, sent.key, sent.headers, sent.bars)
            self.bars_in_flight += sent.bars
        if failed:
            _log.warning(
                "re-sent %d records the old Kafka client could not deliver (same keys; "
                "the store keeps each bar once)",
                len(failed),
            )
        return len(failed)

    def close(self, timeout_s: float | None = None) -> None:
        """Flush what is pending and close the connection."""
        timeout = self.tuning.flush_timeout_s if timeout_s is None else timeout_s
        try:
            self._producer.close(timeout=timeout)
        except KafkaError as exc:  # closing must not mask the caller's own error
            _log.warning("closing the Kafka producer: %s", exc)
