"""The custom Locust client: bar batches through ``BarProducer``, timed per send.

Each call sends one batch and waits for its acknowledgement (``acks=all``),
inside ``request_event.measure``: the response time is send-to-acknowledged,
a :class:`~backbone.stream.producer.ProduceError` counts as a failure.
kafka-python does its I/O on pure-Python sockets and threads, which gevent's
monkey-patching makes cooperative, so users do not serialise each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from backbone.bars import Bar
from backbone.connections import KafkaConnection
from backbone.settings import KafkaConnectionSettings
from backbone.stream.codec import batch_records
from backbone.stream.producer import BarProducer

__all__ = ["REQUEST_TYPE", "BarProducerClient"]

#: The ``request_type`` of every send in Locust's stats.
REQUEST_TYPE = "kafka"


class BarProducerClient:
    """Sends batches of bars and reports each one to Locust's ``request`` event."""

    def __init__(self, kafka: KafkaConnection, *, request_event: Any, client_id: str) -> None:
        self._request_event = request_event
        self._producer = BarProducer(
            KafkaConnectionSettings.from_section(kafka), client_id=client_id
        )
        #: Bars and value bytes acknowledged through this client.
        self.bars_acknowledged = 0
        self.bytes_acknowledged = 0

    def send_batch(self, name: str, bars: Iterator[Bar], count: int) -> None:
        """Send ``count`` bars from ``bars`` and wait until they are acknowledged."""
        batch = [next(bars) for _ in range(count)]
        records = list(batch_records(batch, max_bars=self._producer.tuning.bars_per_record))
        size = sum(len(r.value) for r in records)
        with self._request_event.measure(REQUEST_TYPE, name, response_length=size) as meta:
            for record in records:
                self._producer.send_record(record)
            self._producer.flush()
            # Only reached when every record was acknowledged.
            self.bars_acknowledged += len(batch)
            self.bytes_acknowledged += size
            meta["context"] = {"bars": len(batch), "records": len(records)}

    def close(self) -> None:
        self._producer.close(timeout_s=10)
