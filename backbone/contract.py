"""The bar contract: what a bar must be before any store keeps it.

Every path a bar can take into a store passes through :class:`BarContract`:
the CSV reader (:mod:`backbone.csvfile`), the public ingest API
(:meth:`backbone.runtime.Backbone.ingest`, which is also what the producer side
runs before anything reaches Kafka), the Kafka decoder
(:func:`backbone.stream.codec.decode_record`, for records other producers
wrote) and replay (:func:`backbone.replay.replay`). Keeping the rules here, in
one place, is what makes "valid" mean the same thing on every path and tier.

A broken rule is a :class:`Violation`: a stable, machine-readable ``code``
(dashboards, alerts and ``backbone dead-letters list`` group by it) and a
sentence that names the offending field and its value, truncated so a
5,000-character symbol cannot flood a log line. A dead letter's ``reason`` is
``"CODE: sentence"``; :func:`reason_code` reads the code back.

The rules and their settings are listed, with their codes, in
``docs/data-contract.md``; :data:`REASON_CODES` is the machine-readable list and
a test keeps the two in step.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from backbone.bars import TIMEFRAMES, Bar, bar_to_dict, timeframe_delta
from backbone.deadletter import DeadLetter

__all__ = [
    "DEFAULT_POLICY",
    "REASON_CODES",
    "BarContract",
    "ContractPolicy",
    "CorrectionPolicy",
    "Violation",
    "reason",
    "reason_code",
    "show_value",
]

#: Every reason code the backbone gives a refused record, with what it means.
#: Codes are part of the public interface: never rename one, add a new one.
REASON_CODES: dict[str, str] = {
    # the bar contract
    "symbol_empty": "the symbol is empty",
    "symbol_too_long": "the symbol is longer than contract.symbol_max_length",
    "symbol_invalid": "the symbol does not match contract.symbol_pattern",
    "timeframe_unknown": "the timeframe is not one of 1m, 5m, 15m, 1h, 1d",
    "price_not_finite": "a price is NaN or infinite",
    "price_not_positive": "a price is <= 0 for a symbol not in contract.non_positive_price_symbols",
    "price_above_bound": "a price's magnitude is above contract.max_price",
    "volume_not_finite": "the volume is NaN or infinite",
    "volume_negative": "the volume is below 0",
    "volume_above_bound": "the volume is above contract.max_volume",
    "ohlc_inconsistent": "high < low, or open/close outside [low, high]",
    "ts_naive": "the timestamp has no timezone",
    "ts_misaligned": "the timestamp is not on its timeframe's boundary (or has fractional seconds)",
    "ts_in_future": "the timestamp is later than now + one timeframe + contract.clock_skew_seconds",
    "ts_before_earliest": "the timestamp is before contract.earliest",
    # reading records
    "field_missing": "a required field is missing",
    "field_unreadable": "a field cannot be read as its type (number, ISO-8601 time, text)",
    "csv_undecodable": "a CSV line is not UTF-8",
    "csv_malformed": "a CSV line has the wrong number of fields or broken quoting",
    "record_undecodable": "a Kafka record's value is not JSON",
    "record_key_mismatch": "a bar's symbol differs from its Kafka record key",
    "schema_violation": "a Kafka record does not match the published JSON Schema",
    "schema_version_missing": "a Kafka record has no schema-version header",
    "schema_version_unsupported": "a record's schema version is one this consumer cannot read",
    "decoder_error": "the decoder failed on a record (a bug: report it with the payload)",
    # corrections
    "correction_conflict": "a re-send changed a stored bar and contract.corrections is refuse",
}

#: ``revise``: a re-send with different values becomes a new revision of the row,
#: the previous values kept in ``bar_revision``; ``refuse``: it is dead-lettered
#: as ``correction_conflict`` and the stored row is left alone.
CorrectionPolicy = Literal["revise", "refuse"]

_PRICE_FIELDS = ("open", "high", "low", "close")
_SHOW_CHARS = 40
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_S = 1_000_000


def show_value(value: Any, limit: int = _SHOW_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages and logs."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def reason(code: str, sentence: str) -> str:
    """A dead letter's ``reason``: ``"CODE: sentence"`` (``code`` must be registered)."""
    if code not in REASON_CODES:
        raise ValueError(f"unregistered reason code {code!r}; add it to REASON_CODES")
    return f"{code}: {sentence}"


def reason_code(text: str) -> str:
    """The code of a ``reason`` string; ``unclassified`` for reasons from before codes."""
    code, sep, _ = text.partition(":")
    return code if sep and code in REASON_CODES else "unclassified"


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: ``code`` for machines, ``message`` for people."""

    code: str
    field: str
    message: str

    @property
    def reason(self) -> str:
        return reason(self.code, self.message)


class ContractPolicy(BaseModel):
    """The contract's settings (``contract:`` in config.yaml, ``BACKBONE_CONTRACT__*``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Symbols must match this (whole string). Default: upper-case letters and
    #: digits, then also ``.``, ``_``, ``/``, ``-``.
    symbol_pattern: str = r"[A-Z0-9][A-Z0-9._/-]*"
    symbol_max_length: int = Field(default=32, ge=1, le=256)
    #: ``exact``: symbols are taken as sent; ``upper``: upper-cased before the
    #: check (``eurusd`` is stored as ``EURUSD``). Whitespace is never trimmed
    #: inside a symbol; the CSV reader trims around every field.
    symbol_case: Literal["exact", "upper"] = "exact"
    #: Symbols whose prices may be zero or negative (spreads, some futures and
    #: power prices). Every other symbol needs prices > 0.
    non_positive_price_symbols: frozenset[str] = frozenset()
    #: Largest price magnitude accepted.
    max_price: float = Field(default=1e9, gt=0)
    #: Largest volume accepted.
    max_volume: float = Field(default=1e15, gt=0)
    #: Daily bars open at this UTC time of day (the session boundary).
    daily_session_start: clock_time = clock_time(0, 0)
    #: Extra allowance over "now + one timeframe" for clocks that run ahead.
    clock_skew_seconds: float = Field(default=0.0, ge=0)
    #: No bar may open before this.
    earliest: datetime = datetime(1990, 1, 1, tzinfo=UTC)
    #: What a re-send with different values becomes (see :data:`CorrectionPolicy`).
    corrections: CorrectionPolicy = "revise"

    @field_validator("earliest")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("contract.earliest needs a timezone, e.g. 1990-01-01T00:00:00Z")
        return value.astimezone(UTC)

    @field_validator("daily_session_start")
    @classmethod
    def _whole_minutes(cls, value: clock_time) -> clock_time:
        if value.second or value.microsecond or value.tzinfo is not None:
            raise ValueError("contract.daily_session_start is HH:MM in UTC, e.g. '22:00'")
        return value

    @field_validator("symbol_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"contract.symbol_pattern is not a regex: {exc}") from None
        return value


DEFAULT_POLICY = ContractPolicy()


class BarContract:
    """The rules of :class:`ContractPolicy`, compiled once and applied per bar.

    ``clock`` returns Unix seconds (tests pin it; the future-timestamp rule
    depends on it).
    """

    def __init__(
        self, policy: ContractPolicy = DEFAULT_POLICY, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.policy = policy
        self.clock = clock
        self._symbol = re.compile(policy.symbol_pattern)
        self._non_positive = frozenset(policy.non_positive_price_symbols)
        self._steps_us = {tf: _micros(timeframe_delta(tf)) for tf in TIMEFRAMES}
        start = policy.daily_session_start
        session_us = (start.hour * 3600 + start.minute * 60) * _US_PER_S
        self._offsets_us = {tf: (session_us if tf == "1d" else 0) for tf in TIMEFRAMES}
        self._earliest_us = _micros(policy.earliest - _EPOCH)
        self._skew_us = int(policy.clock_skew_seconds * _US_PER_S)

    def __repr__(self) -> str:
        return f"BarContract({self.policy!r})"

    # --- the one entry point --------------------------------------------------
    def admit(self, bar: Bar) -> Bar | Violation:
        """The bar as it will be stored (symbol case applied), or the first rule it breaks."""
        if self.policy.symbol_case == "upper" and isinstance(bar.symbol, str):
            upper = bar.symbol.upper()
            if upper != bar.symbol:
                bar = Bar(
                    upper, bar.timeframe, bar.ts, bar.open, bar.high, bar.low, bar.close,
                    bar.volume, bar.source,
                )  # fmt: skip
        problem = self.check(bar)
        return bar if problem is None else problem

    def check(self, bar: Bar) -> Violation | None:
        """The first rule ``bar`` breaks, or ``None``; never raises."""
        try:
            return (
                self._check_symbol(bar.symbol)
                or self._check_timeframe(bar.timeframe)
                or self._check_prices(bar)
                or self._check_volume(bar.volume)
                or self._check_ohlc(bar)
                or self._check_ts(bar)
            )
        except Exception as exc:  # a bar built from foreign types must not stop ingest
            return Violation("field_unreadable", "bar", f"the bar cannot be checked: {exc}"[:200])

    def reject(self, bar: Bar, violation: Violation, *, origin: str) -> DeadLetter:
        """The dead letter for a refused bar; its payload is the bar's JSON."""
        try:
            payload = json.dumps(bar_to_dict(bar), allow_nan=True).encode()
        except (TypeError, ValueError, OverflowError, AttributeError):
            payload = repr(bar).encode("utf-8", "replace")
        return DeadLetter(origin=origin, reason=violation.reason, payload=payload)

    # --- the rules ------------------------------------------------------------
    def _check_symbol(self, symbol: Any) -> Violation | None:
        if not isinstance(symbol, str) or not symbol:
            return Violation("symbol_empty", "symbol", "symbol is empty; every bar needs one")
        limit = self.policy.symbol_max_length
        if len(symbol) > limit:
            return Violation(
                "symbol_too_long",
                "symbol",
                f"symbol {show_value(symbol)} has {len(symbol)} characters; at most {limit} "
                "(contract.symbol_max_length)",
            )
        if self._symbol.fullmatch(symbol) is None:
            return Violation(
                "symbol_invalid",
                "symbol",
                f"symbol {show_value(symbol)} does not match {self.policy.symbol_pattern!r} "
                "(upper-case letters, digits and ._/-, by default)",
            )
        return None

    @staticmethod
    def _check_timeframe(timeframe: Any) -> Violation | None:
        if timeframe not in TIMEFRAMES:
            return Violation(
                "timeframe_unknown",
                "timeframe",
                f"timeframe {show_value(timeframe)} is unknown; use one of {sorted(TIMEFRAMES)}",
            )
        return None

    def _check_prices(self, bar: Bar) -> Violation | None:
        may_be_negative = bar.symbol in self._non_positive
        bound = self.policy.max_price
        for name in _PRICE_FIELDS:
            value = getattr(bar, name)
            if not math.isfinite(value):
                return Violation(
                    "price_not_finite", name, f"{name} is {show_value(value)}; it must be finite"
                )
            if value <= 0 and not may_be_negative:
                return Violation(
                    "price_not_positive",
                    name,
                    f"{name} is {show_value(value)}; prices must be > 0 (list the symbol in "
                    "contract.non_positive_price_symbols if it can trade at or below zero)",
                )
            if abs(value) > bound:
                return Violation(
                    "price_above_bound",
                    name,
                    f"{name} is {show_value(value)}; above contract.max_price {bound:g}",
                )
        return None

    def _check_volume(self, volume: float) -> Violation | None:
        if not math.isfinite(volume):
            return Violation(
                "volume_not_finite", "volume", f"volume is {show_value(volume)}; it must be finite"
            )
        if volume < 0:
            return Violation(
                "volume_negative", "volume", f"volume is {show_value(volume)}; it must be >= 0"
            )
        if volume > self.policy.max_volume:
            return Violation(
                "volume_above_bound",
                "volume",
                f"volume is {show_value(volume)}; above contract.max_volume "
                f"{self.policy.max_volume:g}",
            )
        return None

    @staticmethod
    def _check_ohlc(bar: Bar) -> Violation | None:
        if bar.high < bar.low:
            return Violation(
                "ohlc_inconsistent", "high", f"high {bar.high!r} is below low {bar.low!r}"
            )
        for name in ("open", "close"):
            value = getattr(bar, name)
            if not bar.low <= value <= bar.high:
                return Violation(
                    "ohlc_inconsistent",
                    name,
                    f"{name} {value!r} is outside [low {bar.low!r}, high {bar.high!r}]",
                )
        return None

    def _check_ts(self, bar: Bar) -> Violation | None:
        ts = bar.ts
        if ts.tzinfo is None or ts.utcoffset() is None:
            return Violation(
                "ts_naive", "ts", f"ts {ts.isoformat()} has no timezone; add Z or +00:00"
            )
        us = _micros(ts - _EPOCH)
        if us < self._earliest_us:
            return Violation(
                "ts_before_earliest",
                "ts",
                f"ts {ts.isoformat()} is before contract.earliest "
                f"{self.policy.earliest.isoformat()}",
            )
        step = self._steps_us[bar.timeframe]
        limit = int(self.clock() * _US_PER_S) + step + self._skew_us
        if us > limit:
            return Violation(
                "ts_in_future",
                "ts",
                f"ts {ts.isoformat()} is later than now + one {bar.timeframe} bar "
                "(+ contract.clock_skew_seconds); check the source's clock and time zone",
            )
        if (us - self._offsets_us[bar.timeframe]) % step:
            where = (
                f"the daily session boundary {self.policy.daily_session_start:%H:%M} UTC"
                if bar.timeframe == "1d"
                else f"a whole {bar.timeframe}"
            )
            return Violation(
                "ts_misaligned",
                "ts",
                f"ts {ts.isoformat()} is not on {where} (a {bar.timeframe} bar opens there, "
                "with no fractional seconds)",
            )
        return None


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * _US_PER_S + delta.microseconds
