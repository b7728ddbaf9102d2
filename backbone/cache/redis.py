"""``RedisCache``: the Tier 1 bar cache on Redis, standalone or behind Sentinels.

* Sentinel mode uses ``Sentinel(...).master_for(...)``: every new connection asks
  the Sentinels for the primary. A demoted primary answers READONLY on a live
  connection; that, like a connection error, drops the pool's connections and
  retries, so the next attempt rediscovers the new primary.
* Max keys: a sorted set ``{ns}:lru`` scores every cached key by last access;
  each write trims it (oldest first, deleting the keys) in one Lua script, and
  the keys it deleted are counted as evictions. TTL is Redis expiry.
* Start-up PINGs (failure raises :class:`CacheUnavailableError`); a daemon
  heartbeat thread PINGs every ``heartbeat_interval`` seconds.
* When Redis is unreachable, reads go straight to the loader (the store) and
  count as misses and fallbacks; invalidations are remembered. The heartbeat
  notices the recovery, replays the invalidations, and reads fill the cache again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel

from backbone.bars import Bar
from backbone.bus import EventBus
from backbone.cache._codec import decode_bar, decode_bars, encode_bar, encode_bars
from backbone.cache.policy import CachePolicy
from backbone.cache.protocol import Backing, CacheStats, LatestLoader, RangeLoader
from backbone.cache.telemetry import CacheTelemetry
from backbone.telemetry import Telemetry

if TYPE_CHECKING:
    from backbone.settings import RedisConnectionSettings

__all__ = ["RETRYABLE_ERRORS", "CacheUnavailableError", "RedisCache", "redis_client"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Errors after which a command is retried on a fresh connection (READONLY: a
#: demoted primary; the retry rediscovers the primary through the Sentinels).
RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
)

# KEYS: entry, lru index, pair tag. ARGV: value, ttl ms, now ms, max keys, longest ttl ms.
_PUT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
redis.call('SADD', KEYS[3], KEYS[1])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (tonumber(ARGV[3]) - tonumber(ARGV[5])))
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
local evicted = 0
if over > 0 then
  local victims = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #victims, 2 do
    evicted = evicted + redis.call('DEL', victims[i])
  end
end
return evicted
"""

# KEYS: pair tag, lru index.
_INVALIDATE = """
local members = redis.call('SMEMBERS', KEYS[1])
local dropped = 0
for _, key in ipairs(members) do
  dropped = dropped + redis.call('DEL', key)
  redis.call('ZREM', KEYS[2], key)
end
redis.call('DEL', KEYS[1])
return dropped
"""


def _retry_only(extra: dict[str, Any]) -> dict[str, Any]:
    return {"retry": extra["retry"]} if "retry" in extra else {}


def redis_client(
    conn: RedisConnectionSettings,
    credentials: CredentialProvider | None = None,
    **extra: Any,
) -> tuple[redis.Redis, Sentinel | None]:
    """The redis-py client for ``conn`` (and its :class:`Sentinel` in sentinel mode).

    Every connection setting goes in through ``conn.client_kwargs()``; ``extra``
    adds client behaviour (a retry policy). Nothing connects until a command runs.
    ``credentials`` replaces the fixed username and password: each new connection
    to a server asks it (:mod:`backbone.credentials`, rotated passwords). The
    Sentinels keep their own fixed password (a rotation does not change it).
    """
    kwargs = {**conn.client_kwargs(), **extra}
    if credentials is not None:
        # redis-py refuses username/password together with a credential provider.
        kwargs = {k: v for k, v in kwargs.items() if k not in ("username", "password")}
        kwargs["credential_provider"] = credentials
    if conn.mode == "sentinel":
        assert conn.master_name is not None  # checked by the settings
        sentinel = Sentinel(
            [(s.host, s.port) for s in conn.sentinels],
            # The Sentinel clients get the same retry policy: redis-py 6+ gives every
            # client 3 retries with exponential backoff, so with every Sentinel down
            # one discovery slept for seconds, and reads and invalidations with it.
            sentinel_kwargs={**conn.sentinel_kwargs(), **_retry_only(extra)},
            socket_timeout=conn.socket_timeout,
        )
        return sentinel.master_for(conn.master_name, **kwargs), sentinel
    return redis.Redis(host=conn.host or "", port=conn.port or 6379, **kwargs), None


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob (SCAN MATCH)."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class CacheUnavailableError(ConnectionError):
    """Redis cannot serve a cache command; the message names the endpoint and what to do."""


class RedisCache:
    """Read-through bar cache on Redis with the :class:`~backbone.cache.BarCache` API."""

    backing: Backing = "redis"

    def __init__(
        self,
        connection: RedisConnectionSettings,
        policy: CachePolicy | None = None,
        *,
        namespace: str = "backbone",
        telemetry: Telemetry | None = None,
        bus: EventBus | None = None,
        heartbeat_interval: float = 2.0,
        retries: int = 2,
        retry_backoff: float = 0.1,
        publish_every: int = 100,
        credentials: CredentialProvider | None = None,
        fills: bool = True,
    ) -> None:
        self.policy = policy or CachePolicy()
        #: Whether a miss served by the store fills the cache; off for a login that
        #: may only read (the reader job's), whose every fill Redis would refuse.
        self.fills = fills
        self._credentials = credentials
        self.namespace = namespace
        self.connection = connection
        self._retries = retries
        self._retry_backoff = retry_backoff
        self._counters = CacheTelemetry(
            namespace, "redis", telemetry=telemetry, bus=bus, publish_every=publish_every
        )
        self._sentinel: Sentinel | None = None
        self._client = self._connect(connection)
        self._put_script = self._client.register_script(_PUT)
        self._invalidate_script = self._client.register_script(_INVALIDATE)
        self._state = threading.Lock()
        # Not available until the start-up PING answers: a failed start raises
        # (the caller says so) instead of also logging an "unreachable" transition,
        # which a re-attach probe would repeat every few seconds.
        self._available = False
        #: Unix seconds since when Redis has not answered; ``None`` while it answers.
        self.unavailable_since: float | None = None
        self._pending: set[tuple[str, str]] = set()
        self._last_size = 0
        self._closed = False
        try:
            self._execute(lambda c: c.ping())
        except CacheUnavailableError:
            self._release()
            raise
        if telemetry is not None:
            telemetry.cache_available(namespace, "redis", lambda: self.available)
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(
            target=self._beat,
            args=(heartbeat_interval,),
            name=f"redis-cache-heartbeat[{namespace}]",
            daemon=True,
        )
        self._heartbeat.start()

    # --- BarCache -------------------------------------------------------------
    def get_latest(self, symbol: str, timeframe: str, loader: LatestLoader) -> Bar | None:
        key = self.policy.latest_key(self.namespace, symbol, timeframe)
        cached = self._read(key, decode_bar)
        if cached is not None:
            return cached
        bar = loader()
        if bar is not None:
            self._write(key, (symbol, timeframe), encode_bar(bar))
        return bar

    def get_range(
        self, symbol: str, timeframe: str, start: datetime, end: datetime, loader: RangeLoader
    ) -> list[Bar]:
        key = self.policy.range_key(self.namespace, symbol, timeframe, start, end)
        cached = self._read(key, decode_bars)
        if cached is not None:
            return cached
        bars = list(loader())
        self._write(key, (symbol, timeframe), encode_bars(bars))
        return bars

    def on_new_bars(self, bars: Iterable[Bar]) -> int:
        if not self.policy.invalidate_on_new_bars:
            return 0
        pairs = {(b.symbol, b.timeframe) for b in bars}
        if not pairs:
            return 0
        if not self.available:
            with self._state:
                self._pending |= pairs
            return 0
        try:
            return self._invalidate(pairs)
        except CacheUnavailableError:
            with self._state:
                self._pending |= pairs
            return 0

    def invalidate_pairs(self, pairs: Iterable[tuple[str, str]]) -> int:
        """Drop every entry of ``(symbol, timeframe)`` pairs (remembered if Redis is down)."""
        wanted = set(pairs)
        try:
            return self._invalidate(wanted) if wanted else 0
        except CacheUnavailableError:
            with self._state:
                self._pending |= wanted
            return 0

    def flush_namespace(self) -> int:
        """Delete every key under ``{namespace}:`` (entries, tags, the LRU index).

        For re-attaching after a detached period (:mod:`backbone.cache.degradable`):
        entries from before it may be stale. Returns the keys deleted.
        """
        pattern = _glob_escape(self.namespace) + ":*"

        def op(c: redis.Redis) -> int:
            deleted, batch = 0, []
            for key in c.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += int(c.delete(*batch))
                    batch.clear()
            if batch:
                deleted += int(c.delete(*batch))
            return deleted

        deleted = self._execute(op)
        self._last_size = 0
        return deleted

    def stats(self) -> CacheStats:
        if self.available and not self._closed:
            try:
                lru = self.policy.lru_key(self.namespace)
                self._last_size = int(self._execute(lambda c: c.zcard(lru)))
            except CacheUnavailableError:
                pass
        return self._counters.snapshot(self._last_size)

    def close(self) -> None:
        if self._closed:
            return
        self._stop.set()
        self._heartbeat.join(timeout=10)
        self._counters.publish(self.stats())
        self._closed = True
        self._release()

    # --- state ------------------------------------------------------------------
    @property
    def available(self) -> bool:
        """Whether Redis answered the last command or heartbeat."""
        with self._state:
            return self._available

    def primary_address(self) -> tuple[str, int]:
        """``(host, port)`` of the Redis primary this cache writes to now."""
        if self._sentinel is not None:
            assert self.connection.master_name is not None
            host, port = self._sentinel.discover_master(self.connection.master_name)
            return str(host), int(port)
        assert self.connection.host is not None and self.connection.port is not None
        return self.connection.host, self.connection.port

    def __enter__(self) -> RedisCache:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- internals --------------------------------------------------------------
    def _connect(self, conn: RedisConnectionSettings) -> redis.Redis:
        # This class retries (and rediscovers) itself; redis-py's own retry is off.
        client, self._sentinel = redis_client(conn, self._credentials, retry=Retry(NoBackoff(), 0))
        return client

    def _execute(self, op: Callable[[redis.Redis], _T]) -> _T:
        """Run ``op`` with retries on a fresh connection; :class:`CacheUnavailableError` at last."""
        last: Exception | None = None
        for attempt in range(self._retries + 1):
            try:
                result = op(self._client)
            except RETRYABLE_ERRORS as exc:
                last = exc
                _log.debug("Redis command failed (attempt %d): %r", attempt + 1, exc)
                # Drop every idle pooled connection: the next one asks the Sentinels
                # again. Not the ones other threads are using: closing a socket under
                # a command in flight made that read raise ValueError ("I/O operation
                # on closed file"), past every fallback (seen under `drill --load`);
                # those fail or succeed on their own and are retried the same way.
                self._client.connection_pool.disconnect(inuse_connections=False)
                if attempt < self._retries:
                    time.sleep(self._retry_backoff * (2**attempt))
                continue
            except redis.RedisError as exc:
                # Redis answered but refused (out of memory, a denied command ...): this
                # command falls back to the store; retrying would only get the same answer.
                raise CacheUnavailableError(
                    f"Redis at {self.connection.endpoint} refused a cache command "
                    f"({type(exc).__name__}: {exc}); this read is served by the store; "
                    "check the Redis logs and its maxmemory / ACL settings"
                ) from None
            self._mark_available()
            return result
        self._mark_unavailable(last)
        raise CacheUnavailableError(
            f"Redis at {self.connection.endpoint} failed {self._retries + 1} attempts "
            f"({type(last).__name__}: {last}); reads fall back to the store until it "
            "answers again; check `harness status` or the Redis logs"
        )

    def _read(self, key: str, decode: Callable[[bytes], _T]) -> _T | None:
        """The decoded entry, counted as a hit; ``None`` counted as a miss (or fallback)."""
        if not self.available:
            self._read_done(self._counters.miss(fallback=True))
            return None
        lru = self.policy.lru_key(self.namespace)
        now_ms = int(time.time() * 1000)

        def op(c: redis.Redis) -> Any:
            pipe = c.pipeline(transaction=False)
            pipe.get(key)
            pipe.zadd(lru, {key: now_ms}, xx=True)
            return pipe.execute()[0]

        try:
            raw = self._execute(op)
        except CacheUnavailableError as exc:
            _log.warning("%s", exc)
            self._read_done(self._counters.miss(fallback=True))
            return None
        if isinstance(raw, bytes):
            try:
                value = decode(raw)
            except (ValueError, TypeError) as exc:
                # An entry this version cannot read is a miss; the write that follows replaces it.
                _log.warning("undecodable cache entry %s (%s); reloading it", key, exc)
            else:
                self._read_done(self._counters.hit())
                return value
        self._read_done(self._counters.miss())
        return None

    def _write(self, key: str, pair: tuple[str, str], value: bytes) -> None:
        if not self.available or not self.fills:
            return
        args: list[bytes | int] = [
            value,
            int(self.policy.ttl_for(pair[0]) * 1000),
            int(time.time() * 1000),
            self.policy.max_keys,
            int(self.policy.longest_ttl * 1000),
        ]
        keys = [
            key,
            self.policy.lru_key(self.namespace),
            self.policy.tag_key(self.namespace, *pair),
        ]
        try:
            evicted = int(self._execute(lambda c: self._put_script(keys=keys, args=args, client=c)))
        except CacheUnavailableError as exc:
            _log.warning("%s", exc)
            return
        if evicted:
            self._counters.evicted(evicted)
            self._counters.publish(self.stats())

    def _invalidate(self, pairs: Iterable[tuple[str, str]]) -> int:
        """Drop every entry of ``pairs`` in one round trip (one script call per pair)."""
        lru = self.policy.lru_key(self.namespace)
        tags = [self.policy.tag_key(self.namespace, *pair) for pair in pairs]
        if not tags:
            return 0

        def op(c: redis.Redis) -> list[Any]:
            pipe = c.pipeline(transaction=False)
            for tag in tags:
                self._invalidate_script(keys=[tag, lru], client=pipe)
            return pipe.execute()

        return sum(int(n) for n in self._execute(op))

    def _read_done(self, publish_due: bool) -> None:
        if publish_due:
            self._counters.publish(self.stats())

    def _mark_available(self) -> None:
        with self._state:
            self._available = True
            self.unavailable_since = None

    def _mark_unavailable(self, reason: Exception | None) -> None:
        with self._state:
            was = self._available
            self._available = False
            if was:
                self.unavailable_since = time.time()
        if was:
            _log.warning(
                "Redis at %s unreachable (%s); serving reads from the store",
                self.connection.endpoint,
                type(reason).__name__,
            )

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self._client.ping()
            except RETRYABLE_ERRORS as exc:
                # Idle connections only, as in _execute: the readers' commands in
                # flight fail (and fall back) on their own; closing their sockets
                # under them raised ValueError past the fallback.
                self._client.connection_pool.disconnect(inuse_connections=False)
                self._mark_unavailable(exc)
                continue
            except Exception:  # keep beating whatever a single ping does
                _log.exception("Redis heartbeat failed")
                continue
            if not self.available:
                self._recover()

    def _recover(self) -> None:
        with self._state:
            pending, self._pending = self._pending, set()
        try:
            # Entries written before the outage may be stale: drop what changed meanwhile.
            self._invalidate(pending)
        except CacheUnavailableError:
            with self._state:
                self._pending |= pending
            return
        self._mark_available()
        _log.info("Redis at %s answers again; cache warming up", self.connection.endpoint)
        self._counters.publish(self.stats())

    def _release(self) -> None:
        self._client.connection_pool.disconnect()
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                sentinel.connection_pool.disconnect()
