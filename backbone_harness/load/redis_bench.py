"""``redis-benchmark`` GET against the stack's Redis primary: the ceiling for cache reads.

The readers' requests go through ``Backbone`` (a Redis GET plus the LRU touch,
decoding, the Python client, Locust's bookkeeping); Redis's own tool measures
bare GETs from C on the same server in the same run, so the ratio says how
much of Redis's capacity one read of ours costs. The password reaches the tool
as an argument (it reads no environment variable for it); it is never printed,
and errors are scrubbed of it.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from typing import Any

import redis
from redis.sentinel import Sentinel

from backbone.connections import ConnectionsDocument
from backbone.settings import load_settings

__all__ = ["redis_benchmark_get"]


def _primary(doc: ConnectionsDocument) -> tuple[str, int, Any]:
    settings = load_settings(doc)
    conn = settings.redis
    if conn is None:
        raise RuntimeError("the stack has no Redis; the read comparison needs one")
    if conn.mode == "sentinel":
        assert conn.master_name is not None
        sentinel = Sentinel(
            [(s.host, s.port) for s in conn.sentinels], sentinel_kwargs=conn.sentinel_kwargs()
        )
        host, port = sentinel.discover_master(conn.master_name)
        for s in sentinel.sentinels:
            s.close()
        return str(host), int(port), conn
    assert conn.host is not None and conn.port is not None
    return conn.host, conn.port, conn


def redis_benchmark_get(
    doc: ConnectionsDocument, *, requests: int = 100_000, clients: int = 16
) -> dict[str, Any]:
    """Run ``redis-benchmark -t get`` on the primary; requests/s and latency (ms)."""
    tool = shutil.which("redis-benchmark")
    if tool is None:
        raise RuntimeError("redis-benchmark not found; install Debian's redis-tools (`make setup`)")
    host, port, conn = _primary(doc)
    kwargs = conn.client_kwargs()
    password = kwargs.get("password")
    user = kwargs.get("username")
    # A value to GET, so each answer carries a bar-sized payload, not a nil.
    client = redis.Redis(host=host, port=port, **kwargs)
    try:
        client.set("key:__rand_int__", b"x" * 180)
    finally:
        client.close()
    cmd = [tool, "-h", host, "-p", str(port), "-t", "get", "-n", str(requests),
           "-c", str(clients), "--csv"]  # fmt: skip
    if user:
        cmd += ["--user", str(user)]
    if password:
        cmd += ["-a", str(password)]
    if conn.tls:
        # The same verified TLS as the clients (redis-benchmark checks the chain).
        cmd += ["--tls"] + (["--cacert", conn.ssl_cafile] if conn.ssl_cafile else [])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip()[-300:]
        if password:
            message = message.replace(str(password), "***")
        raise RuntimeError(f"redis-benchmark failed (exit {done.returncode}): {message}")
    rows = [
        r for r in csv.DictReader(io.StringIO(done.stdout)) if r.get("test", "").startswith("GET")
    ]
    if not rows:
        raise RuntimeError("redis-benchmark printed no GET result")
    row = rows[0]
    return {
        "requests": requests,
        "clients": clients,
        "requests_per_s": float(row["rps"]),
        "p50_ms": float(row["p50_latency_ms"]),
        "p95_ms": float(row["p95_latency_ms"]),
        "p99_ms": float(row["p99_latency_ms"]),
    }
