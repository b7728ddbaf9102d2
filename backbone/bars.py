"""OHLCV bars: the one record the backbone moves, and the rules a bar must obey.

What a bar must be before it is stored (its *contract*) lives in
:mod:`backbone.contract`; CSV files are read by :mod:`backbone.csvfile`.
Bars come in from three places besides the live feed: :func:`synthetic_bars`
(a deterministic FX random walk, labelled ``synthetic``), CSV files and
replays of the store (``backfill``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "CSV_COLUMNS",
    "DAILY_TIMEFRAMES",
    "FX_SYMBOLS",
    "INTRADAY_TIMEFRAMES",
    "SYNTHETIC_START",
    "TIMEFRAMES",
    "Bar",
    "BarError",
    "bar_from_dict",
    "bar_to_dict",
    "synthetic_bars",
    "timeframe_delta",
    "topic_for",
]

DAILY_TIMEFRAMES: frozenset[str] = frozenset({"1d"})
INTRADAY_TIMEFRAMES: frozenset[str] = frozenset({"1m", "5m", "15m", "1h"})
TIMEFRAMES: frozenset[str] = DAILY_TIMEFRAMES | INTRADAY_TIMEFRAMES

_TIMEFRAME_DELTAS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}


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
    #: ``live``, ``synthetic``, ``csv`` or ``backfill`` (``aggregate`` for bars a
    #: store computed by bucketing, never for stored rows).
    source: str = "live"

    @property
    def key(self) -> tuple[str, str, datetime]:
        """The idempotency key: one stored row per (symbol, timeframe, ts)."""
        return (self.symbol, self.timeframe, self.ts)


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


def timeframe_delta(timeframe: str) -> timedelta:
    """The length of one bar of ``timeframe``; :class:`ValueError` if unknown."""
    try:
        return _TIMEFRAME_DELTAS[timeframe]
    except KeyError:
        raise ValueError(
            f"unknown timeframe {timeframe!r}; use one of {sorted(TIMEFRAMES)}"
        ) from None


# --- synthetic FX bars --------------------------------------------------------

#: Reference mid prices the random walks start from (and drift back to).
_FX_REFERENCE: dict[str, float] = {
    "EURUSD": 1.0850,
    "GBPUSD": 1.2700,
    "USDJPY": 150.00,
    "AUDUSD": 0.6600,
    "USDCHF": 0.8800,
    "USDCAD": 1.3600,
    "NZDUSD": 0.6100,
    "EURGBP": 0.8550,
    "EURJPY": 162.00,
}
FX_SYMBOLS: tuple[str, ...] = tuple(_FX_REFERENCE)
#: Where synthetic series start unless told otherwise (a Monday, 00:00 UTC).
SYNTHETIC_START = datetime(2024, 1, 1, tzinfo=UTC)

#: Daily volatility of an FX pair's log price, about 0.6 %.
_DAILY_VOL = 0.006
#: Pull back towards the reference price per bar, so long series stay realistic.
_MEAN_REVERSION = 0.0005


class _Walk:
    """One symbol's random walk; its own RNG keeps every symbol reproducible."""

    def __init__(self, symbol: str, timeframe: str, seed: int) -> None:
        self.rng = random.Random(f"backbone-synthetic:{seed}:{symbol}:{timeframe}")
        ref = _FX_REFERENCE.get(symbol) or round(self.rng.uniform(0.5, 2.0), 4)
        self.log_ref = self.log_price = math.log(ref)
        self.digits = 3 if "JPY" in symbol else 5
        minutes = timeframe_delta(timeframe) / timedelta(minutes=1)
        self.sigma = _DAILY_VOL * math.sqrt(minutes / 1440.0)
        self.volume_scale = max(1.0, math.sqrt(minutes))
        self.close = round(ref, self.digits)

    def step(self) -> tuple[float, float, float, float, float]:
        rng, d, sigma = self.rng, self.digits, self.sigma
        o = self.close
        self.log_price += rng.gauss(0.0, sigma) - _MEAN_REVERSION * (self.log_price - self.log_ref)
        c = round(math.exp(self.log_price), d)
        # Rounding is monotonic and o, c are already rounded, so the wicks
        # stay outside [min(o, c), max(o, c)] after rounding too.
        if o >= c:
            h = round(o * (1.0 + rng.random() * sigma), d)
            lo = round(c * (1.0 - rng.random() * sigma), d)
        else:
            h = round(c * (1.0 + rng.random() * sigma), d)
            lo = round(o * (1.0 - rng.random() * sigma), d)
        self.close = c
        # Whole-number volumes (tick counts): sums are exact in every backend.
        return o, h, lo, c, float(int((100 + rng.random() * 4_900) * self.volume_scale))


def synthetic_bars(
    symbols: Iterable[str],
    timeframe: str,
    count: int,
    *,
    seed: int = 0,
    start: datetime = SYNTHETIC_START,
) -> Iterator[Bar]:
    """``count`` bars per symbol of a deterministic FX random walk, source ``synthetic``.

    Bars come time-major (every symbol's bar at ``start``, then at the next
    step ...), so each symbol's bars are in time order as a live feed sends them.
    The same arguments always give the same bars; every bar passes
    the default :class:`backbone.contract.BarContract`. ``start`` must be timezone-aware.
    """
    names = list(dict.fromkeys(s.strip() for s in symbols))
    if not names or not all(names):
        raise ValueError("synthetic_bars needs at least one non-empty symbol")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (e.g. datetime(..., tzinfo=UTC))")
    step = timeframe_delta(timeframe)
    walks = [(name, _Walk(name, timeframe, seed)) for name in names]
    ts = start.astimezone(UTC)
    for _ in range(count):
        for name, walk in walks:
            o, h, lo, c, v = walk.step()
            yield Bar(name, timeframe, ts, o, h, lo, c, v, "synthetic")
        ts += step


# --- CSV input ----------------------------------------------------------------

#: Columns a bars CSV must have (in any order; extra columns are ignored).
CSV_COLUMNS: tuple[str, ...] = (
    "symbol",
    "timeframe",
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
)
