"""Dead letters: records the backbone could not ingest, kept with the reason.

Nothing is silently dropped. A record that cannot be read or that breaks a
bar rule becomes a :class:`DeadLetter` carrying where it came from, why it was
refused and its original bytes; the stores keep them in a ``dead_letter``
table and the streaming layer sends them to ``market-data.dead-letter``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["DeadLetter", "RejectedRecord", "StoredDeadLetter"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One refused record.

    ``origin`` says where it came from (``csv:PATH:LINE``, ``kafka:TOPIC/P@OFFSET``,
    ``synthetic`` ...), ``reason`` is ``"CODE: sentence"`` — a stable code from
    :data:`backbone.contract.REASON_CODES` and words a person can act on — and
    ``payload`` is the record as received (or its JSON form), so it can be
    inspected and re-driven later.
    """

    origin: str
    reason: str
    payload: bytes


#: The name readers use for what they hand back instead of a bar; the same type,
#: so a reader's rejects go straight to ``BarStore.write_dead_letters``.
RejectedRecord = DeadLetter


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """A dead letter as a store keeps it: with its id, when it came, and whether
    it was re-submitted (``backbone dead-letters replay``)."""

    id: int
    received_at: datetime
    origin: str
    reason: str
    payload: bytes
    replayed_at: datetime | None = None
