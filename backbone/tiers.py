"""The tier toggle, ``data_backbone_mode``: ``bootstrap`` or ``institutional``.

* **bootstrap** (Tier 0): DuckDB, the in-memory cache and the in-process bus; no services.
* **institutional** (Tier 1): TimescaleDB, Redis and Kafka from the outputs document.

:func:`resolve_tier` picks the tier: ``--tier`` on the CLI, else ``BACKBONE_TIER`` or
``DATA_BACKBONE_MODE``, else institutional when a connections document with Redis
and Kafka is present, else bootstrap (the runtime also weighs ``config.yaml`` and
credentials: ``docs/configuration.md``). :func:`switch_to_institutional` runs every validation hook
(Redis PING, Kafka metadata for the configured topics, a PostgreSQL read-write
session) with short timeouts and refuses with one message naming every failure.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, cast

import psycopg
import redis
from kafka import KafkaConsumer
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from backbone.connections import TIERS, ConnectionsDocument, Tier
from backbone.settings import (
    MODE_ENV,
    BackboneSettings,
    KafkaConnectionSettings,
    RedisConnectionSettings,
    TimescaleConnectionSettings,
    load_settings,
)

__all__ = [
    "TIERS",
    "TIER_ENV",
    "CheckResult",
    "DataBackboneMode",
    "Tier",
    "TierError",
    "TierValidationError",
    "resolve_tier",
    "switch_to_institutional",
    "validate_institutional",
]

#: The setting's name in the issue and the docs; the same two values as :data:`Tier`.
DataBackboneMode = Tier
TIER_ENV = "BACKBONE_TIER"


class TierError(ValueError):
    """A tier name that is neither ``bootstrap`` nor ``institutional``."""


@dataclass(frozen=True)
class CheckResult:
    """One validation hook's outcome. ``detail`` never holds a secret."""

    service: Literal["redis", "kafka", "postgresql"]
    endpoint: str
    ok: bool
    detail: str
    seconds: float

    def __str__(self) -> str:
        state = "ok" if self.ok else "FAILED"
        return f"{self.service} at {self.endpoint}: {state} ({self.detail})"


class TierValidationError(RuntimeError):
    """Switching to institutional was refused; the message lists every failing check."""

    def __init__(self, failures: list[CheckResult], total: int) -> None:
        self.failures = failures
        lines = "\n".join(f"  - {f.service} at {f.endpoint}: {f.detail}" for f in failures)
        super().__init__(
            f"cannot switch to the institutional tier: {len(failures)} of {total} checks "
            f"failed:\n{lines}\n"
            "Start or repair these services (`harness status` shows the stack, "
            "`harness up` starts one), check the outputs document (BACKBONE_OUTPUTS), "
            "or stay on the bootstrap tier with --tier bootstrap / BACKBONE_TIER=bootstrap."
        )


def _parse_tier(value: str, where: str) -> Tier:
    normalised = value.strip().lower()
    if normalised not in TIERS:
        raise TierError(
            f"{where} is {value!r}; use one of {', '.join(TIERS)} "
            "(bootstrap: DuckDB and in-process services; institutional: Timescale, Redis, Kafka)"
        )
    return cast(Tier, normalised)


def resolve_tier(
    cli_tier: str | None,
    env: Mapping[str, str] | None = None,
    document: ConnectionsDocument | None = None,
) -> Tier:
    """The tier to run: ``--tier`` > ``BACKBONE_TIER`` / ``DATA_BACKBONE_MODE`` > the
    document > bootstrap."""
    if cli_tier:
        return _parse_tier(cli_tier, "--tier")
    environ = os.environ if env is None else env
    for name in (TIER_ENV, MODE_ENV):
        from_env = environ.get(name)
        if from_env:
            return _parse_tier(from_env, name)
    if document is not None and document.redis is not None and document.kafka is not None:
        return "institutional"
    return "bootstrap"


# --- validation hooks ----------------------------------------------------------


def _one_line(exc: BaseException, secrets: list[str]) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    for secret in secrets:
        text = text.replace(secret, "**********")
    name = type(exc).__name__
    return (text if text.startswith(name) else f"{name}: {text}")[:300]


def _check_redis(conn: RedisConnectionSettings, timeout: float) -> tuple[str, str]:
    kwargs = {
        **conn.client_kwargs(),
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if conn.mode == "sentinel":
        assert conn.master_name is not None
        sentinel = Sentinel(
            [(s.host, s.port) for s in conn.sentinels],
            sentinel_kwargs={**conn.sentinel_kwargs(), "socket_timeout": timeout},
            socket_timeout=timeout,
        )
        try:
            host, port = sentinel.discover_master(conn.master_name)
        finally:
            for s in sentinel.sentinels:
                s.connection_pool.disconnect()
        endpoint = f"{host}:{port} (primary {conn.master_name!r} via Sentinel)"
    else:
        host, port = conn.host, conn.port
        endpoint = f"{host}:{port}"
    client = redis.Redis(host=str(host), port=int(port or 6379), **kwargs)
    try:
        client.ping()
    finally:
        client.connection_pool.disconnect()
    return endpoint, "PING answered"


def _check_kafka(conn: KafkaConnectionSettings, timeout: float) -> tuple[str, str]:
    endpoint = ",".join(conn.bootstrap_servers)
    ms = int(timeout * 1000)
    consumer = KafkaConsumer(
        **{**conn.client_kwargs(), "request_timeout_ms": ms},
        bootstrap_timeout_ms=ms,
        reconnect_backoff_max_ms=min(ms, 1000),
        enable_auto_commit=False,
    )
    try:
        present = consumer.topics()
    finally:
        consumer.close(autocommit=False)
    wanted = sorted({info.name for info in conn.topics.values()})
    missing = [t for t in wanted if t not in present]
    if missing:
        raise LookupError(
            f"metadata lacks topics {missing}; create them (`harness up` does) or fix kafka.topics"
        )
    return endpoint, f"metadata lists all {len(wanted)} topics"


def _check_postgresql(conn: TimescaleConnectionSettings, timeout: float) -> tuple[str, str]:
    dsn = conn.conninfo(target_session_attrs="read-write").replace(
        f"connect_timeout={conn.connect_timeout_seconds}",
        f"connect_timeout={max(1, math.ceil(timeout))}",
    )
    with psycopg.connect(dsn, autocommit=True, **conn.connect_kwargs()) as pg:
        row = pg.execute("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')")
        in_recovery, read_only = row.fetchone() or (True, "on")
        endpoint = f"{pg.info.host}:{pg.info.port}"
    if in_recovery or read_only == "on":
        raise RuntimeError(f"{endpoint} answered, but its session is read-only (a standby)")
    return endpoint, "read-write session opened"


Hook = Callable[[float], tuple[str, str]]


def _run_hooks(
    hooks: list[tuple[Literal["redis", "kafka", "postgresql"], str, Hook]],
    timeout: float,
    secrets: list[str],
) -> list[CheckResult]:
    """Run every hook at once in daemon threads; a hook past the deadline fails."""
    results: dict[int, CheckResult] = {}
    threads: list[threading.Thread] = []
    started = time.monotonic()

    def run(
        index: int, service: Literal["redis", "kafka", "postgresql"], endpoint: str, hook: Hook
    ) -> None:
        t0 = time.monotonic()
        try:
            where, detail = hook(timeout)
            results[index] = CheckResult(service, where, True, detail, time.monotonic() - t0)
        except Exception as exc:
            results[index] = CheckResult(
                service, endpoint, False, _one_line(exc, secrets), time.monotonic() - t0
            )

    for index, (service, endpoint, hook) in enumerate(hooks):
        thread = threading.Thread(
            target=run,
            args=(index, service, endpoint, hook),
            name=f"tier-check-{service}",
            daemon=True,
        )
        thread.start()
        threads.append(thread)
    deadline = started + timeout + 2.0
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    out: list[CheckResult] = []
    for index, (service, endpoint, _) in enumerate(hooks):
        out.append(
            results.get(index)
            or CheckResult(
                service,
                endpoint,
                False,
                f"no answer within {timeout:.1f}s",
                time.monotonic() - started,
            )
        )
    return out


def _secrets(settings: BackboneSettings) -> list[str]:
    values = []
    for secret in (
        settings.redis and settings.redis.password,
        settings.redis and settings.redis.sentinel_password,
        settings.kafka and settings.kafka.password,
        settings.timescale and settings.timescale.password,
    ):
        if secret:
            values.append(secret.get_secret_value())
    return [v for v in values if v]


def validate_institutional(
    document: ConnectionsDocument | None,
    settings: BackboneSettings | None = None,
    *,
    timeout: float | None = None,
) -> list[CheckResult]:
    """Run every institutional validation hook (concurrently) and return all results."""
    if settings is None:
        settings = load_settings(document)
    limit = timeout if timeout is not None else settings.validation_timeout_seconds
    hooks: list[tuple[Literal["redis", "kafka", "postgresql"], str, Hook]] = []
    missing: list[CheckResult] = []
    redis_conn, kafka_conn, pg_conn = settings.redis, settings.kafka, settings.timescale
    if redis_conn is not None:
        hooks.append(("redis", redis_conn.endpoint, lambda t: _check_redis(redis_conn, t)))
    else:
        missing.append(CheckResult("redis", "-", False, "not configured (no redis section)", 0))
    if kafka_conn is not None:
        endpoint = ",".join(kafka_conn.bootstrap_servers)
        hooks.append(("kafka", endpoint, lambda t: _check_kafka(kafka_conn, t)))
    else:
        missing.append(CheckResult("kafka", "-", False, "not configured (no kafka section)", 0))
    if pg_conn is not None:
        hooks.append(("postgresql", pg_conn.endpoint, lambda t: _check_postgresql(pg_conn, t)))
    else:
        missing.append(
            CheckResult("postgresql", "-", False, "not configured (no timescale section)", 0)
        )
    return _run_hooks(hooks, limit, _secrets(settings)) + missing


def switch_to_institutional(
    document: ConnectionsDocument | None,
    settings: BackboneSettings | None = None,
    *,
    timeout: float | None = None,
) -> list[CheckResult]:
    """Validate, then allow the switch; :class:`TierValidationError` lists every failure."""
    results = validate_institutional(document, settings, timeout=timeout)
    failures = [r for r in results if not r.ok]
    if failures:
        raise TierValidationError(failures, total=len(results))
    return results
