"""The Kafka record format for bars, and how a hostile record becomes dead letters.

One record carries a *batch* of bars of one symbol and one timeframe:

- **key**: the symbol (UTF-8), so all of a symbol's bars land in one partition
  and stay in order;
- **value**: a JSON array of bars in :func:`backbone.bars.bar_to_dict` form,
  oldest first; up to :data:`MAX_BARS_PER_RECORD` bars per record (batching is
  what makes the end-to-end rate; see ``docs/streaming.md``);
- **headers**: ``schema-version`` (``1``), ``content-type``, and optionally
  ``backfill`` (the replay run that produced it) and ``idempotency-key``
  (``SYMBOL|TIMEFRAME|FIRST_TS..LAST_TS`` of the batch).

Decoding never raises: undecodable bytes, a schema version this consumer does not
know, or a bar that breaks a rule (:func:`backbone.bars.bar_problem`) each become a
:class:`~backbone.deadletter.DeadLetter` carrying the reason and the raw payload.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from backbone.bars import Bar, bar_from_dict, bar_problem, bar_to_dict, topic_for
from backbone.deadletter import DeadLetter

__all__ = [
    "CONTENT_TYPE",
    "HEADER_BACKFILL",
    "HEADER_CONTENT_TYPE",
    "HEADER_IDEMPOTENCY_KEY",
    "HEADER_REASON",
    "HEADER_SCHEMA_VERSION",
    "MAX_BARS_PER_RECORD",
    "SCHEMA_VERSION",
    "BarRecord",
    "DecodedRecord",
    "bar_idempotency_key",
    "batch_records",
    "decode_record",
    "encode_batch",
    "header",
]

SCHEMA_VERSION = 1
#: Versions :func:`decode_record` reads. A newer producer must bump the version.
KNOWN_VERSIONS: frozenset[int] = frozenset({SCHEMA_VERSION})
CONTENT_TYPE = "application/vnd.backbone.bars+json"
HEADER_SCHEMA_VERSION = "schema-version"
HEADER_CONTENT_TYPE = "content-type"
HEADER_BACKFILL = "backfill"
HEADER_IDEMPOTENCY_KEY = "idempotency-key"
#: On dead-letter records: why the payload was rejected.
HEADER_REASON = "reason"
#: Bars per record. 500 bars is ~90 KB of JSON, well under the 1 MB default
#: ``max.message.bytes``, and amortises the per-record cost.
MAX_BARS_PER_RECORD = 500

Headers = Sequence[tuple[str, bytes | None]]


@dataclass(frozen=True, slots=True)
class BarRecord:
    """One Kafka record ready to send; ``logical_topic`` is a key of ``TOPIC_NAMES``."""

    logical_topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    bars: int


@dataclass(slots=True)
class DecodedRecord:
    """What one consumed record held: valid bars, and dead letters for the rest.

    ``items`` is the unit the counts reconcile in: every bar in a readable batch
    is one item, and a record that cannot be read at all is one item.
    """

    bars: list[Bar] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    backfill: str | None = None

    @property
    def items(self) -> int:
        return len(self.bars) + len(self.dead_letters)


def bar_idempotency_key(bar: Bar) -> str:
    """``SYMBOL|TIMEFRAME|ISO_TS``: the identity replay uses to skip what a topic holds."""
    return f"{bar.symbol}|{bar.timeframe}|{bar.ts.isoformat()}"


def encode_batch(bars: Sequence[Bar], *, backfill: str | None = None) -> BarRecord:
    """Encode bars of one symbol and timeframe as one record.

    Raises :class:`ValueError` for an empty batch or mixed symbols/timeframes:
    that is a programming error of the caller, not bad market data.
    """
    if not bars:
        raise ValueError("encode_batch needs at least one bar")
    first = bars[0]
    if any(b.symbol != first.symbol or b.timeframe != first.timeframe for b in bars):
        raise ValueError("encode_batch takes bars of one symbol and one timeframe")
    # orjson writes a Bar dataclass as exactly its bar_to_dict() fields (ts in
    # ISO-8601 with its offset), ~5x faster than the json module. NaN/inf become
    # null: a caller that skips validation still gets such bars dead-lettered.
    try:
        value = orjson.dumps(list(bars))
    except orjson.JSONEncodeError:  # e.g. a lone surrogate in a symbol: json escapes it
        value = json.dumps([bar_to_dict(b) for b in bars], separators=(",", ":")).encode()
    headers = [
        (HEADER_SCHEMA_VERSION, str(SCHEMA_VERSION).encode()),
        (HEADER_CONTENT_TYPE, CONTENT_TYPE.encode()),
    ]
    if backfill is not None:
        key = f"{first.symbol}|{first.timeframe}|{first.ts.isoformat()}..{bars[-1].ts.isoformat()}"
        headers.append((HEADER_BACKFILL, backfill.encode()))
        headers.append((HEADER_IDEMPOTENCY_KEY, key.encode()))
    return BarRecord(
        logical_topic=topic_for(first.timeframe),
        key=first.symbol.encode(),
        value=value,
        headers=headers,
        bars=len(bars),
    )


def batch_records(
    bars: Iterable[Bar],
    *,
    max_bars: int = MAX_BARS_PER_RECORD,
    backfill: str | None = None,
) -> Iterator[BarRecord]:
    """Group bars by (symbol, timeframe), keeping each group's order, into records.

    Bars are not validated here: a bad bar travels to the consumer, which
    dead-letters it with the reason, so every path reports bad input the same way.
    """
    if max_bars < 1:
        raise ValueError("max_bars must be at least 1")
    groups: dict[tuple[str, str], list[Bar]] = {}
    for bar in bars:
        group = groups.setdefault((bar.symbol, bar.timeframe), [])
        group.append(bar)
        if len(group) >= max_bars:
            yield encode_batch(group, backfill=backfill)
            groups[(bar.symbol, bar.timeframe)] = []
    for group in groups.values():
        if group:
            yield encode_batch(group, backfill=backfill)


def header(headers: Headers | None, name: str) -> bytes | None:
    """The last value of header ``name``, or ``None``."""
    found: bytes | None = None
    for key, value in headers or ():
        if key == name:
            found = value
    return found


def _dump(item: Any) -> bytes:
    try:
        return json.dumps(item, separators=(",", ":"), default=repr).encode()
    except (ValueError, TypeError, RecursionError):
        return repr(item).encode("utf-8", "backslashreplace")


def _loads(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        # Other producers may write NaN/Infinity tokens (not JSON, but Python's
        # json reads them); read them so each such bar gets its own reason.
        return json.loads(payload)


def _version_problem(headers: Headers | None) -> str | None:
    raw = header(headers, HEADER_SCHEMA_VERSION)
    if raw is None:
        return f"missing {HEADER_SCHEMA_VERSION} header"
    try:
        version = int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return f"unreadable {HEADER_SCHEMA_VERSION} header {raw[:32]!r}"
    if version not in KNOWN_VERSIONS:
        known = ", ".join(str(v) for v in sorted(KNOWN_VERSIONS))
        return f"unknown schema version {version} (this consumer reads {known})"
    return None


def _item_bar(item: Any, key: str | None) -> tuple[Bar | None, str | None]:
    if not isinstance(item, dict):
        return None, f"bar is not an object but {type(item).__name__}"
    for name in ("symbol", "timeframe", "ts"):
        if not isinstance(item.get(name), str):
            return None, f"field {name!r} missing or not a string"
    try:
        bar = bar_from_dict(item)
    except Exception as exc:  # hostile input must never stop ingest
        return None, f"unreadable bar: {exc}"[:200]
    problem = bar_problem(bar)
    if problem is not None:
        return None, problem
    if key is not None and bar.symbol != key:
        return None, f"symbol {bar.symbol[:40]!r} does not match record key {key[:40]!r}"
    return bar, None


def decode_record(
    value: bytes | None, headers: Headers | None, *, key: bytes | None = None, origin: str
) -> DecodedRecord:
    """Read one consumed record; never raises.

    ``origin`` names where the record came from (``topic/partition/offset``) and
    is copied onto every dead letter, so an operator can find the original.
    """
    out = DecodedRecord()
    try:
        backfill = header(headers, HEADER_BACKFILL)
        out.backfill = backfill.decode("utf-8", "replace") if backfill is not None else None
        payload = value if value is not None else b""
        problem = _version_problem(headers)
        if problem is not None:
            out.dead_letters.append(DeadLetter(origin=origin, reason=problem, payload=payload))
            return out
        try:
            items = _loads(payload)
        except (ValueError, RecursionError) as exc:
            reason = f"undecodable value: {type(exc).__name__}: {exc}"[:200]
            out.dead_letters.append(DeadLetter(origin=origin, reason=reason, payload=payload))
            return out
        if not isinstance(items, list) or not items:
            reason = "value is not a non-empty JSON array of bars"
            out.dead_letters.append(DeadLetter(origin=origin, reason=reason, payload=payload))
            return out
        symbol: str | None = None
        if key is not None:
            # An undecodable key matches no bar: each is dead-lettered with the reason.
            symbol = key.decode("utf-8", "replace")
        for item in items:
            bar, problem = _item_bar(item, symbol)
            if bar is not None:
                out.bars.append(bar)
            else:
                out.dead_letters.append(
                    DeadLetter(origin=origin, reason=str(problem), payload=_dump(item))
                )
    except Exception as exc:  # last line of defence: report, never stop ingest
        reason = f"decoder error: {type(exc).__name__}: {exc}"[:200]
        out.bars.clear()
        out.dead_letters = [DeadLetter(origin=origin, reason=reason, payload=value or b"")]
    return out
