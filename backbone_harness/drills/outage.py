"""What the whole-service outage drills share: a role's every node down, and the
writer on ``Backbone.ingest``.

The failover drills (``redis-primary-kill`` ...) fault one node and watch a
replica take over. The outage drills stop *every* node of a service — the
degraded modes of ``backbone`` (issue 16) must carry ingest through that: the
cache detaches, the consumer holds its poll, the producers push back. The
writer ingests through the public API; an acknowledged batch is one
``ingest`` call that returned, so the reader (the store) must hold each of its
bars exactly once.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Hashable, Iterator
from typing import Any

from backbone.bars import Bar
from backbone.job_logins import harness_section
from backbone.runtime import Backbone
from backbone.settings import BackboneSettings, TimescaleConnectionSettings, load_settings
from backbone.store.timescale import TimescaleStore
from backbone.telemetry import MetricsServer, Telemetry, serve_metrics
from backbone_harness.drills.base import Drill
from backbone_harness.drills.writer import drill_bars, stored_keys

__all__ = ["TIMEFRAME", "OutageDrill"]

TIMEFRAME = "1m"


class OutageDrill(Drill):
    """Stops every node whose name starts with ``prefix``; writes with ``Backbone.ingest``."""

    load_produces = False  # Backbone.ingest consumes the bar topics

    #: Node-name prefix of the service the drill takes down (``redis-``, ...).
    prefix: str
    #: Stack sizes the drill runs on (these drills need no replica).
    stack_sizes: tuple[str, ...] = ("minimal", "ha")
    #: Seconds of the probe the cache uses to re-attach (short: drills are short).
    probe_interval_s: float = 0.5
    warmup_s = 3.0
    tail_s = 3.0

    def __init__(self, stack: Any) -> None:
        super().__init__(stack)
        doc = stack.document
        if doc.kafka is None or doc.timescale is None or doc.redis is None:
            raise ValueError(f"stack {stack.name!r} is not an institutional stack")
        self.doc = doc
        tag = secrets.token_hex(2).upper()
        self.symbols = [f"{self.symbol_prefix}{tag}{i}" for i in range(4)]
        self.namespace = f"backbone-drill-{self.name}-{secrets.token_hex(3)}"
        self.group = f"backbone-drill-{self.name}-{secrets.token_hex(3)}"
        #: One registry across runtime restarts, served where the stack's Prometheus
        #: scrapes the backbone, so the degraded-mode alerts can fire in the drill.
        self.telemetry = Telemetry()
        self.metrics: MetricsServer | None = None
        self.backbone: Backbone | None = None
        self.store: TimescaleStore | None = None
        #: Held while ``backbone`` is used or replaced (a consumer restart).
        self.lock = threading.Lock()
        self.nodes = sorted(n for n in stack.node_names() if n.startswith(self.prefix))
        if not self.nodes:
            raise ValueError(f"stack {stack.name!r} has no {self.prefix}* node")

    symbol_prefix = "DO"

    # --- the fault: every node of the service -----------------------------------
    def target(self) -> str:
        return ",".join(self.nodes)

    def inject(self, node: str) -> None:
        for name in self.nodes:
            self.stack.stop_node(name)

    def recover(self, node: str) -> None:
        """Restart every stopped node at once: a KRaft broker alone has no quorum to
        become ready, and a standby needs no primary to start."""
        down = [n for n in self.nodes if not self.stack.node_running(n)]
        errors: list[BaseException] = []

        def restart(name: str) -> None:
            try:
                self.stack.restart_node(name)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=restart, args=(n,), daemon=True) for n in down]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        if errors:
            raise errors[0]

    # --- the writer ------------------------------------------------------------------
    def settings(self) -> BackboneSettings:
        return load_settings(
            self.doc,
            namespace=self.namespace,
            cache={"hot_symbols": self.symbols, "warm_timeframes": [TIMEFRAME]},
            cache_probe_interval_seconds=self.probe_interval_s,
        )

    def open_backbone(self) -> Backbone:
        """A runtime in the drill's consumer group (a restart continues the group)."""
        return Backbone.open(
            tier="institutional",
            outputs=self.stack.outputs_path,
            settings=self.settings(),
            group_id=self.group,
            consumer_start="latest",
            telemetry=self.telemetry,
        )

    def prepare(self) -> None:
        monitoring = self.doc.monitoring
        port = monitoring.backbone_metrics_port if monitoring is not None else None
        if port is not None:
            try:
                self.metrics = serve_metrics(self.telemetry.registry, port)
            except OSError as exc:  # another ingest serves it: alerts are context only
                self.figures["metrics_not_served"] = f"port {port}: {exc.strerror}"
        self.backbone = self.open_backbone()
        # The read-back only SELECTs: the reader's login.
        self.store = TimescaleStore(
            TimescaleConnectionSettings.from_section(
                harness_section(self.doc, "store-reader"), pool_max_size=2
            ),
            timeout=10.0,
            read_only=True,
        )

    def bars(self) -> Iterator[Bar]:
        return drill_bars(self.symbols, TIMEFRAME)

    def write(self, bars: list[Bar]) -> None:
        with self.lock:
            backbone = self.backbone
            assert backbone is not None
            result = backbone.ingest(bars)
        # More than the batch may come back: records re-read after a commit the
        # outage made fail are counted (as duplicates) by the call that re-reads them.
        if not result.reconciles or result.stored + result.duplicates < len(bars):
            raise RuntimeError(
                f"ingest stored {result.stored} + {result.duplicates} duplicates of {len(bars)}"
            )
        self.after_write(bars, result.duplicates)

    def after_write(self, bars: list[Bar], duplicates: int) -> None:
        """Called after each acknowledged batch (drill-specific bookkeeping)."""

    # --- the reader ------------------------------------------------------------------
    def found_keys(self, acknowledged: list[Any]) -> list[Hashable]:
        store = self.store
        assert store is not None
        return stored_keys(store, self.symbols, TIMEFRAME)

    def close(self) -> None:
        for part in (self.backbone, self.store, self.metrics):
            if part is not None:
                with contextlib.suppress(
                    Exception
                ):  # closing after a fault must not hide the report
                    part.close()
