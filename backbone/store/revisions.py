"""Corrections: what a store does with a re-send of a bar it already holds.

A re-send with exactly the stored values (open, high, low, close, volume) is a
*duplicate* and changes nothing. A re-send with different values is a
*correction*: in market data vendors restate bars, and dropping the restated
values silently (first write wins) is data loss. What happens to it is the
:data:`~backbone.contract.CorrectionPolicy`:

* ``revise`` (the default): the row takes the new values and its ``revision``
  goes up by one; the previous and the new values are kept in ``bar_revision``
  with who changed it, when, and the source of the new values. Nothing is lost
  either way, and the store holds what the source says now.
* ``refuse``: the row is left alone and the re-send is dead-lettered as
  ``correction_conflict`` (its reason names the fields that differ); replay it
  after review with ``backbone dead-letters replay`` under ``revise``.

Both stores apply a batch in *rounds*: the first occurrence of every key, then
the second, and so on, so a bar and its correction in one batch are applied in
the order they came. Each store runs all rounds in one transaction.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from backbone.bars import Bar, bar_to_dict
from backbone.contract import reason
from backbone.deadletter import DeadLetter

__all__ = [
    "AUDIT_COLUMNS",
    "VALUE_FIELDS",
    "WriteOutcome",
    "audit_row",
    "conflict_letter",
    "default_actor",
    "differing_fields",
    "rounds",
]

#: The fields a correction can change (the key and ``source`` are not values).
VALUE_FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
#: Columns of ``bar_revision`` a store writes, in this order.
AUDIT_COLUMNS: tuple[str, ...] = (
    "symbol",
    "timeframe",
    "ts",
    "revision",
    "changed_by",
    "source",
    "old_open",
    "old_high",
    "old_low",
    "old_close",
    "old_volume",
    "new_open",
    "new_high",
    "new_low",
    "new_close",
    "new_volume",
)


@dataclass
class WriteOutcome:
    """What one store write did with each bar it was given.

    ``len(bars) == stored + duplicates + corrections + len(conflicts)``.
    """

    stored: int = 0
    duplicates: int = 0
    corrections: int = 0
    #: (the re-sent bar, the stored bar it would have changed), policy ``refuse``.
    conflicts: list[tuple[Bar, Bar]] = field(default_factory=list)

    def add(self, other: WriteOutcome) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.corrections += other.corrections
        self.conflicts.extend(other.conflicts)


def rounds(bars: Sequence[Bar]) -> list[list[Bar]]:
    """Split ``bars`` so no round repeats a key; the n-th round holds n-th occurrences."""
    out: list[list[Bar]] = []
    seen: dict[tuple[object, ...], int] = {}
    for bar in bars:
        n = seen.get(bar.key, 0)
        seen[bar.key] = n + 1
        if n == len(out):
            out.append([])
        out[n].append(bar)
    return out


def differing_fields(new: Bar, old: Bar) -> list[str]:
    """The value fields where ``new`` differs from ``old`` (empty: a duplicate)."""
    return [f for f in VALUE_FIELDS if getattr(new, f) != getattr(old, f)]


def audit_row(new: Bar, old: Bar, revision: int, changed_by: str) -> tuple[object, ...]:
    """One ``bar_revision`` row in :data:`AUDIT_COLUMNS` order."""
    return (
        new.symbol,
        new.timeframe,
        new.ts,
        revision,
        changed_by,
        new.source,
        *(getattr(old, f) for f in VALUE_FIELDS),
        *(getattr(new, f) for f in VALUE_FIELDS),
    )


def conflict_letter(new: Bar, old: Bar, *, origin: str) -> DeadLetter:
    """The dead letter for a refused correction; the payload is the re-sent bar."""
    changes = ", ".join(
        f"{f} {getattr(old, f)!r} -> {getattr(new, f)!r}" for f in differing_fields(new, old)
    )
    text = reason(
        "correction_conflict",
        f"{new.symbol} {new.timeframe} {new.ts.isoformat()} is stored with other values "
        f"({changes}); contract.corrections is refuse",
    )
    payload = json.dumps(bar_to_dict(new), allow_nan=True).encode()
    return DeadLetter(origin=origin, reason=text, payload=payload)


def default_actor() -> str:
    """Who is writing: ``user@host:pid`` (the audit's ``changed_by``)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}:{os.getpid()}"
