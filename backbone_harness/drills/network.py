"""Drills: the network path from the clients to the PostgreSQL primary, cut or slowed.

The node stays healthy; the *path* fails. A Toxiproxy server of the drill
forwards a loopback listener to the primary (found by role when the drill
starts), and the writer's store (``TimescaleStore``, the backbone's public
store API) connects through that listener only. Then:

* ``network-partition``: a ``timeout`` toxic on both directions drops every
  byte and closes each connection after ``PARTITION_CLOSE_MS`` (as a client's
  keepalive or timeout would find a silent peer), so in-flight commits lose
  their outcome and new connections hang, for the hold; then the path heals.
  A commit whose reply was lost is retried with the same bars: the upsert's
  key makes the retry store nothing twice (``stored_unacknowledged`` counts
  commits that landed without their reply).
* ``network-latency``: a ``latency`` toxic, ``LATENCY_MS`` ± ``JITTER_MS``
  on every reply; writes slow down (the report compares median write times),
  none may be lost.

The reader checks the primary directly (not through the proxy), after the heal.
Kafka is not proxied here: a proxied broker would have to advertise the proxy's
address to its clients, which the local renderer does not do yet.
"""

from __future__ import annotations

import contextlib
import secrets
import statistics
import threading
import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any

from backbone.bars import Bar
from backbone.connections import HostPort
from backbone.settings import TimescaleConnectionSettings
from backbone.store.timescale import TimescaleStore
from backbone_harness.drills.base import Drill, Fault, wait_until
from backbone_harness.drills.toxiproxy import Proxy, Toxiproxy
from backbone_harness.drills.writer import DRILL_SPAN, drill_bars
from backbone_harness.stacks import Stack

__all__ = ["NetworkLatencyDrill", "NetworkPartitionDrill"]

TOXIC = "drill"
PATH_ROLE = "the network path from the clients to the PostgreSQL primary"
#: A partitioned connection is closed after this long (both directions silent till then).
PARTITION_CLOSE_MS = 2000
LATENCY_MS = 200
JITTER_MS = 50


@dataclass(frozen=True)
class PathFault(Fault):
    """A fault on the path to a node; the node itself is never touched. The drill
    applies it (toxics); an undo by the runner after a failure is the drill's
    ``close``, which stops Toxiproxy and with it every proxied connection."""

    def apply(self, stack: Stack, node: str) -> None:
        raise TypeError("a path fault is applied by its drill's inject, not to a node")

    def undo(self, stack: Stack, node: str) -> None:
        """Nothing to restart: the node was never touched."""


class _PrimaryPathDrill(Drill):
    """Shared by both network drills: the proxy, the writer's store, the reader."""

    min_acknowledged = 200
    environments = ("local",)
    needs = (
        "the Toxiproxy path drills are wired to the local process stack; compose "
        "partitions for real with container-partition (a container off its network)"
    )

    def __init__(self, stack: Any) -> None:
        super().__init__(stack)
        doc = stack.document
        if doc.timescale is None:
            raise ValueError(f"stack {stack.name!r} has no PostgreSQL; drills need an ha stack")
        self.timescale = doc.timescale
        self.symbols = [f"DN{secrets.token_hex(2).upper()}{i}" for i in range(4)]
        self.toxiproxy = Toxiproxy(stack.dir / "logs" / f"toxiproxy-{self.name}.log")
        self.proxy: Proxy | None = None
        self.store: TimescaleStore | None = None
        self.reader: TimescaleStore | None = None
        self._lock = threading.Lock()
        #: (monotonic end, seconds) of every acknowledged write.
        self._writes: list[tuple[float, float]] = []
        self._fault_at: float | None = None
        self._healed_at: float | None = None

    def target(self) -> str:
        return self.stack.postgres_primary()

    def prepare(self) -> None:
        primary = self.target()
        port = self.stack.node_ports(primary)["client"]
        self.toxiproxy.start()
        self.proxy = self.toxiproxy.proxy(f"postgres-{primary}", "127.0.0.1", port)
        proxied = self.timescale.model_copy(
            update={"hosts": [HostPort(host=self.proxy.host, port=self.proxy.port)]}
        )
        self.figures["proxied"] = f"{self.proxy.host}:{self.proxy.port} -> {self.proxy.upstream}"
        self.store = TimescaleStore(
            TimescaleConnectionSettings.from_section(proxied, pool_max_size=2), timeout=10.0
        )
        self.reader = TimescaleStore(
            TimescaleConnectionSettings.from_section(self.timescale, pool_max_size=1), timeout=30.0
        )

    def bars(self) -> Iterator[Bar]:
        return drill_bars(self.symbols, "1m")

    def write(self, bars: list[Bar]) -> None:
        assert self.store is not None
        began = time.monotonic()
        self.store.write(bars)
        ended = time.monotonic()
        with self._lock:
            self._writes.append((ended, ended - began))

    def toxics(self) -> list[tuple[str, str, dict[str, int]]]:
        """(name, type, attributes) of the toxics that make this fault."""
        raise NotImplementedError

    def inject(self, node: str) -> None:
        assert self.proxy is not None
        for stream, kind, attributes in self.toxics():
            self.toxiproxy.add_toxic(self.proxy, f"{TOXIC}-{stream}", kind, stream, **attributes)
        self._fault_at = time.monotonic()

    def recover(self, node: str) -> None:
        assert self.proxy is not None
        for stream, _kind, _attributes in self.toxics():
            self.toxiproxy.remove_toxic(self.proxy, f"{TOXIC}-{stream}")
        self._healed_at = time.monotonic()
        count = len(self._writes)
        self.figures["first_write_after_heal_s"] = round(
            wait_until(lambda: len(self._writes) > count, 60, "a write through the healed path"),
            2,
        )

    def _median_ms(self, since: float, until: float) -> float | None:
        with self._lock:
            took = [s for end, s in self._writes if since <= end - s and end <= until]
        return round(statistics.median(took) * 1000, 1) if took else None

    def found_keys(self, acknowledged: list[Any]) -> list[Hashable]:
        reader = self.reader
        assert reader is not None
        fault_at = self._fault_at or 0.0
        healed_at = self._healed_at or time.monotonic()
        self.figures["median_write_ms_before"] = self._median_ms(0.0, fault_at)  # type: ignore[assignment]
        self.figures["median_write_ms_during"] = self._median_ms(fault_at, healed_at)  # type: ignore[assignment]
        self.figures["median_write_ms_after"] = self._median_ms(healed_at, float("inf"))  # type: ignore[assignment]
        with self._lock:
            self.figures["writes_acknowledged_during_fault"] = sum(
                1 for end, _ in self._writes if fault_at < end < healed_at
            )
        if self.store is not None:
            self.figures["store_transactions_retried"] = self.store.retried_transactions
        found: list[Hashable] = []
        for symbol in self.symbols:
            found.extend(b.key for b in reader.read(symbol, "1m", *DRILL_SPAN))
        return found

    def close(self) -> None:
        for part in (self.store, self.reader):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.close()
        self.toxiproxy.stop()


class NetworkPartitionDrill(_PrimaryPathDrill):
    name = "network-partition"
    summary = (
        "cut the path from the clients to the PostgreSQL primary (every byte dropped) for "
        "the hold, then heal it: writes fail, nothing acknowledged is lost or stored twice"
    )
    fault = PathFault(
        role="the network path from the clients to the PostgreSQL primary", kind="cut"
    )

    def toxics(self) -> list[tuple[str, str, dict[str, int]]]:
        close = {"timeout": PARTITION_CLOSE_MS}
        return [("upstream", "timeout", close), ("downstream", "timeout", close)]

    def during_fault(self, node: str) -> None:
        # The partition must be seen by the writer: its next write fails or hangs.
        count = len(self._writes)
        time.sleep(PARTITION_CLOSE_MS / 1000 + 1.0)
        self.figures["writes_acknowledged_in_first_s_of_partition"] = len(self._writes) - count


class NetworkLatencyDrill(_PrimaryPathDrill):
    name = "network-latency"
    summary = (
        f"add {LATENCY_MS} ms ± {JITTER_MS} ms to every reply from the PostgreSQL primary: "
        "writes slow down, none is lost"
    )
    fault = PathFault(
        role="the network path from the clients to the PostgreSQL primary", kind="slow"
    )

    def toxics(self) -> list[tuple[str, str, dict[str, int]]]:
        return [("downstream", "latency", {"latency": LATENCY_MS, "jitter": JITTER_MS})]

    def during_fault(self, node: str) -> None:
        count = len(self._writes)
        wait_until(lambda: len(self._writes) >= count + 5, 60, "writes through the slow path")

    def found_keys(self, acknowledged: list[Any]) -> list[Hashable]:
        found = super().found_keys(acknowledged)
        during = self.figures.get("median_write_ms_during")
        if not isinstance(during, float) or during < LATENCY_MS - JITTER_MS:
            self.problems.append(
                f"writes during the fault took {during} ms (median): the latency did not apply"
            )
        return found
