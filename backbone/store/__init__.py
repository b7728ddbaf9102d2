"""Where bars are kept: one :class:`BarStore` contract, a store per tier.

* Tier 0 (bootstrap): :class:`DuckDBStore`, an embedded file, no services.
* Tier 1 (institutional): :class:`TimescaleStore`, PostgreSQL with TimescaleDB
  when the extension exists, native partitioning otherwise.

The DDL for PostgreSQL lives in :mod:`backbone.store.schema`; the write
benchmark in :mod:`backbone.store.bench`. The two stores load on first use, so
a Tier 0 process never imports the PostgreSQL client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from backbone.store.base import BUCKET_ORIGIN, BarStore, StoreError, bucket_label

if TYPE_CHECKING:
    from backbone.store.duckdb import DuckDBStore
    from backbone.store.timescale import TimescaleStore

__all__ = [
    "BUCKET_ORIGIN",
    "BarStore",
    "DuckDBStore",
    "StoreError",
    "TimescaleStore",
    "bucket_label",
]

_LAZY = {"DuckDBStore": "backbone.store.duckdb", "TimescaleStore": "backbone.store.timescale"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
