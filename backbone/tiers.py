"""The tier toggle, ``data_backbone_mode``: ``bootstrap`` or ``institutional``.

* **bootstrap** (Tier 0): DuckDB, the in-memory cache and the in-process bus; no services.
* **institutional** (Tier 1): TimescaleDB, Redis and Kafka from the outputs document.

:func:`resolve_tier` picks the tier: ``--tier`` on the CLI, else ``BACKBONE_TIER`` or
``DATA_BACKBONE_MODE``, else institutional when a connections document with Redis
and Kafka is present, else bootstrap (the runtime also weighs ``config.yaml`` and
credentials: ``docs/configuration.md``). :func:`switch_to_institutional` runs every validation hook
with short timeouts and refuses with one message naming every *required* failure.

Required vs degradable, per dependency (``docs/runbooks/CacheDegraded.md``):

==============  ==========  ============================================="""

from __future__ import annotations

import math
import os
import threading
import time
import urllib.request
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
    "DEGRADABLE",
    "TIERS",
    "TIER_ENV",
    "CheckResult",
    "DataBackboneMode",
    "Service",
    "Tier",
    "TierError",
    "TierValidationError",
    "cache_required",
    "resolve_tier",
    "switch_to_institutional",
    "validate_institutional",
]

#: The setting's name in the issue and the docs; the same two values as :data:`Tier`.
DataBackboneMode = Tier
TIER_ENV = "BACKBONE_TIER"


#: Every dependency a validation hook checks.
Service = Literal["redis", "kafka", "postgresql", "metrics", "health-topic"]
#: Dependencies the institutional tier can run without (in a degraded mode).
DEGRADABLE: frozenset[Service] = frozenset({"redis", "metrics", "health-topic"})


class TierError(ValueError):
    """A tier name that is neither ``bootstrap`` nor ``institutional``."""


@dataclass(frozen=True)
class CheckResult:
    """One validation hook's outcome. ``detail`` never holds a secret."""

    service: Service
    endpoint: str
    ok: bool
    detail: str
    seconds: float
    #: ``False``: the tier runs without it, in a degraded mode (see the module doc).
    required: bool = True

    def __str__(self) -> str:
        state = "ok" if self.ok else ("FAILED" if self.required else "DEGRADED")
        kind = "" if self.required else ", degradable"
        return f"{self.service} at {self.endpoint}: {state} ({self.detail}{kind})"


class TierValidationError(RuntimeError):
    """Switching to institutional was refused; the message lists every required failure."""

    def __init__(self, failures: list[CheckResult], total: int) -> None:
        self.failures = failures
        lines = "\n".join(f"  - {f.service} at {f.endpoint}: {f.detail}" for f in failures)
        cache_hint = (
            " The cache is required here (--require-cache / require_cache); without that "
            "setting the tier would start in cache-degraded mode."
            if any(f.service == "redis" for f in failures)
            else ""
        )
        super().__init__(
            f"cannot switch to the institutional tier: {len(failures)} of {total} required "
            f"checks failed:\n{lines}\n"
            "Start or repair these services (`harness status` shows the stack, "
            "`harness up` starts one), check the outputs document (BACKBONE_OUTPUTS), "
            "or stay on the bootstrap tier with --tier bootstrap / BACKBONE_TIER=bootstrap."
            + cache_hint
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


#: Logical topics whose absence only degrades the tier (health reports stay on the bus).
_DEGRADABLE_TOPICS = frozenset({"ingest_health"})


def _check_kafka(
    conn: KafkaConnectionSettings, timeout: float, *, degradable: bool = False
) -> tuple[str, str]:
    """Metadata for the required topics (or, ``degradable``, for the health topic)."""
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
    wanted = sorted(
        {
            info.name
            for logical, info in conn.topics.items()
            if (logical in _DEGRADABLE_TOPICS) == degradable
        }
    )
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


def _check_metrics(prometheus_url: str, timeout: float) -> tuple[str, str]:
    """The stack's Prometheus (what scrapes ``/metrics``) answers ``/-/ready``."""
    url = prometheus_url.rstrip("/") + "/-/ready"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        status = response.status
    if status != 200:
        raise RuntimeError(f"{url} answered HTTP {status}")
    return prometheus_url, "Prometheus ready"


Hook = Callable[[float], tuple[str, str]]


def _run_hooks(
    hooks: list[tuple[Service, str, Hook]],
    timeout: float,
    secrets: list[str],
    required: Callable[[Service], bool],
) -> list[CheckResult]:
    """Run every hook at once in daemon threads; a hook past the deadline fails."""
    results: dict[int, CheckResult] = {}
    threads: list[threading.Thread] = []
    started = time.monotonic()

    def run(index: int, service: Service, endpoint: str, hook: Hook) -> None:
        t0 = time.monotonic()
        try:
            where, detail = hook(timeout)
            results[index] = CheckResult(
                service, where, True, detail, time.monotonic() - t0, required(service)
            )
        except Exception as exc:
            results[index] = CheckResult(
                service,
                endpoint,
                False,
                _one_line(exc, secrets),
                time.monotonic() - t0,
                required(service),
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
                required(service),
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


def cache_required(settings: BackboneSettings, require_cache: bool | None = None) -> bool:
    """Whether Redis is required: ``--require-cache`` when given, else ``require_cache``."""
    return settings.require_cache if require_cache is None else require_cache


def validate_institutional(
    document: ConnectionsDocument | None,
    settings: BackboneSettings | None = None,
    *,
    timeout: float | None = None,
    require_cache: bool | None = None,
) -> list[CheckResult]:
    """Run every institutional validation hook (concurrently) and return all results.

    The first three are Redis, Kafka and PostgreSQL; the degradable ``metrics``
    and ``health-topic`` checks follow. ``required`` says which kind each is.
    On a job's document (``document.job``) a service the job does not use (its
    section is absent) is not checked and not listed.
    """
    if settings is None:
        settings = load_settings(document)
    limit = timeout if timeout is not None else settings.validation_timeout_seconds
    needs_cache = cache_required(settings, require_cache)

    def required(service: Service) -> bool:
        return service not in DEGRADABLE or (service == "redis" and needs_cache)

    hooks: list[tuple[Service, str, Hook]] = []
    missing: list[CheckResult] = []

    # A job's document (``harness outputs --job``) holds only the services its
    # job uses: a service it leaves out is not part of this runtime, not a failure.
    job = document.job if document is not None else None

    def absent(service: Service, detail: str) -> None:
        if job is not None and service != "metrics":
            return
        missing.append(CheckResult(service, "-", False, detail, 0, required(service)))

    redis_conn, kafka_conn, pg_conn = settings.redis, settings.kafka, settings.timescale
    if redis_conn is not None:
        hooks.append(("redis", redis_conn.endpoint, lambda t: _check_redis(redis_conn, t)))
    else:
        absent("redis", "not configured (no redis section)")
    if kafka_conn is not None:
        endpoint = ",".join(kafka_conn.bootstrap_servers)
        hooks.append(("kafka", endpoint, lambda t: _check_kafka(kafka_conn, t)))
    else:
        absent("kafka", "not configured (no kafka section)")
    if pg_conn is not None:
        hooks.append(("postgresql", pg_conn.endpoint, lambda t: _check_postgresql(pg_conn, t)))
    else:
        absent("postgresql", "not configured (no timescale section)")
    monitoring = document.monitoring if document is not None else None
    if monitoring is not None and monitoring.prometheus_url:
        url = monitoring.prometheus_url
        hooks.append(("metrics", url, lambda t: _check_metrics(url, t)))
    else:
        absent("metrics", "not configured (no monitoring.prometheus_url): nothing scrapes")
    if kafka_conn is not None and "ingest_health" in kafka_conn.topics:
        endpoint = ",".join(kafka_conn.bootstrap_servers)
        hooks.append(
            ("health-topic", endpoint, lambda t: _check_kafka(kafka_conn, t, degradable=True))
        )
    else:
        absent("health-topic", "not configured: health reports stay on the in-process bus")
    results = _run_hooks(hooks, limit, _secrets(settings), required) + missing
    order: list[Service] = ["redis", "kafka", "postgresql", "metrics", "health-topic"]
    return sorted(results, key=lambda r: order.index(r.service))


def switch_to_institutional(
    document: ConnectionsDocument | None,
    settings: BackboneSettings | None = None,
    *,
    timeout: float | None = None,
    require_cache: bool | None = None,
) -> list[CheckResult]:
    """Validate, then allow the switch unless a *required* check failed.

    :class:`TierValidationError` lists every required failure; degradable ones
    are in the returned results (``ok`` false, ``required`` false) for the
    caller to run degraded and say so.
    """
    results = validate_institutional(
        document, settings, timeout=timeout, require_cache=require_cache
    )
    failures = [r for r in results if not r.ok and r.required]
    if failures:
        raise TierValidationError(failures, total=sum(1 for r in results if r.required))
    return results
