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

The value's format is published as a JSON Schema (``bars.v1.schema.json``, in
the package and in ``docs/schemas/``); the decoder checks every bar against it,
then against the bar contract (:class:`backbone.contract.BarContract`): records
from other producers meet the same rules as local ingest.

Decoding never raises: undecodable bytes, a schema version this consumer does not
know, a bar that does not fit the schema or breaks the contract each become a
:class:`~backbone.deadletter.DeadLetter` carrying its reason code and the raw payload.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema
import orjson

from backbone.bars import Bar, bar_from_dict, bar_to_dict, topic_for
from backbone.contract import DEFAULT_POLICY, BarContract, reason, show_value
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
    "bar_schema",
    "batch_records",
    "decode_record",
    "encode_batch",
    "header",
]

SCHEMA_VERSION = 1
#: The published JSON Schema of this version's record value (package data).
SCHEMA_FILE = f"bars.v{SCHEMA_VERSION}.schema.json"
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


@cache
def bar_schema() -> dict[str, Any]:
    """The published JSON Schema of the record value (batch, with ``$defs.bar``)."""
    text = resources.files("backbone.schemas").joinpath(SCHEMA_FILE).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _bar_validator() -> Callable[[Any], Any]:
    return fastjsonschema.compile(bar_schema()["$defs"]["bar"])


def _version_problem(headers: Headers | None) -> str | None:
    raw = header(headers, HEADER_SCHEMA_VERSION)
    if raw is None:
        return reason(
            "schema_version_missing",
            f"the record has no {HEADER_SCHEMA_VERSION} header; producers must send "
            f"{HEADER_SCHEMA_VERSION}: {SCHEMA_VERSION}",
        )
    try:
        version = int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return reason(
            "schema_version_unsupported",
            f"{HEADER_SCHEMA_VERSION} header {show_value(raw)} is not a version number",
        )
    if version not in KNOWN_VERSIONS:
        known = ", ".join(str(v) for v in sorted(KNOWN_VERSIONS))
        return reason(
            "schema_version_unsupported",
            f"{HEADER_SCHEMA_VERSION} {version} is unknown (this consumer reads {known}); "
            "upgrade the consumer, then replay this dead letter",
        )
    return None


def _item_bar(item: Any, key: str | None, contract: BarContract) -> tuple[Bar | None, str | None]:
    try:
        _bar_validator()(item)
    except fastjsonschema.JsonSchemaException as exc:
        return None, reason("schema_violation", f"{exc}"[:200])
    try:
        bar = bar_from_dict(item)
    except Exception as exc:  # hostile input must never stop ingest
        return None, reason("field_unreadable", f"unreadable bar: {exc}"[:200])
    admitted = contract.admit(bar)
    if not isinstance(admitted, Bar):
        return None, admitted.reason
    if key is not None and admitted.symbol != key:
        return None, reason(
            "record_key_mismatch",
            f"symbol {show_value(admitted.symbol)} does not match the record key {show_value(key)}",
        )
    return admitted, None


def decode_record(
    value: bytes | None,
    headers: Headers | None,
    *,
    key: bytes | None = None,
    origin: str,
    contract: BarContract | None = None,
) -> DecodedRecord:
    """Read one consumed record; never raises.

    ``origin`` names where the record came from (``topic/partition/offset``) and
    is copied onto every dead letter, so an operator can find the original.
    ``contract`` defaults to the default policy's.
    """
    rules = contract or _default_contract()
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
            why = reason("record_undecodable", f"value is not JSON: {type(exc).__name__}: {exc}")
            out.dead_letters.append(DeadLetter(origin=origin, reason=why[:240], payload=payload))
            return out
        if not isinstance(items, list) or not items:
            why = reason("schema_violation", "the value is not a non-empty JSON array of bars")
            out.dead_letters.append(DeadLetter(origin=origin, reason=why, payload=payload))
            return out
        symbol: str | None = None
        if key is not None:
            # An undecodable key matches no bar: each is dead-lettered with the reason.
            symbol = key.decode("utf-8", "replace")
        for item in items:
            bar, problem = _item_bar(item, symbol, rules)
            if bar is not None:
                out.bars.append(bar)
            else:
                out.dead_letters.append(
                    DeadLetter(origin=origin, reason=str(problem), payload=_dump(item))
                )
    except Exception as exc:  # last line of defence: report, never stop ingest
        why = reason("decoder_error", f"{type(exc).__name__}: {exc}")[:240]
        out.bars.clear()
        out.dead_letters = [DeadLetter(origin=origin, reason=why, payload=value or b"")]
    return out


@cache
def _default_contract() -> BarContract:
    return BarContract(DEFAULT_POLICY)
