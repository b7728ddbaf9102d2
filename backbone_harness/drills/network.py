"""Drills: a client path cut or slowed, the node behind it untouched.

The node stays healthy; the *path* fails. A Toxiproxy server of the drill
forwards loopback listeners to the nodes, the drill's writer connects through
them only, and the fault is a *toxic* on the path to the node that plays the
role (found when the drill starts):

* a **cut** (``network-partition*``): a ``timeout`` toxic on both directions
  drops every byte and closes each connection after ``PARTITION_CLOSE_MS`` (as
  a client's keepalive or timeout would find a silent peer), so in-flight
  requests lose their outcome and new connections hang, for the hold; then
  the path heals. What was not acknowledged is retried with the same bars.
* a **slow link** (``network-latency*``): a ``latency`` toxic, ``LATENCY_MS``
  ± ``JITTER_MS`` on every reply; writes slow down (the report compares median
  write times before, during and after), none may be lost.

Two paths, each with both faults. This module: the path from the clients to
the **PostgreSQL primary** (``network-partition``, ``network-latency``): one
proxy in front of the primary, the writer's ``TimescaleStore`` connects to it
alone. A commit whose reply was lost is retried with the same bars: the
upsert's key makes the retry store nothing twice (``stored_unacknowledged``
counts commits that landed without their reply). The reader checks the
primary directly, after the heal. The path to the **Kafka partition leader**
is in :mod:`backbone_harness.drills.network_kafka`.

Under ``--load`` the load's clients take the proxied path too
(:meth:`~backbone_harness.drills.base.Drill.load_outputs`).
"""

from __future__ import annotations

import contextlib
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backbone.bars import Bar
from backbone.connections import HostPort, write_document
from backbone.job_logins import harness_section
from backbone.settings import TimescaleConnectionSettings
from backbone.store.timescale import TimescaleStore
from backbone_harness.drills.base import Drill, Fault, wait_until
from backbone_harness.drills.toxiproxy import Proxy, Toxiproxy
from backbone_harness.drills.writer import drill_bars, stored_keys
from backbone_harness.stacks import Stack

__all__ = [
    "JITTER_MS",
    "LATENCY_MS",
    "PARTITION_CLOSE_MS",
    "NetworkLatencyDrill",
    "NetworkPartitionDrill",
    "PathDrill",
    "PathFault",
]

TOXIC = "drill"
#: A partitioned connection is closed after this long (both directions silent till then).
PARTITION_CLOSE_MS = 2000
LATENCY_MS = 200
JITTER_MS = 50
Toxics = list[tuple[str, str, dict[str, int]]]


@dataclass(frozen=True)
class PathFault(Fault):
    """A fault on the path to a node; the node itself is never touched. The drill
    applies it (toxics); an undo by the runner after a failure is the drill's
    ``close``, which stops Toxiproxy and with it every proxied connection."""

    def apply(self, stack: Stack, node: str) -> None:
        raise TypeError("a path fault is applied by its drill's inject, not to a node")

    def undo(self, stack: Stack, node: str) -> None:
        """Nothing to restart: the node was never touched."""


class PathDrill(Drill):
    """The machinery of every path drill: Toxiproxy with one proxy per node
    (``proxies``), the toxics on the faulted node's proxy, and every write timed.

    A concrete drill opens its proxies and clients in ``prepare`` (through
    :meth:`open_proxy`), writes through :meth:`timed`, and takes the fault's
    toxics from a flavour (:class:`CutPath`, :class:`SlowPath`).
    """

    environments = ("local",)
    needs = (
        "the Toxiproxy path drills are wired to the local process stack (the Kafka "
        "ones to its DRILL listeners); compose partitions for real with "
        "container-partition (a container off its network)"
    )

    def __init__(self, stack: Any) -> None:
        super().__init__(stack)
        self.toxiproxy = Toxiproxy(stack.dir / "logs" / f"toxiproxy-{self.name}.log")
        self.proxies: dict[str, Proxy] = {}
        self._lock = threading.Lock()
        #: (monotonic end, seconds) of every acknowledged write.
        self._writes: list[tuple[float, float]] = []
        self._fault_at: float | None = None
        self._healed_at: float | None = None

    def toxics(self) -> Toxics:
        """(stream, type, attributes) of the toxics that make this fault."""
        raise NotImplementedError

    def open_proxy(self, node: str, upstream_port: int, *, listen_port: int | None = None) -> Proxy:
        """A proxy to ``node``'s ``upstream_port`` (Toxiproxy started on first use)."""
        if not self.proxies:
            self.toxiproxy.start()
        proxy = self.toxiproxy.proxy(
            f"{self.name}-{node}", "127.0.0.1", upstream_port, listen_port=listen_port
        )
        self.proxies[node] = proxy
        return proxy

    def timed(self, write: Callable[[], object]) -> None:
        """Run one write; record its end and duration once it returned."""
        began = time.monotonic()
        write()
        ended = time.monotonic()
        with self._lock:
            self._writes.append((ended, ended - began))

    def writes_done(self) -> int:
        with self._lock:
            return len(self._writes)

    def inject(self, node: str) -> None:
        proxy = self.proxies[node]
        for stream, kind, attributes in self.toxics():
            self.toxiproxy.add_toxic(proxy, f"{TOXIC}-{stream}", kind, stream, **attributes)
        self._fault_at = time.monotonic()

    def recover(self, node: str) -> None:
        proxy = self.proxies[node]
        for stream, _kind, _attributes in self.toxics():
            self.toxiproxy.remove_toxic(proxy, f"{TOXIC}-{stream}")
        self._healed_at = time.monotonic()
        count = self.writes_done()
        self.figures["first_write_after_heal_s"] = round(
            wait_until(lambda: self.writes_done() > count, 120, "a write through the healed path"),
            2,
        )

    def _median_ms(self, since: float, until: float) -> float | None:
        with self._lock:
            took = [s for end, s in self._writes if since <= end - s and end <= until]
        return round(statistics.median(took) * 1000, 1) if took else None

    def path_figures(self) -> None:
        """Median write times before, during and after the fault; writes during it."""
        fault_at = self._fault_at or 0.0
        healed_at = self._healed_at or time.monotonic()
        self.figures["median_write_ms_before"] = self._median_ms(0.0, fault_at)  # type: ignore[assignment]
        self.figures["median_write_ms_during"] = self._median_ms(fault_at, healed_at)  # type: ignore[assignment]
        self.figures["median_write_ms_after"] = self._median_ms(healed_at, float("inf"))  # type: ignore[assignment]
        with self._lock:
            self.figures["writes_acknowledged_during_fault"] = sum(
                1 for end, _ in self._writes if fault_at < end < healed_at
            )

    def close(self) -> None:
        super().close()
        self.toxiproxy.stop()


class CutPath(PathDrill):
    """The flavour of a partition: every byte dropped both ways, for the hold."""

    def toxics(self) -> Toxics:
        close = {"timeout": PARTITION_CLOSE_MS}
        return [("upstream", "timeout", close), ("downstream", "timeout", close)]

    def during_fault(self, node: str) -> None:
        # The partition must be seen by the writer: a write begun after the cut
        # fails or hangs. Counted by when each write began, not by a count read
        # after the cut: a write whose reply crossed the path just before the
        # toxic landed may be recorded a moment later, and was no write through
        # the cut.
        cut_at = self._fault_at or time.monotonic()
        window_end = cut_at + PARTITION_CLOSE_MS / 1000 + 1.0
        time.sleep(max(0.0, window_end - time.monotonic()))
        with self._lock:
            self.figures["writes_acknowledged_in_first_s_of_partition"] = sum(
                1 for end, took in self._writes if end - took >= cut_at and end <= window_end
            )


class SlowPath(PathDrill):
    """The flavour of a slow link: ``LATENCY_MS`` ± ``JITTER_MS`` on every reply."""

    def toxics(self) -> Toxics:
        return [("downstream", "latency", {"latency": LATENCY_MS, "jitter": JITTER_MS})]

    def during_fault(self, node: str) -> None:
        count = self.writes_done()
        wait_until(lambda: self.writes_done() >= count + 5, 60, "writes through the slow path")

    def path_figures(self) -> None:
        super().path_figures()
        during = self.figures.get("median_write_ms_during")
        if not isinstance(during, float) or during < LATENCY_MS - JITTER_MS:
            self.problems.append(
                f"writes during the fault took {during} ms (median): the latency did not apply"
            )


class _PrimaryPathDrill(PathDrill):
    """The path to the PostgreSQL primary: the proxy, the writer's store, the reader."""

    min_acknowledged = 200

    def __init__(self, stack: Any) -> None:
        super().__init__(stack)
        doc = stack.document
        if doc.timescale is None:
            raise ValueError(f"stack {stack.name!r} has no PostgreSQL; drills need an ha stack")
        self.timescale = doc.timescale
        self.symbols = [f"DN{secrets.token_hex(2).upper()}{i}" for i in range(4)]
        self.store: TimescaleStore | None = None
        self.reader: TimescaleStore | None = None
        self._load_outputs: Path | None = None

    def target(self) -> str:
        return self.stack.postgres_primary()

    def prepare(self) -> None:
        primary = self.target()
        proxy = self.open_proxy(primary, self.stack.node_ports(primary)["client"])
        through_proxy = {"hosts": [HostPort(host=proxy.host, port=proxy.port)]}
        proxied = self.timescale.model_copy(update=through_proxy)
        self.figures["proxied"] = f"{proxy.host}:{proxy.port} -> {proxy.upstream}"
        # The store writes bars: the consumer's login, as Backbone's store. The
        # read-back only SELECTs: the reader's (no staging table, no schema).
        doc = self.stack.document
        self.store = TimescaleStore(
            TimescaleConnectionSettings.from_section(
                harness_section(doc, "store").model_copy(update=through_proxy), pool_max_size=2
            ),
            timeout=10.0,
        )
        self.reader = TimescaleStore(
            TimescaleConnectionSettings.from_section(
                harness_section(doc, "store-reader"), pool_max_size=1
            ),
            timeout=30.0,
            read_only=True,
        )
        self._load_outputs = write_document(
            self.stack.document.model_copy(update={"timescale": proxied}),
            self.stack.dir / "drills" / f"{self.name}-outputs.json",
        )

    def load_outputs(self) -> Path | None:
        """The stack's document with the store behind the proxy: the load's readers
        (a miss falls through to the store) take the faulted path too."""
        return self._load_outputs

    def bars(self) -> Iterator[Bar]:
        return drill_bars(self.symbols, "1m")

    def write(self, bars: list[Bar]) -> None:
        store = self.store
        assert store is not None
        self.timed(lambda: store.write(bars))

    def found_keys(self, acknowledged: list[Any]) -> list[Hashable]:
        reader = self.reader
        assert reader is not None
        self.path_figures()
        if self.store is not None:
            self.figures["store_transactions_retried"] = self.store.retried_transactions
        return stored_keys(reader, self.symbols, "1m")

    def close(self) -> None:
        for part in (self.store, self.reader):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.close()
        super().close()


_PG_PATH = "the network path from the clients to the PostgreSQL primary"


class NetworkPartitionDrill(CutPath, _PrimaryPathDrill):
    name = "network-partition"
    #: Seconds writes may stop: no ceiling (the path to the primary is cut for the hold).
    max_unavailable_s: float | None = None
    summary = (
        "cut the path from the clients to the PostgreSQL primary (every byte dropped) for "
        "the hold, then heal it: writes fail, nothing acknowledged is lost or stored twice"
    )
    fault = PathFault(role=_PG_PATH, kind="cut")


class NetworkLatencyDrill(SlowPath, _PrimaryPathDrill):
    name = "network-latency"
    #: Seconds writes may stop (200 ms per round trip slows writes, it must not stop them).
    max_unavailable_s: float | None = 5.0
    summary = (
        f"add {LATENCY_MS} ms ± {JITTER_MS} ms to every reply from the PostgreSQL primary: "
        "writes slow down, none is lost"
    )
    fault = PathFault(role=_PG_PATH, kind="slow")
