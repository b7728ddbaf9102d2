"""Where bars are kept: one :class:`BarStore` contract, a store per tier.

* Tier 0 (bootstrap): :class:`DuckDBStore`, an embedded file, no services.
* Tier 1 (institutional): :class:`TimescaleStore`, PostgreSQL with TimescaleDB
  when the extension exists, native partitioning otherwise.

The DDL for PostgreSQL lives in :mod:`backbone.store.schema`; the write
benchmark in :mod:`backbone.store.bench`.
"""

from __future__ import annotations

from backbone.store.base import BUCKET_ORIGIN, BarStore, StoreError, bucket_label
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
