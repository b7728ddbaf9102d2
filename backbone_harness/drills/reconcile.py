"""Reconciliation: what was acknowledged against what a reader found afterwards.

A drill records the key of every bar the system *acknowledged* (the call that
wrote it returned). After recovery a reader lists the keys it finds where the
bars must be (the store, a Kafka partition), once per copy found. The verdict
is plain set arithmetic, kept here apart from any I/O so it can be specified
with generated inputs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Reconciliation", "reconcile"]


@dataclass(frozen=True)
class Reconciliation:
    """Counts of one reconciliation; ``lost_acknowledged`` must be 0."""

    #: Distinct keys the writer saw acknowledged.
    acknowledged: int
    #: Distinct keys the reader found.
    stored: int
    #: Acknowledged keys the reader did not find: data the system promised and lost.
    lost_acknowledged: int
    #: Extra copies the reader found (a key found three times counts 2).
    duplicates: int
    #: Keys found that were never acknowledged (a write that failed *after* it
    #: landed): allowed — the writer retries them, the idempotent store absorbs them.
    stored_unacknowledged: int
    #: Up to ten lost keys, to start the investigation with.
    lost_examples: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "acknowledged": self.acknowledged,
            "stored": self.stored,
            "lost_acknowledged": self.lost_acknowledged,
            "duplicates": self.duplicates,
            "stored_unacknowledged": self.stored_unacknowledged,
            "lost_examples": list(self.lost_examples),
        }


def reconcile(acknowledged: Iterable[Hashable], found: Iterable[Hashable]) -> Reconciliation:
    """Compare acknowledged keys with the keys a reader found (one entry per copy)."""
    acked = set(acknowledged)
    copies = Counter(found)
    present = set(copies)
    lost = acked - present
    return Reconciliation(
        acknowledged=len(acked),
        stored=len(present),
        lost_acknowledged=len(lost),
        duplicates=sum(n - 1 for n in copies.values()),
        stored_unacknowledged=len(present - acked),
        lost_examples=tuple(sorted(str(k) for k in lost)[:10]),
    )
