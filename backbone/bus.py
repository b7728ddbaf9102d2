"""The in-process event bus: thread-safe publish/subscribe by topic.

Tier 0 runs on it alone; in Tier 1 the Kafka bridge replays consumed records
into it, so the runtime's subscribers (sensor and risk queues, telemetry) see
the same events whichever tier is active.

Handlers run synchronously on the publishing thread, outside the bus lock, so
a handler may publish or (un)subscribe without deadlocking. A handler that
raises does not stop delivery to the others: the error is logged and counted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["EventBus", "Handler", "Unsubscribe"]

_log = logging.getLogger(__name__)

#: A subscriber: called with the event published on its topic.
Handler = Callable[[Any], None]
#: Returned by :meth:`EventBus.subscribe`; calling it (once or more) detaches the handler.
Unsubscribe = Callable[[], None]


class EventBus:
    """Publish/subscribe by exact topic name, safe to use from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[str, list[Handler]] = {}
        self._published = 0
        self._handler_errors = 0

    def subscribe(self, topic: str, handler: Handler) -> Unsubscribe:
        """Call ``handler(event)`` for every event later published on ``topic``."""
        if not topic:
            raise ValueError("subscribe needs a non-empty topic name")
        with self._lock:
            # Copy-on-write: publishers iterate a snapshot without holding the lock.
            self._handlers[topic] = [*self._handlers.get(topic, []), handler]

        def unsubscribe() -> None:
            with self._lock:
                current = self._handlers.get(topic, [])
                if handler in current:
                    remaining = list(current)
                    remaining.remove(handler)
                    if remaining:
                        self._handlers[topic] = remaining
                    else:
                        self._handlers.pop(topic, None)

        return unsubscribe

    def publish(self, topic: str, event: Any) -> int:
        """Deliver ``event`` to ``topic``'s handlers; returns how many ran without error."""
        with self._lock:
            handlers = self._handlers.get(topic, [])
            self._published += 1
        delivered = 0
        for handler in handlers:
            try:
                handler(event)
            except Exception:
                with self._lock:
                    self._handler_errors += 1
                _log.exception("event handler %r failed on topic %s", handler, topic)
            else:
                delivered += 1
        return delivered

    def subscriber_count(self, topic: str) -> int:
        """How many handlers ``topic`` has now."""
        with self._lock:
            return len(self._handlers.get(topic, []))

    @property
    def published(self) -> int:
        """Events published so far, on any topic."""
        with self._lock:
            return self._published

    @property
    def handler_errors(self) -> int:
        """Handler calls that raised so far."""
        with self._lock:
            return self._handler_errors
