"""The bar producer: bars to ``market-data.*-bars``, rejects to ``market-data.dead-letter``.

kafka-python 3.x already defaults to ``acks=all`` with idempotence (KIP-679);
both are set explicitly here so a future default change cannot weaken delivery,
and kafka-python then *raises* on a conflicting setting instead of silently
turning idempotence off. With idempotence the broker de-duplicates the
producer's retries, and up to 5 in-flight requests keep per-partition order.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from backbone.bars import Bar
from backbone.connections import KafkaConnection
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
    "KafkaConfig",
    "ProduceError",
    "ProducerTuning",
    "as_kafka_settings",
    "kafka_client_config",
]

_log = logging.getLogger(__name__)


class ProduceError(RuntimeError):
    """Records the broker did not acknowledge; the message says how many and why."""


#: Kafka sections the streaming classes accept: the outputs document's, or the
#: runtime settings built from it (with ``BACKBONE_KAFKA__*`` overrides).
KafkaConfig = KafkaConnection | KafkaConnectionSettings


def as_kafka_settings(kafka: KafkaConfig) -> KafkaConnectionSettings:
    """The runtime settings for a Kafka section of the outputs document (or as given)."""
    if isinstance(kafka, KafkaConnectionSettings):
        return kafka
    return KafkaConnectionSettings(
        bootstrap_servers=list(kafka.bootstrap_servers),
        security_protocol=kafka.security_protocol,
        sasl_mechanism=kafka.sasl_mechanism,
        username=kafka.username,
        password=kafka.password,
        ssl_cafile=kafka.ssl_cafile,
        topics={logical: info.name for logical, info in kafka.topics.items()},
    )


def kafka_client_config(kafka: KafkaConfig, *, client_id: str) -> dict[str, Any]:
    """kafka-python connection settings (servers, SASL, TLS with verification).

    The request timeout is raised to kafka-python's 30 s default: the settings'
    short timeout suits validation probes, not group joins under load.
    """
    config = as_kafka_settings(kafka).client_kwargs()
    config.update(client_id=client_id, request_timeout_ms=30_000)
    return config


@dataclass(frozen=True, slots=True)
class ProducerTuning:
    """Throughput knobs; the defaults were chosen with ``backbone bench``."""

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


class BarProducer:
    """Sends bars, batched per symbol, and dead letters with their reason.

    ``send_bars`` is asynchronous; ``flush`` waits for every acknowledgement and
    returns the last acknowledged offset per (topic, partition).
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        *,
        tuning: ProducerTuning | None = None,
        client_id: str = "backbone-producer",
    ) -> None:
        self.kafka = as_kafka_settings(kafka)
        self.tuning = tuning or ProducerTuning()
        self._producer = KafkaProducer(
            **kafka_client_config(kafka, client_id=client_id),
            acks="all",
            enable_idempotence=True,
            max_in_flight_requests_per_connection=5,
            linger_ms=self.tuning.linger_ms,
            batch_size=self.tuning.batch_size,
            compression_type=self.tuning.compression_type,
        )
        self._pending: list[Any] = []
        self.records_sent = 0
        self.bars_sent = 0
        self.dead_letters_sent = 0

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
        self._pending.append(
            self._producer.send(topic, value=record.value, key=record.key, headers=record.headers)
        )
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
            self._pending.append(
                self._producer.send(
                    topic,
                    value=bytes(letter.payload),
                    key=letter.origin.encode("utf-8", "replace"),
                    headers=headers,
                )
            )
        self.dead_letters_sent += len(dead)
        return len(dead)

    def send_json(self, logical_topic: str, payload: Any, *, key: str | None = None) -> None:
        """Send one JSON document (e.g. a health report) to a logical topic."""
        value = json.dumps(payload, separators=(",", ":"), default=str).encode()
        self._pending.append(
            self._producer.send(
                self.kafka.topic(logical_topic),
                value=value,
                key=key.encode() if key is not None else None,
                headers=[("content-type", b"application/json")],
            )
        )

    def flush(self, timeout_s: float | None = None) -> dict[tuple[str, int], int]:
        """Wait for every send since the last flush; last offset per (topic, partition).

        Raises :class:`ProduceError` if any record was not acknowledged.
        """
        timeout = self.tuning.flush_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        self._producer.flush(timeout=timeout)
        pending, self._pending = self._pending, []
        last: dict[tuple[str, int], int] = {}
        failures: list[str] = []
        for future in pending:
            try:
                meta = future.get(timeout=max(0.0, deadline - time.monotonic()))
            except KafkaError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            key = (meta.topic, meta.partition)
            if meta.offset > last.get(key, -1):
                last[key] = meta.offset
        if failures:
            raise ProduceError(
                f"{len(failures)} of {len(pending)} records were not acknowledged "
                f"(first: {failures[0]}); check the brokers with `harness status` and resend"
            )
        return last

    def close(self, timeout_s: float | None = None) -> None:
        """Flush what is pending and close the connection."""
        timeout = self.tuning.flush_timeout_s if timeout_s is None else timeout_s
        try:
            self._producer.close(timeout=timeout)
        except KafkaError as exc:  # closing must not mask the caller's own error
            _log.warning("closing the Kafka producer: %s", exc)
