"""Tier 1 store: bars in PostgreSQL/TimescaleDB through psycopg 3 and a pool.

The connection comes from the outputs document: every node in one multi-host
conninfo with ``target_session_attrs=read-write``, so a new connection always
lands on the primary; the password travels separately and never appears in an
error message.

Writes COPY the batch into a per-connection temporary table and move it with
``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` in the same transaction: one
round trip for the data, idempotent on the ``(symbol, timeframe, ts)`` key
(measured against ``executemany`` and array ``unnest`` in
:func:`backbone.store.bench.bench_pg_write_methods`; COPY is the fastest).

A failover breaks the pool's connections mid-transaction. Every store call is
one transaction, retried once after a connection error: the pool is checked
(dead connections dropped), and the retry waits for a connection to the new
primary. Retrying is safe because every write is idempotent.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_fixed

from backbone.bars import Bar
from backbone.contract import CorrectionPolicy
from backbone.credentials import DocumentCredentials, timescale_kwargs
from backbone.deadletter import DeadLetter, StoredDeadLetter
from backbone.settings import TimescaleConnectionSettings
from backbone.store.base import (
    BUCKET_ORIGIN,
    StoreError,
    StoreUnavailableError,
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
from backbone.store.schema import BARS_COLUMNS, schema_statements

__all__ = ["TimescaleStore", "WriteMethod", "store_pool"]

T = TypeVar("T")
WriteMethod = Literal["copy", "executemany", "unnest"]

_COLS = ", ".join(BARS_COLUMNS)
_STAGE_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS bars_stage (symbol text, timeframe text, ts timestamptz, "
    "open float8, high float8, low float8, close float8, volume float8, source text) "
    "ON COMMIT DELETE ROWS"
)
_COPY_STAGE = f"COPY bars_stage ({_COLS}) FROM STDIN (FORMAT BINARY)"
_COPY_TYPES = [
    "text",
    "text",
    "timestamptz",
    "float8",
    "float8",
    "float8",
    "float8",
    "float8",
    "text",
]
_EXISTING = (
    "SELECT b.symbol, b.timeframe, b.ts, b.open, b.high, b.low, b.close, b.volume, b.source, "
    "b.revision FROM bars_stage s JOIN bars b USING (symbol, timeframe, ts) {where} "
    "FOR UPDATE OF b"
)
#: Rows this transaction did not insert itself (xmin is the inserting transaction).
_NOT_OURS = "WHERE NOT (b.xmin = (pg_current_xact_id()::text::bigint % 4294967296)::text::xid)"
_CORRECT = (
    "UPDATE bars SET open = %s, high = %s, low = %s, close = %s, volume = %s, source = %s, "
    "revision = %s, ingested_at = now() WHERE symbol = %s AND timeframe = %s AND ts = %s"
)
_AUDIT = (
    f"INSERT INTO bar_revision ({', '.join(AUDIT_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(AUDIT_COLUMNS))})"
)
_STAGE_TO_BARS = f"INSERT INTO bars ({_COLS}) SELECT {_COLS} FROM bars_stage ON CONFLICT DO NOTHING"
_INSERT_ONE = (
    f"INSERT INTO bars ({_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
_INSERT_UNNEST = (
    f"INSERT INTO bars ({_COLS}) SELECT * FROM unnest("
    "%s::text[], %s::text[], %s::timestamptz[], %s::float8[], %s::float8[], "
    "%s::float8[], %s::float8[], %s::float8[], %s::text[]) ON CONFLICT DO NOTHING"
)
#: Rows per ``unnest`` statement: keeps each message far below 64 KiB, the most
#: the TimescaleDB oracle's socket takes in one piece.
_UNNEST_ROWS = 250
#: Rows fetched per round trip while streaming a snapshot.
_SNAPSHOT_ITERSIZE = 10_000
#: Session settings every pooled connection gets (bars are read back in UTC).
_SESSION_OPTIONS = "-c TimeZone=UTC"


#: Seconds one reconnection attempt of the pool may back off before it starts
#: over (see :func:`_start_over`).
_RECONNECT_S = 2.0


def _start_over(pool: ConnectionPool[Any]) -> None:
    """Called when a reconnection attempt gave up: let a waiting caller's need
    start a fresh attempt (1 s back-off again).

    psycopg_pool backs a failed reconnection off exponentially (1, 2, 4, 8,
    16 s ...). After a failover that means the pool may find the new primary
    up to twice the outage late (measured: a 17 s failover became 31 s without
    a write). Giving up after :data:`_RECONNECT_S` and growing again on demand
    keeps the attempts about a second apart for as long as someone waits.
    """
    pool.check()


def store_pool(
    conn: TimescaleConnectionSettings,
    *,
    timeout: float = 30.0,
    application_name: str = "backbone-store",
    prepared_statements: bool = True,
    configure: Callable[[psycopg.Connection[Any]], None] | None = None,
    credentials: DocumentCredentials | None = None,
) -> ConnectionPool[psycopg.Connection[Any]]:
    """The store's connection pool for ``conn``, not yet open.

    Every connection setting reaches libpq through ``conn.conninfo()`` (hosts,
    sslmode, sslrootcert, connect_timeout ...) and ``conn.connect_kwargs()`` (the
    password); the pool's bounds are ``pool_min_size``/``pool_max_size``. With
    ``credentials`` each new connection takes the password the outputs document
    holds now (rotated passwords; :mod:`backbone.credentials`).
    """
    kwargs: dict[str, Any] = {
        **conn.connect_kwargs(),
        "options": _SESSION_OPTIONS,
        "application_name": application_name,
        # psycopg's default: prepare a query after 5 executions; None: never
        "prepare_threshold": 5 if prepared_statements else None,
    }
    return ConnectionPool(
        conn.conninfo(target_session_attrs="read-write"),
        kwargs=kwargs if credentials is None else timescale_kwargs(credentials, kwargs),
        min_size=conn.pool_min_size,
        max_size=conn.pool_max_size,
        timeout=timeout,
        configure=configure,
        check=ConnectionPool.check_connection,
        reconnect_timeout=_RECONNECT_S,
        reconnect_failed=_start_over,
        name="backbone-store",
        open=False,
    )


def _row(b: Bar) -> tuple[Any, ...]:
    return (b.symbol, b.timeframe, b.ts, b.open, b.high, b.low, b.close, b.volume, b.source)


def _bar(row: Sequence[Any]) -> Bar:
    s, tf, ts, o, h, lo, c, v, src = row
    return Bar(s, tf, ts.astimezone(UTC), o, h, lo, c, v, src)


def _apply_round(
    cur: psycopg.Cursor[Any],
    bars: Sequence[Bar],
    corrections: CorrectionPolicy,
    actor: str,
    *,
    first: bool,
) -> WriteOutcome:
    """One round of :meth:`TimescaleStore.apply` (no key repeats inside ``bars``)."""
    out = WriteOutcome()
    cur.execute("DELETE FROM bars_stage")
    with cur.copy(_COPY_STAGE) as copy:
        copy.set_types(_COPY_TYPES)
        for b in bars:
            copy.write_row(_row(b))
    if first:
        # Fast path: insert first; look at stored rows only if some keys existed.
        cur.execute(_STAGE_TO_BARS)
        out.stored = max(cur.rowcount, 0)
        if out.stored == len(bars):
            return out
        existing = cur.execute(_EXISTING.format(where=_NOT_OURS)).fetchall()
    else:
        existing = cur.execute(_EXISTING.format(where="")).fetchall()
        cur.execute(_STAGE_TO_BARS)
        out.stored = max(cur.rowcount, 0)
    stored = {(r[0], r[1], r[2]): r for r in existing}
    changed: list[tuple[Bar, Bar, int]] = []
    for bar in bars:
        row = stored.get(bar.key)
        if row is None:
            continue
        old = _bar(row[:9])
        if not differing_fields(bar, old):
            out.duplicates += 1
        elif corrections == "revise":
            changed.append((bar, old, int(row[9]) + 1))
        else:
            out.conflicts.append((bar, old))
    # Keys another writer inserted between our look-up and our insert.
    out.duplicates += len(bars) - out.stored - len(existing)
    if changed:
        cur.executemany(
            _CORRECT,
            [
                (b.open, b.high, b.low, b.close, b.volume, b.source, rev, b.symbol, b.timeframe,
                 b.ts)
                for b, _, rev in changed
            ],
        )  # fmt: skip
        cur.executemany(_AUDIT, [audit_row(b, old, rev, actor) for b, old, rev in changed])
        out.corrections = len(changed)
    return out


def _is_failover(exc: BaseException) -> bool:
    """Errors a retry on a fresh connection can fix (not a pool that timed out)."""
    if isinstance(exc, PoolTimeout):
        return False
    return isinstance(exc, (psycopg.OperationalError, pg_errors.ReadOnlySqlTransaction))


class TimescaleStore:
    """:class:`~backbone.store.base.BarStore` on PostgreSQL, with TimescaleDB if present.

    ``conn`` is the ``timescale`` settings (the document's section and the pool's
    bounds: build one with ``TimescaleConnectionSettings.from_section``); ``timeout``
    bounds how long a call waits for a pooled connection (also how long a retry
    waits for a new primary). With
    ``create_schema`` the bars schema is applied when it is missing.
    ``write_method`` picks the bulk path: ``copy`` (the default, fastest),
    ``executemany`` (pipelined) or ``unnest`` (array parameters, a few hundred
    rows per statement: the one that works through servers without COPY, such
    as the TimescaleDB test oracle). Turn ``prepared_statements`` off behind a
    transaction-mode pooler, or where connections share one backend (the oracle).
    ``application_name`` labels the connections in ``pg_stat_activity``.
    ``read_only``: for a role that may only ``SELECT`` (the reader job's): no
    staging table per connection (``TEMPORARY`` is not granted to it) and no
    schema creation; a write is refused by the database (:class:`StoreError`).
    """

    def __init__(
        self,
        conn: TimescaleConnectionSettings,
        *,
        timeout: float = 30.0,
        create_schema: bool = True,
        write_method: WriteMethod = "copy",
        prepared_statements: bool = True,
        application_name: str = "backbone-store",
        credentials: DocumentCredentials | None = None,
        read_only: bool = False,
    ) -> None:
        self.connection = conn
        self.read_only = read_only
        self.timescaledb = conn.timescaledb
        self._write_method = write_method
        self._secret = conn.password.get_secret_value() if conn.password else ""
        self._credentials = credentials
        self._where = ", ".join(str(h) for h in conn.hosts)
        self._pool = store_pool(
            conn,
            timeout=timeout,
            application_name=application_name,
            prepared_statements=prepared_statements,
            configure=None if read_only else self._configure,
            credentials=credentials,
        )
        self._closed = threading.Event()
        #: Transactions that failed on a connection error and were run again.
        self.retried_transactions = 0
        try:
            self._pool.open(wait=True, timeout=timeout)
        except PoolTimeout:
            self._pool.close()
            raise StoreError(
                f"no read-write PostgreSQL answered at {self._where} (db {conn.dbname}, "
                f"user {conn.user}) within {timeout:.0f}s ({self._connect_problem()}); "
                "check the stack is up (`harness status`) and the outputs document is current"
            ) from None
        if create_schema and not read_only and not self._schema_present():
            self.apply_schema()

    def __repr__(self) -> str:
        return f"TimescaleStore({self._where}/{self.connection.dbname})"

    def __enter__(self) -> TimescaleStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------

    @staticmethod
    def _configure(conn: psycopg.Connection[Any]) -> None:
        conn.execute(_STAGE_DDL)
        conn.commit()

    def _password_kwargs(self) -> dict[str, Any]:
        """The password a new connection presents now (the document's, if followed)."""
        if self._credentials is None:
            return self.connection.connect_kwargs()
        return timescale_kwargs(self._credentials, self.connection.connect_kwargs())()

    def _scrub(self, text: str) -> str:
        text = " ".join(text.split())
        current = self._password_kwargs().get("password") or ""
        for secret in {self._secret, current} - {""}:
            text = text.replace(secret, "***")
        return text

    def _connect_problem(self) -> str:
        """Why a direct connection fails now, for an error message (no secrets)."""
        try:
            with psycopg.connect(
                self.connection.conninfo(target_session_attrs="read-write"),
                **self._password_kwargs(),
            ):
                return "a direct connection works now; retry"
        except psycopg.Error as exc:
            return f"last error: {self._scrub(str(exc))[:300]}"

    def _before_retry(self, _state: Any) -> None:
        # Drop every broken connection now, so the retry gets a fresh one that
        # target_session_attrs=read-write steers to the (new) primary.
        self.retried_transactions += 1
        with contextlib.suppress(psycopg.Error):
            self._pool.check()

    def _transaction(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``work`` in one transaction; once more on a connection error."""
        if self._closed.is_set():
            raise StoreError(f"{self!r} is closed; open a new store")
        retrying = Retrying(
            retry=retry_if_exception(_is_failover),
            stop=stop_after_attempt(2),
            wait=wait_fixed(0.2),
            before_sleep=self._before_retry,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt, self._pool.connection() as conn:
                    try:
                        return work(conn)
                    except pg_errors.ReadOnlySqlTransaction:
                        conn.close()  # a demoted node: the pool must not reuse it
                        raise
        except PoolTimeout:
            raise StoreUnavailableError(
                f"no read-write PostgreSQL connection from {self._where} within "
                f"{self._pool.timeout:.0f}s; is the primary down with no standby promoted? "
                "(`harness status`)"
            ) from None
        except (psycopg.OperationalError, pg_errors.ReadOnlySqlTransaction) as exc:
            raise StoreUnavailableError(
                f"PostgreSQL at {self._where} failed twice ({type(exc).__name__}: "
                f"{self._scrub(str(exc))}); check the stack (`harness status`)"
            ) from None
        except psycopg.Error as exc:
            # Not a connection problem: the database refused the statement; the
            # transaction was rolled back and nothing of it is stored.
            raise StoreError(
                f"PostgreSQL refused the transaction ({type(exc).__name__}: "
                f"{self._scrub(str(exc))}); nothing of it was stored"
            ) from exc
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _schema_present(self) -> bool:
        def check(conn: psycopg.Connection[Any]) -> bool:
            row = conn.execute(
                "SELECT to_regclass('bars') IS NOT NULL AND to_regclass('dead_letter') IS NOT NULL "
                "AND to_regclass('bar_revision') IS NOT NULL"
            ).fetchone()
            return bool(row and row[0])

        return self._transaction(check)

    def apply_schema(self) -> None:
        """Create the bars schema (idempotent; serialised by an advisory lock)."""
        statements = schema_statements(timescaledb=self.timescaledb)

        def apply(conn: psycopg.Connection[Any]) -> None:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('backbone.schema'))")
            for stmt in statements:
                conn.execute(stmt)  # schema DDL, not user input

        self._transaction(apply)

    # -- writes ----------------------------------------------------------------

    def write(self, bars: Sequence[Bar]) -> int:
        """Upsert ``bars`` in one transaction; returns rows newly inserted.

        If the commit's outcome was lost to a failover, the retry finds the
        rows present and counts them as not new.
        """
        if not bars:
            return 0
        writer = {
            "copy": self._write_copy,
            "executemany": self._write_executemany,
            "unnest": self._write_unnest,
        }[self._write_method]
        return self._transaction(lambda conn: writer(conn, bars))

    @staticmethod
    def _write_copy(conn: psycopg.Connection[Any], bars: Sequence[Bar]) -> int:
        with conn.cursor() as cur:
            with cur.copy(_COPY_STAGE) as copy:
                copy.set_types(_COPY_TYPES)
                for b in bars:
                    copy.write_row(_row(b))
            cur.execute(_STAGE_TO_BARS)
            return max(cur.rowcount, 0)

    @staticmethod
    def _write_executemany(conn: psycopg.Connection[Any], bars: Sequence[Bar]) -> int:
        # psycopg 3 runs executemany in pipeline mode where libpq supports it.
        with conn.cursor() as cur:
            cur.executemany(_INSERT_ONE, [_row(b) for b in bars])
            return max(cur.rowcount, 0)

    @staticmethod
    def _write_unnest(conn: psycopg.Connection[Any], bars: Sequence[Bar]) -> int:
        inserted = 0
        with conn.cursor() as cur:
            for i in range(0, len(bars), _UNNEST_ROWS):
                rows = (_row(b) for b in bars[i : i + _UNNEST_ROWS])
                cur.execute(_INSERT_UNNEST, [list(col) for col in zip(*rows, strict=True)])
                inserted += max(cur.rowcount, 0)
        return inserted

    def apply(
        self,
        bars: Sequence[Bar],
        *,
        corrections: CorrectionPolicy = "revise",
        changed_by: str | None = None,
    ) -> WriteOutcome:
        """Write ``bars`` in one transaction, telling new rows, duplicates and
        corrections apart (:mod:`backbone.store.revisions`).

        The common case (every key new) costs what :meth:`write` costs: the rows
        are inserted first, and stored rows are looked up only when some keys
        were already there. Stored rows a batch corrects are locked
        (``FOR UPDATE``) until the transaction commits.
        """
        if not bars:
            return WriteOutcome()
        actor = changed_by or default_actor()

        def work(conn: psycopg.Connection[Any]) -> WriteOutcome:
            outcome = WriteOutcome()
            with conn.cursor() as cur:
                for n, group in enumerate(rounds(bars)):
                    outcome.add(_apply_round(cur, group, corrections, actor, first=n == 0))
            return outcome

        return self._transaction(work)

    def revisions(self, symbol: str, timeframe: str) -> list[dict[str, Any]]:
        """The audit trail of one series' corrections, oldest first."""

        def fetch(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            cur = conn.execute(
                f"SELECT changed_at, {', '.join(AUDIT_COLUMNS)} FROM bar_revision "
                "WHERE symbol = %s AND timeframe = %s ORDER BY id",
                (symbol, timeframe),
            )
            names = [d.name for d in cur.description or ()]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

        return self._transaction(fetch)

    def dead_letter_records(
        self, ids: Sequence[int] | None = None, *, limit: int | None = None
    ) -> list[StoredDeadLetter]:
        """Stored dead letters (all, or those with ``ids``), oldest first."""
        sql = dead_letter_query("id = ANY(%s)" if ids is not None else None, limit)
        return stored_dead_letters(self._fetch(sql, [list(ids)] if ids is not None else []))

    def mark_dead_letters_replayed(self, ids: Sequence[int]) -> None:
        """Record that these dead letters were re-submitted (they stay, for the audit)."""
        if not ids:
            return

        def mark(conn: psycopg.Connection[Any]) -> None:
            conn.execute(
                "UPDATE dead_letter SET replayed_at = now() WHERE id = ANY(%s)", (list(ids),)
            )

        self._transaction(mark)

    def write_dead_letters(self, items: Sequence[DeadLetter]) -> None:
        if not items:
            return
        rows = [(d.origin, d.reason, bytes(d.payload)) for d in items]

        def insert(conn: psycopg.Connection[Any]) -> None:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO dead_letter (origin, reason, payload) VALUES (%s, %s, %s)", rows
                )

        self._transaction(insert)

    # -- reads -----------------------------------------------------------------

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        def fetch(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            return conn.execute(sql, params).fetchall()

        return self._transaction(fetch)

    def read(self, symbol: str, timeframe: str, start: datetime, end: datetime) -> list[Bar]:
        check_range(start, end)
        rows = self._fetch(
            f"SELECT {_COLS} FROM bars WHERE symbol = %s AND timeframe = %s "
            "AND ts >= %s AND ts < %s ORDER BY ts",
            (symbol, timeframe, start, end),
        )
        return [_bar(r) for r in rows]

    def latest(self, symbol: str, timeframe: str) -> Bar | None:
        rows = self._fetch(
            f"SELECT {_COLS} FROM bars WHERE symbol = %s AND timeframe = %s "
            "ORDER BY ts DESC LIMIT 1",
            (symbol, timeframe),
        )
        return _bar(rows[0]) if rows else None

    def count(self, symbol: str | None = None, timeframe: str | None = None) -> int:
        where, params = [], []
        for column, value in (("symbol", symbol), ("timeframe", timeframe)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        sql = "SELECT count(*) FROM bars" + (" WHERE " + " AND ".join(where) if where else "")
        return int(self._fetch(sql, params)[0][0])

    def dead_letter_count(self) -> int:
        return int(self._fetch("SELECT count(*) FROM dead_letter", ())[0][0])

    def dead_letters(self) -> list[DeadLetter]:
        """Every stored dead letter, oldest first (for inspection and tests)."""
        rows = self._fetch("SELECT origin, reason, payload FROM dead_letter ORDER BY id", ())
        return [DeadLetter(o, r, bytes(p)) for o, r, p in rows]

    def bucketed_sql(self) -> str:
        """The bucketing query for this database's dialect (``time_bucket`` with
        TimescaleDB, ``date_bin`` otherwise); parameters: bucket, symbol,
        timeframe, start, end."""
        if self.timescaledb:
            head = (
                f"SELECT time_bucket(%s::interval, ts, TIMESTAMPTZ '{BUCKET_ORIGIN}') AS b, "
                "first(open, ts), max(high), min(low), last(close, ts), sum(volume) "
            )
        else:
            head = (
                f"SELECT date_bin(%s::interval, ts, TIMESTAMPTZ '{BUCKET_ORIGIN}') AS b, "
                "(array_agg(open ORDER BY ts))[1], max(high), min(low), "
                "(array_agg(close ORDER BY ts DESC))[1], sum(volume) "
            )
        return (
            head + "FROM bars WHERE symbol = %s AND timeframe = %s AND ts >= %s AND ts < %s "
            "GROUP BY b ORDER BY b"
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
        rows = self._fetch(self.bucketed_sql(), (bucket, symbol, timeframe, start, end))
        return [
            Bar(symbol, label, b.astimezone(UTC), o, h, lo, c, v, "aggregate")
            for b, o, h, lo, c, v in rows
        ]

    def snapshot(
        self, start: datetime, end: datetime, symbols: Sequence[str] | None = None
    ) -> Iterator[Bar]:
        """Stream the range through a server-side cursor (one transaction).

        The iterator holds a pooled connection until it is exhausted or closed.
        It is not retried: after a failover, restart the snapshot from the last
        ``ts`` received (replays are idempotent).
        """
        check_range(start, end)
        if self._closed.is_set():
            raise StoreError(f"{self!r} is closed; open a new store")
        sql = (
            f"SELECT {_COLS} FROM bars WHERE ts >= %s AND ts < %s "
            + ("AND symbol = ANY(%s) " if symbols is not None else "")
            + "ORDER BY ts, symbol, timeframe"
        )
        params: list[Any] = [start, end] + ([list(symbols)] if symbols is not None else [])
        try:
            with self._pool.connection() as conn, conn.cursor(name="backbone_snapshot") as cur:
                cur.itersize = _SNAPSHOT_ITERSIZE
                cur.execute(sql, params)
                for row in cur:
                    yield _bar(row)
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise StoreError(
                f"snapshot from PostgreSQL at {self._where} broke off "
                f"({type(exc).__name__}: {self._scrub(str(exc))}); "
                "restart it from the last bar received"
            ) from None

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._pool.close()
