"""Locust users: an abstract one that wires the client, a concrete one with tasks only."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, ClassVar

from locust import User, constant, task

from backbone.bars import FX_SYMBOLS, synthetic_bars
from backbone_harness.load.client import BarProducerClient

__all__ = ["BarProducerUser", "MarketDataFeedUser", "bound_to"]


class BarProducerUser(User):
    """Abstract: gives each user its own :class:`BarProducerClient` and bar feed.

    ``kafka`` (the outputs document's Kafka section) is set on a subclass by
    :func:`bound_to`; every user produces its own symbols, so keys never clash.
    """

    abstract = True
    kafka: ClassVar[Any] = None

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        if self.kafka is None:
            raise RuntimeError("bind the user class to a stack first: bound_to(cls, kafka)")
        tag = secrets.token_hex(2).upper()
        self.client = BarProducerClient(
            self.kafka,
            request_event=environment.events.request,
            client_id=f"locust-{tag}",
        )
        symbols = [f"{s}.{tag}" for s in sorted(FX_SYMBOLS)[:4]]
        self.intraday = synthetic_bars(symbols, "1m", 10**9)
        # Daily bars from 1990 (the contract's earliest): ~13,000 days before they
        # would reach the future, which the contract refuses.
        self.daily = synthetic_bars(symbols, "1d", 10**6, start=datetime(1990, 1, 1, tzinfo=UTC))

    def on_stop(self) -> None:
        self.client.close()


class MarketDataFeedUser(BarProducerUser):
    """A feed handler: mostly minute bars, now and then a day's close."""

    wait_time = constant(0)

    @task(10)
    def minute_bars(self) -> None:
        self.client.send_batch("intraday 500 bars", self.intraday, 500)

    @task(1)
    def daily_bars(self) -> None:
        self.client.send_batch("daily 20 bars", self.daily, 20)


def bound_to(user_cls: type[BarProducerUser], kafka: Any) -> type[BarProducerUser]:
    """A subclass of ``user_cls`` that produces to ``kafka``."""
    return type(user_cls.__name__, (user_cls,), {"kafka": kafka, "__module__": __name__})
