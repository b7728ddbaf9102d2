"""The read profile: trading users reading latest bars and short histories through ``Backbone``.

A trading runtime mostly reads. :class:`BarReaderClient` reads through one
:class:`~backbone.runtime.Backbone` per Locust process (``latest`` and
``read``: the cache, then the store on a miss), each call timed with
Locust's ``request`` event under the request type ``read``.

The hit ratio is a knob, not an accident: with probability ``hit_ratio`` a
user asks for one of a few *hot* requests (the latest bar, or the last hour,
of ``READ_SYMBOLS`` seeded series), which the cache holds after their first
read; otherwise a *cold* one (an hour starting at a random minute of the
seeded span), which the cache has almost surely never seen and the store
answers. :func:`seed_read_data` stores the series before the run (an
idempotent upsert: seeding twice stores nothing twice).
"""

from __future__ import annotations

import random
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from locust import User, constant, task

from backbone.bars import Bar
from backbone.runtime import Backbone
from backbone.store.timescale import TimescaleStore

__all__ = [
    "READ_REQUEST_TYPE",
    "READ_SYMBOLS",
    "BarReaderClient",
    "MarketDataReaderUser",
    "bound_reader",
    "seed_read_data",
]

#: The ``request_type`` of every read in Locust's stats (the producer's is ``kafka``).
READ_REQUEST_TYPE = "read"
#: Seeded series the readers ask for, and minute bars per series.
READ_SYMBOLS = tuple(f"LDR{i}" for i in range(8))
SEEDED_MINUTES = 2_000
SEED_START = datetime(2005, 1, 3, tzinfo=UTC)  # a Monday, in the past (the contract)
#: A short history: the last hour.
HISTORY = timedelta(hours=1)


def seed_read_data(store: TimescaleStore) -> int:
    """Store the series the readers read; rows newly inserted (0 when already seeded)."""
    bars: list[Bar] = []
    for symbol in READ_SYMBOLS:
        for minute in range(SEEDED_MINUTES):
            price = 1.0 + minute / 100_000
            ts = SEED_START + timedelta(minutes=minute)
            bars.append(Bar(symbol, "1m", ts, price, price + 0.001, price - 0.001, price, 10.0))
    return store.write(bars)


class BarReaderClient:
    """Reads through a shared ``Backbone`` and reports each read to Locust."""

    _backbones: ClassVar[dict[str, Backbone]] = {}

    def __init__(self, outputs: str, *, request_event: Any) -> None:
        self._request_event = request_event
        if outputs not in self._backbones:
            # One runtime per process, shared by its users: one cache client and
            # one store pool, as one trading process would hold.
            self._backbones[outputs] = Backbone.open(
                tier="institutional",
                outputs=outputs,
                group_id=f"backbone-load-readers-{secrets.token_hex(3)}",
                consumer_start="latest",
            )
        self.backbone = self._backbones[outputs]

    def latest(self, name: str, symbol: str) -> None:
        with self._request_event.measure(READ_REQUEST_TYPE, name) as meta:
            bar = self.backbone.latest(symbol, "1m")
            if bar is None:
                raise LookupError(f"no latest bar of {symbol}: was the read data seeded?")
            meta["response_length"] = 1

    def history(self, name: str, symbol: str, start: datetime) -> None:
        with self._request_event.measure(READ_REQUEST_TYPE, name) as meta:
            bars = self.backbone.read(symbol, "1m", start, start + HISTORY)
            if not bars:
                raise LookupError(f"no bars of {symbol} from {start}: was the read data seeded?")
            meta["response_length"] = len(bars)

    def cache_counts(self) -> tuple[int, int]:
        """(hits, reads) of this process's cache so far."""
        stats = self.backbone.cache.stats()
        return stats.hits, stats.reads

    @classmethod
    def close_all(cls) -> None:
        for backbone in cls._backbones.values():
            backbone.close()
        cls._backbones.clear()


class MarketDataReaderUser(User):
    """A trading user: asks for the latest bar and the last hour, hot or cold."""

    abstract = True
    wait_time = constant(0)
    #: Readers outnumber feed handlers three to one when both profiles run.
    weight = 3
    outputs: ClassVar[str | None] = None
    hit_ratio: ClassVar[float] = 0.9

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        if self.outputs is None:
            raise RuntimeError("bind the reader first: bound_reader(outputs, hit_ratio)")
        self.client = BarReaderClient(self.outputs, request_event=environment.events.request)
        self.rng = random.Random()
        self.hot_hour_start = SEED_START + timedelta(minutes=SEEDED_MINUTES) - HISTORY

    def _hot(self) -> bool:
        return self.rng.random() < self.hit_ratio

    @task(1)
    def latest_bar(self) -> None:
        symbol = self.rng.choice(READ_SYMBOLS)
        if self._hot():
            self.client.latest("latest bar (hot)", symbol)
        else:
            # A cold latest: the same series read as a random one-hour window.
            self._cold_history(symbol)

    @task(1)
    def last_hour(self) -> None:
        symbol = self.rng.choice(READ_SYMBOLS)
        if self._hot():
            self.client.history("last hour (hot)", symbol, self.hot_hour_start)
        else:
            self._cold_history(symbol)

    def _cold_history(self, symbol: str) -> None:
        minute = self.rng.randrange(0, SEEDED_MINUTES - 60)
        start = SEED_START + timedelta(minutes=minute)
        self.client.history("an hour at random (cold)", symbol, start)


def bound_reader(outputs: str, hit_ratio: float) -> type[MarketDataReaderUser]:
    """A concrete reader reading the stack of ``outputs`` at ``hit_ratio`` hot requests."""
    if not 0.0 <= hit_ratio <= 1.0:
        raise ValueError(f"hit ratio {hit_ratio} is not between 0 and 1")
    return type(
        "MarketDataReaderUser",
        (MarketDataReaderUser,),
        {"outputs": outputs, "hit_ratio": hit_ratio, "abstract": False, "__module__": __name__},
    )
