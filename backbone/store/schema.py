"""The bars schema, defined once for every PostgreSQL the backbone writes to.

The local provisioner applies it when a stack comes up, the Pulumi programs
ship it as the Timescale bootstrap script, and the store applies it on first
use. With the TimescaleDB extension the tables are hypertables with compression
(and, optionally, retention) policies; without it they are natively
range-partitioned with the same names and columns, so every query works on both.
"""

from __future__ import annotations

__all__ = ["BARS_COLUMNS", "schema_sql", "schema_statements"]

#: Column order used by COPY and by every reader.
BARS_COLUMNS: tuple[str, ...] = (
    "symbol",
    "timeframe",
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "source",
)

_BARS_COLUMNS_DDL = """
    symbol      text             NOT NULL,
    timeframe   text             NOT NULL,
    ts          timestamptz      NOT NULL,
    open        double precision NOT NULL,
    high        double precision NOT NULL,
    low         double precision NOT NULL,
    close       double precision NOT NULL,
    volume      double precision NOT NULL,
    source      text             NOT NULL DEFAULT 'live',
    ingested_at timestamptz      NOT NULL DEFAULT now(),
    revision    integer          NOT NULL DEFAULT 1,
    PRIMARY KEY (symbol, timeframe, ts)
"""

_DEAD_LETTER_DDL = """
CREATE TABLE IF NOT EXISTS dead_letter (
    id          bigserial   PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    origin      text        NOT NULL,
    reason      text        NOT NULL,
    payload     bytea       NOT NULL,
    replayed_at timestamptz
)
"""

#: The audit trail of corrections (``backbone.store.revisions``): one row per
#: revision, with the values before and after, who and when.
_BAR_REVISION_DDL = """
CREATE TABLE IF NOT EXISTS bar_revision (
    id          bigserial        PRIMARY KEY,
    symbol      text             NOT NULL,
    timeframe   text             NOT NULL,
    ts          timestamptz      NOT NULL,
    revision    integer          NOT NULL,
    changed_at  timestamptz      NOT NULL DEFAULT now(),
    changed_by  text             NOT NULL,
    source      text             NOT NULL,
    old_open double precision, old_high double precision, old_low double precision,
    old_close double precision, old_volume double precision,
    new_open double precision, new_high double precision, new_low double precision,
    new_close double precision, new_volume double precision
)
"""

#: Databases created before corrections and dead-letter replay existed.
_UPGRADES = (
    "ALTER TABLE bars ADD COLUMN IF NOT EXISTS revision integer NOT NULL DEFAULT 1",
    "ALTER TABLE dead_letter ADD COLUMN IF NOT EXISTS replayed_at timestamptz",
)

#: Native partitions: one per year over a wide range, plus a default partition
#: so an out-of-range bar is stored rather than rejected.
_FIRST_YEAR, _LAST_YEAR = 1990, 2040


def schema_statements(
    *,
    timescaledb: bool,
    chunk_interval_days: int = 7,
    compress_after_days: int = 30,
    retention_days: int = 0,
) -> list[str]:
    """The idempotent DDL, one statement per item, in order."""
    if timescaledb:
        stmts = [
            "CREATE EXTENSION IF NOT EXISTS timescaledb",
            f"CREATE TABLE IF NOT EXISTS bars ({_BARS_COLUMNS_DDL})",
            "SELECT create_hypertable('bars', by_range('ts', "
            f"INTERVAL '{chunk_interval_days} days'), if_not_exists => TRUE)",
            "ALTER TABLE bars SET (timescaledb.compress, "
            "timescaledb.compress_segmentby = 'symbol, timeframe', "
            "timescaledb.compress_orderby = 'ts DESC')",
            f"SELECT add_compression_policy('bars', INTERVAL '{compress_after_days} days', "
            "if_not_exists => TRUE)",
        ]
        if retention_days:
            stmts.append(
                f"SELECT add_retention_policy('bars', INTERVAL '{retention_days} days', "
                "if_not_exists => TRUE)"
            )
    else:
        stmts = [f"CREATE TABLE IF NOT EXISTS bars ({_BARS_COLUMNS_DDL}) PARTITION BY RANGE (ts)"]
        stmts += [
            f"CREATE TABLE IF NOT EXISTS bars_y{y} PARTITION OF bars "
            f"FOR VALUES FROM ('{y}-01-01 00:00+00') TO ('{y + 1}-01-01 00:00+00')"
            for y in range(_FIRST_YEAR, _LAST_YEAR + 1)
        ]
        stmts.append("CREATE TABLE IF NOT EXISTS bars_default PARTITION OF bars DEFAULT")
    stmts.append(_DEAD_LETTER_DDL.strip())
    stmts.append(_BAR_REVISION_DDL.strip())
    stmts.extend(_UPGRADES)
    stmts.append(
        "CREATE INDEX IF NOT EXISTS bar_revision_series_idx ON bar_revision (symbol, timeframe, ts)"
    )
    stmts.append("CREATE INDEX IF NOT EXISTS bars_timeframe_ts_idx ON bars (timeframe, ts DESC)")
    return stmts


def schema_sql(**kwargs: object) -> str:
    """The same DDL as one script (for container init directories)."""
    return ";\n".join(schema_statements(**kwargs)) + ";\n"  # type: ignore[arg-type]
