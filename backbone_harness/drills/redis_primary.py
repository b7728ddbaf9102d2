"""Drill: SIGKILL the Redis primary; Sentinel promotes the replica; the cache follows.

The writer ingests bars through ``Backbone.ingest`` (Kafka → PostgreSQL → cache
invalidation); a reader asks for the latest bar of each drill symbol through
the Redis cache every 0.1 s, with the store as the loader. While Redis has no
primary, reads must still answer (from the store); once Sentinel promoted the
replica, the cache must reach the new primary on its own. At the end the old
primary is restarted, rejoins as a replica, and a Sentinel failover hands the
primary role back to it — the stack as the drill found it.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import threading
import time
from collections.abc import Hashable, Iterator
from typing import Any

import redis

from backbone.bars import Bar
from backbone.cache.redis import RedisCache
from backbone.job_logins import harness_section
from backbone.runtime import Backbone
from backbone.settings import RedisConnectionSettings, TimescaleConnectionSettings
from backbone.store.timescale import TimescaleStore
from backbone_harness.drills.base import Drill, Fault, wait_redis_roles, wait_until
from backbone_harness.drills.writer import drill_bars, stored_keys

__all__ = ["RedisPrimaryKillDrill"]

TIMEFRAME = "1m"
#: Every drill bar falls in this range (see ``drill_bars``).


class RedisPrimaryKillDrill(Drill):
    name = "redis-primary-kill"
    summary = "SIGKILL the Redis primary; Sentinel fails over; reads never fail"
    fault = Fault(role="the Redis primary", kind="kill")
    #: Seconds writes may stop (issue 12's target: Sentinel fails over within its down-after time).
    max_unavailable_s: float | None = 5.0
    min_acknowledged = 200
    load_produces = False  # Backbone.ingest consumes the bar topics

    def __init__(self, stack: Any) -> None:
        super().__init__(stack)
        doc = stack.document
        if doc.redis is None or doc.redis.mode != "sentinel" or doc.timescale is None:
            raise ValueError(f"stack {stack.name!r} has no Sentinel-watched Redis; use an ha stack")
        self.doc = doc
        prefix = f"DR{secrets.token_hex(2).upper()}"
        self.symbols = [f"{prefix}{i}" for i in range(4)]
        self.backbone: Backbone | None = None
        self.cache: RedisCache | None = None
        self.store: TimescaleStore | None = None
        self._probe_lock = threading.Lock()
        self.reads = 0
        self.read_failures = 0
        self.empty_reads = 0
        self._acked_once: set[str] = set()

    def target(self) -> str:
        return self.stack.redis_primary()

    def prepare(self) -> None:
        self.backbone = Backbone.open(
            tier="institutional",
            outputs=self.stack.outputs_path,
            group_id=f"backbone-drill-{self.name}-{secrets.token_hex(3)}",
            consumer_start="latest",
        )
        # The reader's own cache client: heartbeat and retries as a service would
        # run them. It fills on a miss, so it logs in as the consumer (the reader
        # job's Redis user may not SET); its store only SELECTs: the reader's login.
        self.cache = RedisCache(
            RedisConnectionSettings.from_section(harness_section(self.doc, "cache")),
            namespace=f"backbone-drill-{secrets.token_hex(3)}",
            heartbeat_interval=0.5,
            retries=1,
            retry_backoff=0.1,
        )
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
        assert self.backbone is not None
        result = self.backbone.ingest(bars)
        if result.stored + result.duplicates != len(bars):
            raise RuntimeError(
                f"ingest stored {result.stored} + {result.duplicates} duplicates of {len(bars)}"
            )
        self._acked_once.update(b.symbol for b in bars)

    def probe(self) -> None:
        cache, store = self.cache, self.store
        assert cache is not None and store is not None
        for symbol in self.symbols:
            expected = symbol in self._acked_once
            try:
                got = cache.get_latest(
                    symbol, TIMEFRAME, functools.partial(store.latest, symbol, TIMEFRAME)
                )
            except Exception as exc:
                self.read_failures += 1
                self.problems.append(f"a read raised {type(exc).__name__}: {str(exc)[:120]}")
                continue
            self.reads += 1
            if expected and got is None:
                self.empty_reads += 1
                self.problems.append(
                    f"a read of {symbol} found nothing after bars were acknowledged"
                )

    def during_fault(self, node: str) -> None:
        cache = self.cache
        assert cache is not None
        before = cache.primary_address()
        self.figures["sentinel_failover_s"] = round(
            wait_until(
                lambda: self.stack.redis_primary() != node, 60, "Sentinel to promote a replica"
            ),
            2,
        )
        self.figures["new_primary"] = self.stack.redis_primary()

        def follows() -> bool:
            return cache.primary_address() != before and cache.available

        self.figures["cache_followed_after_s"] = round(
            self.figures["sentinel_failover_s"]
            + wait_until(follows, 30, "the cache to reach the new primary"),  # type: ignore[operator]
            2,
        )

    def recover(self, node: str) -> None:
        self.fault.undo(self.stack, node)
        wait_until(
            lambda: self.stack.roles().get(node) == "replica", 60, f"{node} to rejoin as a replica"
        )
        # As found: Sentinel hands the primary role back to the original node.
        began = time.monotonic()
        redis_conn = self.doc.redis
        assert redis_conn is not None and redis_conn.master_name is not None
        s = redis_conn.sentinels[0]
        pw = redis_conn.sentinel_password
        admin = redis.Redis(
            host=s.host,
            port=s.port,
            password=pw.get_secret_value() if pw else None,
            **RedisConnectionSettings.from_section(redis_conn).tls_kwargs(),
        )
        try:
            wait_until(
                lambda: bool(admin.sentinel_failover(redis_conn.master_name)),
                30,
                "Sentinel to accept a failover back",
            )
        finally:
            admin.close()
        wait_redis_roles(self.stack, node)
        self.figures["failed_back_after_s"] = round(time.monotonic() - began, 2)

    def found_keys(self, acknowledged: list[Any]) -> list[Hashable]:
        store = self.store
        assert store is not None
        found = stored_keys(store, self.symbols, TIMEFRAME)
        stats = self.cache.stats() if self.cache else None
        self.figures.update(
            reads=self.reads,
            read_failures=self.read_failures,
            reads_empty_after_ack=self.empty_reads,
            reads_served_by_store_fallback=stats.fallbacks if stats else 0,
        )
        return found

    def close(self) -> None:
        for part in (self.backbone, self.cache, self.store):
            if part is not None:
                # closing after a fault must not hide the report
                with contextlib.suppress(Exception):
                    part.close()
