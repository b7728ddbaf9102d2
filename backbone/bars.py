"""OHLCV bars: the one record the backbone moves, and the rules a bar must obey.

A bar that breaks a rule is never dropped: :func:`bar_problem` names the rule,
and the caller dead-letters the bar with that reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "DAILY_TIMEFRAMES",
    "INTRADAY_TIMEFRAMES",
    "TIMEFRAMES",
    "Bar",
    "BarError",
    "bar_from_dict",
    "bar_problem",
    "bar_to_dict",
    "topic_for",
]

DAILY_TIMEFRAMES: frozenset[str] = frozenset({"1d"})
INTRADAY_TIMEFRAMES: frozenset[str] = frozenset({"1m", "5m", "15m", "1h"})
TIMEFRAMES: frozenset[str] = DAILY_TIMEFRAMES | INTRADAY_TIMEFRAMES


class BarError(ValueError):
    """A record that cannot be read as a bar (missing field, wrong type)."""


@dataclass(frozen=True, slots=True)
class Bar:
    symbol: str
    timeframe: str
    #: Bar open time, timezone-aware UTC.
    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    #: ``live``, ``synthetic``, ``csv`` or ``backfill``.
    source: str = "live"

    @property
    def key(self) -> tuple[str, str, datetime]:
        """The idempotency key: one stored row per (symbol, timeframe, ts)."""
        return (self.symbol, self.timeframe, self.ts)


def bar_problem(bar: Bar) -> str | None:
    """The first rule ``bar`` breaks, as a dead-letter reason; ``None`` if valid."""
    if not bar.symbol or not bar.symbol.strip():
        return "empty symbol"
    if bar.timeframe not in TIMEFRAMES:
        return f"unknown timeframe {bar.timeframe!r}"
    prices = (bar.open, bar.high, bar.low, bar.close)
    if not all(math.isfinite(p) for p in prices):
        return "non-finite price"
    if not math.isfinite(bar.volume):
        return "non-finite volume"
    if bar.volume < 0:
        return "negative volume"
    if bar.high < bar.low:
        return "high below low"
    if not bar.low <= bar.open <= bar.high:
        return "open outside [low, high]"
    if not bar.low <= bar.close <= bar.high:
        return "close outside [low, high]"
    if bar.ts.tzinfo is None:
        return "timestamp without timezone"
    return None


def topic_for(timeframe: str) -> str:
    """The logical topic a timeframe's bars stream on."""
    return "daily_bars" if timeframe in DAILY_TIMEFRAMES else "intraday_bars"


def bar_to_dict(bar: Bar) -> dict[str, Any]:
    """JSON-ready form; ``ts`` as ISO-8601 UTC."""
    return {
        "symbol": bar.symbol,
        "timeframe": bar.timeframe,
        "ts": bar.ts.astimezone(UTC).isoformat(),
        "open": bar.open,
        "high": bar.high,
        "low": bar.low,
        "close": bar.close,
        "volume": bar.volume,
        "source": bar.source,
    }


def bar_from_dict(data: Any) -> Bar:
    """Read a bar from its dict form; :class:`BarError` names what is wrong."""
    if not isinstance(data, dict):
        raise BarError(f"expected an object, got {type(data).__name__}")
    try:
        ts = datetime.fromisoformat(str(data["ts"]))
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        return Bar(
            symbol=str(data["symbol"]),
            timeframe=str(data["timeframe"]),
            ts=ts.astimezone(UTC),
            open=float(data["open"]),
            high=float(data["high"]),
            low=float(data["low"]),
            close=float(data["close"]),
            volume=float(data["volume"]),
            source=str(data.get("source", "live")),
        )
    except KeyError as exc:
        raise BarError(f"missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise BarError(f"bad field value: {exc}") from None
