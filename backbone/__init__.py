"""The market-data backbone client: one API for both tiers.

    from backbone import Backbone, Bar, load_connections

    with Backbone.open(tier="bootstrap") as bb:      # DuckDB, in-process cache and bus
        bb.ingest(bars)

``Backbone.open(tier="institutional", outputs=...)`` runs the same calls on
TimescaleDB/PostgreSQL, Redis and Kafka, found through the stack's
``backbone.connections/v1`` outputs document (:func:`load_connections`). The
names below are imported on first use, so ``import backbone`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from backbone.version import package_version

if TYPE_CHECKING:
    from backbone.bars import Bar
    from backbone.connections import ConnectionsDocument
    from backbone.outputs import load_connections
    from backbone.runtime import Backbone, IngestResult

__all__ = [
    "Backbone",
    "Bar",
    "ConnectionsDocument",
    "IngestResult",
    "__version__",
    "load_connections",
]

#: The installed distribution's version.
__version__ = package_version()

_LAZY = {
    "Backbone": "backbone.runtime",
    "IngestResult": "backbone.runtime",
    "Bar": "backbone.bars",
    "ConnectionsDocument": "backbone.connections",
    "load_connections": "backbone.outputs",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'backbone' has no attribute {name!r}")
