"""Cache reads: our ``Backbone.latest()`` against bare redis-py and ``redis-benchmark``.

All three read the same key (the cached latest bar of one series) from the same
Redis, one request at a time on one connection, so the ratios show what our
layers cost: key building, the availability check and retry wrapper, decoding
the bar, telemetry counters. ``redis-benchmark -c 1`` is the one-client ceiling
(C, no Python); ``-c 50`` (its default) is the server's.

``redis-benchmark`` takes a password only on its command line, where any user
of the machine could read it; so it logs in as a temporary ACL user with
``nopass`` that may only read, created for the run and deleted after it.
"""

from __future__ import annotations

import csv
import io
import secrets
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from backbone.bars import synthetic_bars
from backbone.cache.redis import RedisCache
from backbone.connections import ConnectionsDocument
from backbone.settings import RedisConnectionSettings
from backbone_harness.bench.measure import Log, figure, profiled

__all__ = ["bench_cache_reads"]


def _redis_benchmark(
    host: str, port: int, user: str, key: str, n: int, clients: int, tls: list[str]
) -> float:
    """GETs/s of ``redis-benchmark`` on ``key``."""
    exe = shutil.which("redis-benchmark")
    if exe is None:
        raise RuntimeError("redis-benchmark is missing: apt-get install redis-tools")
    cmd = [exe, "-h", host, "-p", str(port), "--user", user, "-a", "unused",
           "-n", str(n), "-c", str(clients), *tls, "--csv", "GET", key]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    rows = [r for r in csv.reader(io.StringIO(done.stdout)) if len(r) > 1 and r[0] != "test"]
    if done.returncode != 0 or not rows:
        raise RuntimeError(f"redis-benchmark failed ({done.returncode}): {done.stderr[-300:]}")
    return float(rows[-1][1])


def bench_cache_reads(doc: ConnectionsDocument, outputs: Path, n: int, log: Log) -> dict[str, Any]:
    """Reads/s of each client on one cached key; ``n`` reads each."""
    from backbone.runtime import Backbone

    conn = doc.redis
    assert conn is not None and conn.host is not None and conn.port is not None
    symbol = f"CACHE.{secrets.token_hex(3).upper()}"  # the contract: upper-case
    with Backbone.open(
        tier="institutional", outputs=outputs, group_id=f"backbone-bench-cache-{symbol}",
        consumer_start="latest",
    ) as bb:  # fmt: skip
        bb.store.write(
            list(synthetic_bars([symbol], "1m", 10, start=datetime(2004, 1, 1, tzinfo=UTC)))
        )
        assert bb.latest(symbol, "1m") is not None  # the miss that fills the cache
        # Tier 1's cache is the degradable wrapper; the bench reads through its Redis.
        redis_cache = getattr(bb.cache, "redis", None)
        assert isinstance(redis_cache, RedisCache), "Tier 1 reads through the Redis cache"
        key = redis_cache.policy.latest_key(redis_cache.namespace, symbol, "1m")

        def ours() -> float:
            began = time.perf_counter()
            for _ in range(n):
                bb.latest(symbol, "1m")
            return time.perf_counter() - began

        ours_s = ours()
        _, hot = profiled(lambda: [bb.latest(symbol, "1m") for _ in range(min(n, 5_000))])
    client = redis.Redis(
        host=conn.host, port=conn.port, username=conn.username,
        password=conn.password.get_secret_value() if conn.password else None,
        **RedisConnectionSettings.from_section(conn).tls_kwargs(),
    )  # fmt: skip
    # redis-benchmark over the same verified TLS as the clients.
    tls = ["--tls", "--cacert", conn.ssl_cafile] if conn.tls and conn.ssl_cafile else []
    bench_user = f"bench-{secrets.token_hex(3)}"
    try:
        assert client.get(key) is not None, f"the cached key {key} is missing"
        began = time.perf_counter()
        for _ in range(n):
            client.get(key)
        bare_s = time.perf_counter() - began
        client.acl_setuser(bench_user, enabled=True, nopass=True, keys=["*"],
                           commands=["+@read", "+@connection", "+config|get"])  # fmt: skip
        one = _redis_benchmark(conn.host, conn.port, bench_user, key, n, 1, tls)
        fifty = _redis_benchmark(conn.host, conn.port, bench_user, key, max(n, 100_000), 50, tls)
    finally:
        client.acl_deluser(bench_user)
        client.close()
    ours_rate, bare_rate = n / ours_s, n / bare_s
    log(f"cache: latest() {ours_rate:,.0f}/s, redis-py GET {bare_rate:,.0f}/s, "
        f"redis-benchmark -c 1 {one:,.0f}/s, -c 50 {fifty:,.0f}/s")  # fmt: skip
    return {
        "reads": n,
        "latest_per_s": round(ours_rate),
        "redis_py_get_per_s": round(bare_rate),
        "redis_benchmark_c1_per_s": round(one),
        "redis_benchmark_c50_per_s": round(fifty),
        "profile": hot,
        "figures": [
            figure(
                "cache read",
                "Backbone.latest() (hit)",
                ours_rate,
                "reads/s",
                "bare redis-py GET of the same key",
                bare_rate,
            ),
            figure(
                "cache read",
                "Backbone.latest() (hit)",
                ours_rate,
                "reads/s",
                "redis-benchmark GET, 1 client",
                one,
            ),
            figure(
                "cache read",
                "bare redis-py GET",
                bare_rate,
                "reads/s",
                "redis-benchmark GET, 1 client",
                one,
            ),
            figure(
                "cache read",
                "Backbone.latest() (hit)",
                ours_rate,
                "reads/s",
                "redis-benchmark GET, 50 clients (server's ceiling)",
                fifty,
            ),
        ],
    }
