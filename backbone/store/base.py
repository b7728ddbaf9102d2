"""The bar store contract both tiers implement, and what they share.

Tier 0 keeps bars in an embedded DuckDB file (:mod:`backbone.store.duckdb`),
Tier 1 in PostgreSQL/TimescaleDB (:mod:`backbone.store.timescale`). Callers
hold a :class:`BarStore` and never learn which one they have.

Semantics every implementation keeps:

* One row per key ``(symbol, timeframe, ts)``. :meth:`BarStore.write` is an
  idempotent insert: a bar whose key is already stored is ignored (the first
  write wins), so duplicates, retries and replays are harmless.
* :meth:`BarStore.write` is one transaction, committed when it returns; the
  return value counts rows that were not stored before.
* Time ranges are half-open, ``start <= ts < end``, with timezone-aware bounds.
* Bars handed to :meth:`BarStore.write` are valid (:func:`backbone.bars.bar_problem`
  returned ``None``); invalid records go to :meth:`BarStore.write_dead_letters`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from backbone.bars import Bar
from backbone.deadletter import DeadLetter, StoredDeadLetter

__all__ = [
    "BUCKET_ORIGIN",
    "BarStore",
    "StoreError",
    "StoreUnavailableError",
    "bucket_label",
    "check_range",
    "dead_letter_query",
    "stored_dead_letters",
]

#: Every backend aligns buckets to this instant (TimescaleDB's own default, a
#: Monday 00:00 UTC), so bucketed reads agree across Timescale, PostgreSQL and DuckDB.
BUCKET_ORIGIN = "2000-01-03 00:00:00+00"


def dead_letter_query(id_filter: str | None, limit: int | None) -> str:
    """The dead-letter listing both stores run, oldest first.

    ``id_filter`` is the backend's own "id is one of the bound list" clause (DuckDB
    ``list_contains(?::BIGINT[], id)``, PostgreSQL ``id = ANY(%s)``), or ``None`` for
    every record; the column order is what :func:`stored_dead_letters` reads.
    """
    return (
        "SELECT id, received_at, origin, reason, payload, replayed_at FROM dead_letter"
        + (f" WHERE {id_filter}" if id_filter is not None else "")
        + " ORDER BY id"
        + (f" LIMIT {int(limit)}" if limit is not None else "")
    )


def stored_dead_letters(rows: Sequence[tuple[Any, ...]]) -> list[StoredDeadLetter]:
    """Rows of :func:`dead_letter_query` as :class:`StoredDeadLetter` values."""
    return [StoredDeadLetter(int(i), at, o, r, bytes(p), done) for i, at, o, r, p, done in rows]


class StoreError(RuntimeError):
    """The store could not do what was asked; the message says what to check."""


class StoreUnavailableError(StoreError):
    """The store did not answer (no connection, no primary); nothing of the call was
    stored. Worth retrying later, unlike a refused statement."""


@runtime_checkable
class BarStore(Protocol):
    """Where bars are kept; the same API on both tiers."""

    def write(self, bars: Sequence[Bar]) -> int:
        """Insert ``bars`` in one transaction, ignoring keys already stored.

        Returns how many rows were newly inserted. Duplicates inside ``bars``
        count once. When it returns, the transaction is committed.
        """
        ...

    def write_dead_letters(self, items: Sequence[DeadLetter]) -> None:
        """Keep refused records with their reasons (one transaction)."""
        ...

    def read(self, symbol: str, timeframe: str, start: datetime, end: datetime) -> list[Bar]:
        """Stored bars of one series with ``start <= ts < end``, ordered by ``ts``."""
        ...

    def latest(self, symbol: str, timeframe: str) -> Bar | None:
        """The most recent stored bar of a series, or ``None``."""
        ...

    def count(self, symbol: str | None = None, timeframe: str | None = None) -> int:
        """How many bars are stored, optionally for one symbol and/or timeframe."""
        ...

    def dead_letter_count(self) -> int:
        """How many dead letters are stored."""
        ...

    def bucketed(
        self,
        symbol: str,
        timeframe: str,
        bucket: timedelta,
        start: datetime,
        end: datetime,
    ) -> list[Bar]:
        """OHLCV re-aggregated into ``bucket``-wide bars (first open, max high,
        min low, last close, summed volume), ordered by bucket start.

        Buckets are aligned to :data:`BUCKET_ORIGIN`; the range filter applies to
        the source bars. Result bars carry ``timeframe=bucket_label(bucket)`` and
        ``source="aggregate"``.
        """
        ...

    def snapshot(
        self, start: datetime, end: datetime, symbols: Sequence[str] | None = None
    ) -> Iterator[Bar]:
        """Every stored bar with ``start <= ts < end`` (optionally only ``symbols``),
        ordered by ``(ts, symbol, timeframe)`` — so each symbol's bars come in time
        order — streamed rather than loaded at once (for replay and backfill)."""
        ...

    def close(self) -> None:
        """Release connections and files; the store is unusable afterwards."""
        ...


def bucket_label(bucket: timedelta) -> str:
    """A timeframe-style name for a bucket width: ``1h``, ``30m``, ``2d``, ``90s``."""
    seconds = int(bucket.total_seconds())
    if seconds <= 0 or bucket.microseconds:
        raise ValueError(f"bucket must be a positive whole number of seconds, got {bucket}")
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def check_range(start: datetime, end: datetime) -> None:
    """Refuse naive or inverted bounds with a message that says how to fix them."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("time bounds must be timezone-aware (e.g. datetime(..., tzinfo=UTC))")
    if end < start:
        raise ValueError(f"empty range: end {end.isoformat()} is before start {start.isoformat()}")
