"""What every benchmark figure carries: its value, its ceiling, the ratio, the load.

A rate on a shared 2-core machine means little on its own; the same rate next to
the ceiling measured seconds before on the same stack, with the load average at
that moment, does. :func:`figure` builds that record; :func:`profiled` names the
function a path spends most of its own time in (cProfile), so the report can
say what the bottleneck is rather than guess.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["Log", "bottleneck", "figure", "load_average", "profile_file", "profiled"]

Log = Callable[[str], None]
T = TypeVar("T")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def figure(
    path: str,
    ours: str,
    value: float,
    unit: str,
    ceiling: str,
    ceiling_value: float,
    **extra: Any,
) -> dict[str, Any]:
    """One row of the report: ``value`` of ``ours`` against ``ceiling_value`` of ``ceiling``.

    The load average is read when the figure is made (right after its measurement).
    """
    return {
        "path": path,
        "ours": ours,
        "value": round(value, 2),
        "unit": unit,
        "ceiling": ceiling,
        "ceiling_value": round(ceiling_value, 2),
        "ratio": round(value / ceiling_value, 3) if ceiling_value else None,
        "load_average": load_average(),
        **extra,
    }


@dataclass(frozen=True)
class Hotspot:
    """A function and its share of a profile's own (exclusive) time."""

    function: str
    share: float

    def as_dict(self) -> dict[str, Any]:
        return {"function": self.function, "share_of_own_time": round(self.share, 3)}


def _name(key: tuple[str, int, str]) -> str:
    file, line, func = key
    if file == "~":  # a C function: cProfile names it '<built-in method ...>'
        return func
    parts = Path(file).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else file
    return f"{func} ({short}:{line})"


#: Own time spent importing modules: a process's start-up, not the path measured.
_IMPORTS = re.compile(r"marshal\.loads|builtins\.exec|_imp\.|open_code|importlib|posix\.stat")
#: Own time spent waiting: on a socket, a lock (another thread's I/O), or a server.
_WAITS = re.compile(r"_thread\.lock|select|poll|socket|wait \(psycopg|sleep|_fetch_gen")


def _kind(name: str) -> str:
    return "I/O or wait" if _WAITS.search(name) else "CPU"


def bottleneck(stats: pstats.Stats, top: int = 3) -> list[dict[str, Any]]:
    """The ``top`` functions by own time, with their share of the total and whether
    that time is CPU or waiting (I/O, locks); start-up imports are left out."""
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = [(_name(key), row[2]) for key, row in table.items()]
    rows = [(name, own) for name, own in rows if not _IMPORTS.search(name)]
    total = sum(own for _, own in rows) or 1.0
    ranked = sorted(rows, key=lambda r: r[1], reverse=True)[:top]
    return [{**Hotspot(name, own / total).as_dict(), "kind": _kind(name)} for name, own in ranked]


def profiled(work: Callable[[], T]) -> tuple[T, list[dict[str, Any]]]:
    """Run ``work`` under cProfile; its result and its top functions by own time."""
    profile = cProfile.Profile()
    result = profile.runcall(work)
    return result, bottleneck(pstats.Stats(profile))


def profile_file(path: Path) -> list[dict[str, Any]]:
    """:func:`bottleneck` of a profile another process wrote (``python -m cProfile -o``)."""
    return bottleneck(pstats.Stats(str(path)))
