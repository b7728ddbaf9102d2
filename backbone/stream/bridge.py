"""The runtime event-bus bridge: stored bars become events for in-process subscribers.

Whichever tier is active, the runtime's subscribers (sensor and risk queues,
telemetry) subscribe to :class:`~backbone.bus.EventBus` topics ``bars.daily`` and
``bars.intraday`` and receive one :class:`BarsEvent` per stored batch. On Tier 1
the Kafka consumer calls the bridge after the store commit; on Tier 0 the
runtime calls it straight after the DuckDB write — same events, same interface.

Streaming can be switched off for local runs (``BackboneSettings.streaming_enabled``
or ``BACKBONE_STREAMING=0``): the bridge then publishes nothing and counts what
it skipped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from backbone.bars import DAILY_TIMEFRAMES, Bar
from backbone.bus import EventBus

__all__ = [
    "BUS_TOPIC_DAILY",
    "BUS_TOPIC_INTRADAY",
    "BarsEvent",
    "EventBusBridge",
    "bus_topic_for",
    "streaming_enabled_from_env",
]

BUS_TOPIC_DAILY = "bars.daily"
BUS_TOPIC_INTRADAY = "bars.intraday"


def bus_topic_for(timeframe: str) -> str:
    """The bus topic a timeframe's bars are published on."""
    return BUS_TOPIC_DAILY if timeframe in DAILY_TIMEFRAMES else BUS_TOPIC_INTRADAY


def streaming_enabled_from_env(default: bool = True) -> bool:
    """``BACKBONE_STREAMING`` as a flag: ``0``/``false``/``off``/``no`` disable."""
    raw = os.environ.get("BACKBONE_STREAMING")
    if raw is None or not raw.strip():
        return default
    return raw.strip().lower() not in {"0", "false", "off", "no"}


@dataclass(frozen=True, slots=True)
class BarsEvent:
    """Bars that were just stored, all on one bus topic, in the order they were stored.

    ``backfill`` names the replay run when the bars came from a backfill, so a
    subscriber can tell history from live data.
    """

    topic: str
    bars: tuple[Bar, ...]
    tier: str
    backfill: str | None = None


class EventBusBridge:
    """Publishes stored bars to an :class:`EventBus`, unless streaming is disabled."""

    def __init__(self, bus: EventBus, *, tier: str, enabled: bool | None = None) -> None:
        self.bus = bus
        self.tier = tier
        #: ``None`` reads ``BACKBONE_STREAMING`` (default on).
        self.enabled = streaming_enabled_from_env() if enabled is None else enabled
        self.events_published = 0
        self.bars_published = 0
        self.bars_skipped = 0

    def publish(self, bars: Sequence[Bar], *, backfill: str | None = None) -> int:
        """Publish ``bars`` as one event per bus topic; returns events published."""
        if not bars:
            return 0
        if not self.enabled:
            self.bars_skipped += len(bars)
            return 0
        by_topic: dict[str, list[Bar]] = {}
        for bar in bars:
            by_topic.setdefault(bus_topic_for(bar.timeframe), []).append(bar)
        for topic, group in by_topic.items():
            self.bus.publish(
                topic, BarsEvent(topic=topic, bars=tuple(group), tier=self.tier, backfill=backfill)
            )
            self.bars_published += len(group)
        self.events_published += len(by_topic)
        return len(by_topic)
