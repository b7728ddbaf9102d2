"""The drill writer: a bounded loop that writes bars and records what was acknowledged.

It runs in its own thread while the fault happens. ``write`` is the drill's
call through the backbone's public API; a bar counts as acknowledged only when
that call returned. Every attempt is timed, so the report can say how long
the system stopped acknowledging.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from backbone.bars import Bar
from backbone.settings import KafkaConnectionSettings
from backbone.store.base import BarStore
from backbone.stream.consumer import BarConsumer, ConsumeStats

__all__ = [
    "DRILL_SPAN",
    "AckLog",
    "Writer",
    "drain_group",
    "drill_bars",
    "longest_gap",
    "stored_keys",
]

BarKey = tuple[str, str, datetime]


#: Where every drill's bars fall: the past, since the contract refuses future bars.
DRILL_SPAN = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2010, 1, 1, tzinfo=UTC))


def stored_keys(store: BarStore, symbols: Iterable[str], timeframe: str = "1m") -> list[Hashable]:
    """The reader of every drill that checks the store: the key of each stored bar of
    ``symbols`` in :data:`DRILL_SPAN`, once per row found (a duplicate row shows twice)."""
    return [b.key for symbol in symbols for b in store.read(symbol, timeframe, *DRILL_SPAN)]


def drain_group(
    kafka: KafkaConnectionSettings,
    store: BarStore,
    group: str,
    topics: Sequence[str],
    *,
    client_id: str = "drill-drain",
    timeout_s: float = 90,
) -> ConsumeStats:
    """A new member of ``group`` stores everything the group has not committed yet
    (what a drill's consumers left behind), then leaves; returns what it moved."""
    consumer = BarConsumer(kafka, store, group_id=group, topics=topics, client_id=client_id)
    try:
        return consumer.catch_up(timeout_s=timeout_s)
    finally:
        consumer.close()


def drill_bars(symbols: Sequence[str], timeframe: str = "1m") -> Iterator[Bar]:
    """Endless valid bars, time-major over ``symbols``, each key unique, in :data:`DRILL_SPAN`."""
    ts = DRILL_SPAN[0]
    step = timedelta(minutes=1) if timeframe == "1m" else timedelta(days=1)
    n = 0
    while True:
        for symbol in symbols:
            price = 1.0 + (n % 1000) / 10_000
            yield Bar(symbol, timeframe, ts, price, price + 0.001, price - 0.001, price, 100.0)
        ts += step
        n += 1


@dataclass
class AckLog:
    """Acknowledged keys and the times of successful and failed writes (monotonic s)."""

    acknowledged: list[BarKey] = field(default_factory=list)
    attempted: int = 0
    ok_at: list[float] = field(default_factory=list)
    failed_at: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: Longest single write call (a commit that blocked shows here).
    slowest_s: float = 0.0


def longest_gap(ok_at: Sequence[float], since: float, until: float) -> float:
    """The longest time after ``since`` with no successful write, up to ``until``."""
    later = sorted(t for t in ok_at if t > since)
    if not later:
        return max(0.0, until - since)
    gap, prev = 0.0, since
    for t in later:
        gap = max(gap, t - prev)
        prev = t
    return gap


class Writer:
    """Writes batches from ``bars`` with ``write`` until stopped or ``max_s`` passed.

    A failed write is recorded and retried with the same bars after ``pause_s``
    (a real producer resends what was not acknowledged).
    """

    def __init__(
        self,
        write: Callable[[list[Bar]], None],
        bars: Iterator[Bar],
        *,
        batch: int = 50,
        max_s: float = 120.0,
        pause_s: float = 0.02,
    ) -> None:
        self._write = write
        self._bars = bars
        self._batch = batch
        self._max_s = max_s
        self._pause_s = pause_s
        self.log = AckLog()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-writer", daemon=True)

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 90.0) -> AckLog:
        """Stop after the current write (which may be blocked by the fault)."""
        self._stop.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(
                f"the drill writer is still blocked in a write after {timeout_s:.0f}s; "
                "the stack did not recover — check it with `harness status`"
            )
        return self.log

    def wait_acknowledged(self, n: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while len(self.log.acknowledged) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(self.log.acknowledged) >= n

    def _run(self) -> None:
        deadline = time.monotonic() + self._max_s
        pending: list[Bar] = []
        while not self._stop.is_set() and time.monotonic() < deadline:
            if not pending:
                pending = [next(self._bars) for _ in range(self._batch)]
            began = time.monotonic()
            self.log.attempted += 1
            try:
                self._write(pending)
            except Exception as exc:  # the fault shows as failed writes: record, retry
                self.log.failed_at.append(time.monotonic())
                if len(self.log.errors) < 20:
                    self.log.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                time.sleep(self._pause_s * 10)
                continue
            done = time.monotonic()
            self.log.slowest_s = max(self.log.slowest_s, done - began)
            self.log.ok_at.append(done)
            self.log.acknowledged.extend(b.key for b in pending)
            pending = []
            time.sleep(self._pause_s)
