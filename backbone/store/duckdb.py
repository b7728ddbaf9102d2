"""Tier 0 store: bars in an embedded DuckDB file, no services needed.

Bulk writes append an Arrow table (DuckDB's fast path; ``executemany`` is
orders of magnitude slower) with ``INSERT OR IGNORE`` against the primary key,
so a write is idempotent and returns only the rows it added. One DuckDB file
admits one writing process at a time; inside a process the store is
thread-safe (calls are serialised, snapshots read on their own cursor).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from backbone.bars import Bar
from backbone.contract import CorrectionPolicy
from backbone.deadletter import DeadLetter, StoredDeadLetter
from backbone.store.base import (
    BUCKET_ORIGIN,
    StoreError,
    bucket_label,
    check_range,
    dead_letter_query,
    stored_dead_letters,
)
from backbone.store.revisions import (
    AUDIT_COLUMNS,
    WriteOutcome,
    audit_row,
    default_actor,
    differing_fields,
    rounds,
)
from backbone.store.schema import BARS_COLUMNS

__all__ = ["DuckDBStore"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS bars (
        symbol      VARCHAR     NOT NULL,
        timeframe   VARCHAR     NOT NULL,
        ts          TIMESTAMPTZ NOT NULL,
        open        DOUBLE      NOT NULL,
        high        DOUBLE      NOT NULL,
        low         DOUBLE      NOT NULL,
        close       DOUBLE      NOT NULL,
        volume      DOUBLE      NOT NULL,
        source      VARCHAR     NOT NULL DEFAULT 'live',
        ingested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        revision    INTEGER     NOT NULL DEFAULT 1,
        PRIMARY KEY (symbol, timeframe, ts)
    )""",
    # Files written before corrections existed lack the column.
    "ALTER TABLE bars ADD COLUMN IF NOT EXISTS revision INTEGER DEFAULT 1",
    "CREATE SEQUENCE IF NOT EXISTS bar_revision_id",
    """CREATE TABLE IF NOT EXISTS bar_revision (
        id          BIGINT      PRIMARY KEY DEFAULT nextval('bar_revision_id'),
        symbol      VARCHAR     NOT NULL,
        timeframe   VARCHAR     NOT NULL,
        ts          TIMESTAMPTZ NOT NULL,
        revision    INTEGER     NOT NULL,
        changed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
        changed_by  VARCHAR     NOT NULL,
        source      VARCHAR     NOT NULL,
        old_open DOUBLE, old_high DOUBLE, old_low DOUBLE, old_close DOUBLE, old_volume DOUBLE,
        new_open DOUBLE, new_high DOUBLE, new_low DOUBLE, new_close DOUBLE, new_volume DOUBLE
    )""",
    "CREATE SEQUENCE IF NOT EXISTS dead_letter_id",
    """CREATE TABLE IF NOT EXISTS dead_letter (
        id          BIGINT      PRIMARY KEY DEFAULT nextval('dead_letter_id'),
        received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        origin      VARCHAR     NOT NULL,
        reason      VARCHAR     NOT NULL,
        payload     BLOB        NOT NULL
    )""",
    "ALTER TABLE dead_letter ADD COLUMN IF NOT EXISTS replayed_at TIMESTAMPTZ",
)

_ARROW_BARS = pa.schema(
    [
        ("symbol", pa.string()),
        ("timeframe", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
        ("source", pa.string()),
    ]
)
_ARROW_DEAD = pa.schema(
    [("origin", pa.string()), ("reason", pa.string()), ("payload", pa.binary())]
)
_COLS = ", ".join(BARS_COLUMNS)
#: Read ``ts`` as microseconds since the epoch: building the datetime in Python
#: is twice as fast as DuckDB's TIMESTAMPTZ conversion (measured).
_READ_COLS = ", ".join("epoch_us(ts)" if c == "ts" else c for c in BARS_COLUMNS)
_VALUES_B = "b.open, b.high, b.low, b.close, b.volume"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SNAPSHOT_BATCH = 10_000


def _ts(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _micros(ts: datetime) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _bar(row: tuple[Any, ...]) -> Bar:
    s, tf, us, o, h, lo, c, v, src = row
    return Bar(s, tf, _EPOCH + timedelta(microseconds=us), o, h, lo, c, v, src)


def _arrow_bars(bars: Sequence[Bar]) -> pa.Table:
    return pa.table(
        [
            [b.symbol for b in bars],
            [b.timeframe for b in bars],
            [b.ts for b in bars],
            [b.open for b in bars],
            [b.high for b in bars],
            [b.low for b in bars],
            [b.close for b in bars],
            [b.volume for b in bars],
            [b.source for b in bars],
        ],
        schema=_ARROW_BARS,
    )


class DuckDBStore:
    """:class:`~backbone.store.base.BarStore` on an embedded DuckDB file.

    ``path`` is a file (created with its parent directory if missing) or
    ``":memory:"`` for a throwaway store.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(self.path)
        except duckdb.IOException as exc:
            raise StoreError(
                f"cannot open the DuckDB store {self.path} ({exc}); another process may "
                "hold it open for writing — stop it, or give this run its own path"
            ) from None
        self._lock = threading.RLock()
        self._closed = False
        with self._lock:
            self._con.execute("SET TimeZone = 'UTC'")
            # A library must not draw DuckDB's progress bar on its caller's stdout.
            self._con.execute("SET enable_progress_bar = false")
            for stmt in _SCHEMA:
                self._con.execute(stmt)

    def __repr__(self) -> str:
        return f"DuckDBStore({self.path!r})"

    def __enter__(self) -> DuckDBStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sql(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            if self._closed:
                raise StoreError(f"{self!r} is closed; open a new store")
            return self._con.execute(sql, params).fetchall()

    # -- writes ----------------------------------------------------------------

    def write(self, bars: Sequence[Bar]) -> int:
        """Append ``bars`` as one Arrow table; existing keys are left untouched."""
        if not bars:
            return 0
        batch = _arrow_bars(bars)
        with self._lock:
            if self._closed:
                raise StoreError(f"{self!r} is closed; open a new store")
            # One statement is one (auto-committed) transaction in DuckDB.
            self._con.register("_incoming_bars", batch)
            try:
                row = self._con.execute(
                    f"INSERT OR IGNORE INTO bars ({_COLS}) SELECT {_COLS} FROM _incoming_bars"
                ).fetchone()
            finally:
                self._con.unregister("_incoming_bars")
        return int(row[0]) if row else 0

    def apply(
        self,
        bars: Sequence[Bar],
        *,
        corrections: CorrectionPolicy = "revise",
        changed_by: str | None = None,
    ) -> WriteOutcome:
        """Write ``bars`` in one transaction, telling new rows, duplicates and
        corrections apart (:mod:`backbone.store.revisions`)."""
        outcome = WriteOutcome()
        if not bars:
            return outcome
        actor = changed_by or default_actor()
        with self._lock:
            if self._closed:
                raise StoreError(f"{self!r} is closed; open a new store")
            self._con.execute("BEGIN TRANSACTION")
            try:
                for group in rounds(bars):
                    outcome.add(self._apply_round(group, corrections, actor))
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
        return outcome

    def _apply_round(
        self, bars: Sequence[Bar], corrections: CorrectionPolicy, actor: str
    ) -> WriteOutcome:
        # Insert first: when every key is new (the common case) that is all, and
        # no join with the whole table is needed. Otherwise every key is now
        # stored; a row we just inserted holds exactly the incoming values, so the
        # rows that differ are the stored ones a re-send corrects, and the rest of
        # the keys that were there before are duplicates.
        out = WriteOutcome()
        self._con.register("_incoming_bars", _arrow_bars(bars))
        try:
            row = self._con.execute(
                f"INSERT OR IGNORE INTO bars ({_COLS}) SELECT {_COLS} FROM _incoming_bars"
            ).fetchone()
            out.stored = int(row[0]) if row else 0
            if out.stored == len(bars):
                return out
            lo, hi = min(b.ts for b in bars), max(b.ts for b in bars)
            stored = {
                (r[0], r[1], r[2]): r
                for r in self._con.execute(
                    f"SELECT b.symbol, b.timeframe, epoch_us(b.ts), {_VALUES_B}, b.source, "
                    "b.revision FROM _incoming_bars i JOIN bars b ON b.symbol = i.symbol "
                    "AND b.timeframe = i.timeframe AND b.ts = i.ts "
                    "WHERE b.ts >= ? AND b.ts <= ?",  # lets DuckDB skip row groups
                    [lo, hi],
                ).fetchall()
            }
        finally:
            self._con.unregister("_incoming_bars")
        changed: list[tuple[Bar, Bar, int]] = []
        for bar in bars:
            found = stored.get((bar.symbol, bar.timeframe, _micros(bar.ts)))
            if found is None:
                continue
            old = _bar(found[:9])
            if not differing_fields(bar, old):
                continue
            if corrections == "revise":
                changed.append((bar, old, int(found[9] or 1) + 1))
            else:
                out.conflicts.append((bar, old))
        out.duplicates = len(bars) - out.stored - len(changed) - len(out.conflicts)
        for bar, old, revision in changed:
            self._con.execute(
                "UPDATE bars SET open = ?, high = ?, low = ?, close = ?, volume = ?, source = ?, "
                "revision = ?, ingested_at = now() WHERE symbol = ? AND timeframe = ? AND ts = ?",
                [bar.open, bar.high, bar.low, bar.close, bar.volume, bar.source, revision,
                 bar.symbol, bar.timeframe, bar.ts],
            )  # fmt: skip
            self._con.execute(
                f"INSERT INTO bar_revision ({', '.join(AUDIT_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(AUDIT_COLUMNS))})",
                list(audit_row(bar, old, revision, actor)),
            )
            out.corrections += 1
        return out

    def revisions(self, symbol: str, timeframe: str) -> list[dict[str, Any]]:
        """The audit trail of one series' corrections, oldest first."""
        with self._lock:
            if self._closed:
                raise StoreError(f"{self!r} is closed; open a new store")
            cur = self._con.execute(
                f"SELECT changed_at, {', '.join(AUDIT_COLUMNS)} FROM bar_revision "
                "WHERE symbol = ? AND timeframe = ? ORDER BY id",
                [symbol, timeframe],
            )
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def write_dead_letters(self, items: Sequence[DeadLetter]) -> None:
        if not items:
            return
        batch = pa.table(
            [
                [d.origin for d in items],
                [d.reason for d in items],
                [bytes(d.payload) for d in items],
            ],
            schema=_ARROW_DEAD,
        )
        with self._lock:
            if self._closed:
                raise StoreError(f"{self!r} is closed; open a new store")
            self._con.register("_incoming_dead", batch)
            try:
                self._con.execute(
                    "INSERT INTO dead_letter (origin, reason, payload) "
                    "SELECT origin, reason, payload FROM _incoming_dead"
                )
            finally:
                self._con.unregister("_incoming_dead")

    # -- reads -----------------------------------------------------------------

    def read(self, symbol: str, timeframe: str, start: datetime, end: datetime) -> list[Bar]:
        check_range(start, end)
        rows = self._sql(
            f"SELECT {_READ_COLS} FROM bars WHERE symbol = ? AND timeframe = ? "
            "AND ts >= ? AND ts < ? ORDER BY ts",
            [symbol, timeframe, start, end],
        )
        return [_bar(r) for r in rows]

    def latest(self, symbol: str, timeframe: str) -> Bar | None:
        rows = self._sql(
            f"SELECT {_READ_COLS} FROM bars WHERE symbol = ? AND timeframe = ? "
            "ORDER BY ts DESC LIMIT 1",
            [symbol, timeframe],
        )
        return _bar(rows[0]) if rows else None

    def count(self, symbol: str | None = None, timeframe: str | None = None) -> int:
        rows = self._sql(
            "SELECT count(*) FROM bars WHERE (? IS NULL OR symbol = ?) "
            "AND (? IS NULL OR timeframe = ?)",
            [symbol, symbol, timeframe, timeframe],
        )
        return int(rows[0][0])

    def dead_letter_count(self) -> int:
        return int(self._sql("SELECT count(*) FROM dead_letter")[0][0])

    def dead_letters(self) -> list[DeadLetter]:
        """Every stored dead letter, oldest first (for inspection and tests)."""
        rows = self._sql("SELECT origin, reason, payload FROM dead_letter ORDER BY id")
        return [DeadLetter(o, r, bytes(p)) for o, r, p in rows]

    def dead_letter_records(
        self, ids: Sequence[int] | None = None, *, limit: int | None = None
    ) -> list[StoredDeadLetter]:
        """Stored dead letters (all, or those with ``ids``), oldest first."""
        sql = dead_letter_query(
            "list_contains(?::BIGINT[], id)" if ids is not None else None, limit
        )
        return stored_dead_letters(self._sql(sql, [list(ids)] if ids is not None else []))

    def mark_dead_letters_replayed(self, ids: Sequence[int]) -> None:
        """Record that these dead letters were re-submitted (they stay, for the audit)."""
        if ids:
            self._sql(
                "UPDATE dead_letter SET replayed_at = now() WHERE list_contains(?::BIGINT[], id)",
                [list(ids)],
            )

    def bucketed(
        self,
        symbol: str,
        timeframe: str,
        bucket: timedelta,
        start: datetime,
        end: datetime,
    ) -> list[Bar]:
        check_range(start, end)
        label = bucket_label(bucket)
        rows = self._sql(
            f"SELECT epoch_us(time_bucket(?::INTERVAL, ts, TIMESTAMPTZ '{BUCKET_ORIGIN}')) AS b, "
            "arg_min(open, ts), max(high), min(low), arg_max(close, ts), sum(volume) "
            "FROM bars WHERE symbol = ? AND timeframe = ? AND ts >= ? AND ts < ? "
            "GROUP BY b ORDER BY b",
            [bucket, symbol, timeframe, start, end],
        )
        return [
            Bar(symbol, label, _ts(b), o, h, lo, c, v, "aggregate") for b, o, h, lo, c, v in rows
        ]

    def snapshot(
        self, start: datetime, end: datetime, symbols: Sequence[str] | None = None
    ) -> Iterator[Bar]:
        check_range(start, end)
        with self._lock:
            if self._closed:
                raise StoreError(f"{self!r} is closed; open a new store")
            cur = self._con.cursor()  # its own connection: writes go on meanwhile
        try:
            cur.execute("SET TimeZone = 'UTC'")
            cur.execute(
                f"SELECT {_READ_COLS} FROM bars WHERE ts >= ? AND ts < ? "
                "AND (?::VARCHAR[] IS NULL OR list_contains(?::VARCHAR[], symbol)) "
                "ORDER BY ts, symbol, timeframe",
                [start, end, symbols and list(symbols), symbols and list(symbols)],
            )
            while rows := cur.fetchmany(_SNAPSHOT_BATCH):
                yield from (_bar(r) for r in rows)
        finally:
            cur.close()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._con.close()
