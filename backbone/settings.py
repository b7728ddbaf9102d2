"""Runtime settings: connection settings per service and the backbone's own knobs.

Sources, highest priority first (pydantic-settings does the merging):

1. arguments passed to :func:`load_settings` / the constructor;
2. ``BACKBONE_*`` environment variables, nested with ``__``
   (``BACKBONE_REDIS__PASSWORD``, ``BACKBONE_CACHE__TTL_SECONDS``);
3. a ``config.yaml`` overlay (path from ``BACKBONE_CONFIG``, else ``./config.yaml``);
4. the values of the ``backbone.connections/v1`` outputs document.

Secrets are :class:`~pydantic.SecretStr` and validation errors never echo input
values. This module only reads files; it never writes credentials anywhere.
"""

from __future__ import annotations

import os
import ssl
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from backbone.cache.policy import CachePolicy
from backbone.connections import TOPIC_NAMES, ConnectionsDocument, HostPort

__all__ = [
    "BackboneSettings",
    "KafkaConnectionSettings",
    "RedisConnectionSettings",
    "TimescaleConnectionSettings",
    "document_values",
    "load_settings",
]

_SECURE = ConfigDict(extra="forbid", hide_input_in_errors=True)


class RedisConnectionSettings(BaseModel):
    """How to reach Redis: one server, or a primary discovered through Sentinels."""

    model_config = _SECURE

    mode: Literal["standalone", "sentinel"] = "standalone"
    host: str | None = None
    port: int | None = None
    sentinels: list[HostPort] = Field(default_factory=list)
    master_name: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    sentinel_password: SecretStr | None = None
    db: int = 0
    tls: bool = False
    #: CA bundle for TLS; certificates and host names are verified whenever TLS is on.
    ssl_cafile: str | None = None
    ssl_verify: bool = True
    socket_timeout: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _mode_fields(self) -> RedisConnectionSettings:
        if self.mode == "standalone" and (self.host is None or self.port is None):
            raise ValueError("redis mode standalone needs host and port")
        if self.mode == "sentinel" and (not self.sentinels or not self.master_name):
            raise ValueError("redis mode sentinel needs sentinels and master_name")
        return self

    @property
    def endpoint(self) -> str:
        """``host:port`` of the server, or of the Sentinels (never a secret)."""
        if self.mode == "sentinel":
            return ",".join(str(s) for s in self.sentinels) + f" (master {self.master_name})"
        return f"{self.host}:{self.port}"

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis`` / ``Sentinel.master_for`` (holds the secret)."""
        kwargs: dict[str, Any] = {
            "username": self.username,
            "password": self.password.get_secret_value() if self.password else None,
            "db": self.db,
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_timeout,
        }
        if self.tls:
            kwargs.update(
                ssl=True,
                ssl_ca_certs=self.ssl_cafile,
                ssl_cert_reqs="required" if self.ssl_verify else "none",
                ssl_check_hostname=self.ssl_verify,
            )
        return kwargs

    def sentinel_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the connections to the Sentinels themselves."""
        kwargs: dict[str, Any] = {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_timeout,
        }
        if self.sentinel_password is not None:
            kwargs["password"] = self.sentinel_password.get_secret_value()
        return kwargs


class KafkaConnectionSettings(BaseModel):
    """How to reach Kafka, and the topic names by logical key (``daily_bars`` ...)."""

    model_config = _SECURE

    bootstrap_servers: list[str] = Field(min_length=1)
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    username: str | None = None
    password: SecretStr | None = None
    ssl_cafile: str | None = None
    #: Verify the brokers' certificates and host names when TLS is used (the default).
    ssl_verify: bool = True
    topics: dict[str, str] = Field(default_factory=lambda: dict(TOPIC_NAMES))
    request_timeout_seconds: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _auth_fields(self) -> KafkaConnectionSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.username and self.password
        ):
            raise ValueError("kafka SASL_* needs sasl_mechanism, username and password")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def topic(self, logical: str) -> str:
        """The Kafka topic name of a logical topic."""
        return self.topics[logical]

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients (holds the secret)."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap_servers),
            "security_protocol": self.security_protocol,
            "request_timeout_ms": int(self.request_timeout_seconds * 1000),
        }
        if self.security_protocol.startswith("SASL"):
            assert self.password is not None  # checked by the validator
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password.get_secret_value(),
            )
        if self.uses_tls:
            context = ssl.create_default_context(cafile=self.ssl_cafile)
            if not self.ssl_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            kwargs["ssl_context"] = context
        return kwargs


class TimescaleConnectionSettings(BaseModel):
    """PostgreSQL/TimescaleDB: every node, so libpq finds the read-write primary."""

    model_config = _SECURE

    hosts: list[HostPort] = Field(min_length=1)
    dbname: str
    user: str
    password: SecretStr | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    sslrootcert: str | None = None
    timescaledb: bool = False
    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=4, ge=1)
    connect_timeout_seconds: int = Field(default=5, ge=1)

    @property
    def endpoint(self) -> str:
        return ",".join(str(h) for h in self.hosts)

    def conninfo(self, *, target_session_attrs: str = "read-write") -> str:
        """A libpq DSN over all hosts, *without* the password (pass it separately)."""
        parts = [
            f"host={','.join(h.host for h in self.hosts)}",
            f"port={','.join(str(h.port) for h in self.hosts)}",
            f"dbname={self.dbname}",
            f"user={self.user}",
            f"sslmode={self.sslmode}",
            f"target_session_attrs={target_session_attrs}",
            f"connect_timeout={self.connect_timeout_seconds}",
        ]
        if self.sslrootcert:
            parts.append(f"sslrootcert={self.sslrootcert}")
        return " ".join(parts)

    def connect_kwargs(self) -> dict[str, Any]:
        """``psycopg.connect(conninfo, **connect_kwargs())``: the password, kept out of the DSN."""
        return {"password": self.password.get_secret_value()} if self.password else {}


# The document and the config file are per call, not per class: pass them to the
# source through context variables set by load_settings for one construction.
_DOCUMENT_VALUES: ContextVar[dict[str, Any] | None] = ContextVar("_DOCUMENT_VALUES", default=None)
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("_CONFIG_FILE", default=None)


def _config_file() -> Path:
    explicit = _CONFIG_FILE.get()
    if explicit is not None:
        return explicit
    return Path(os.environ.get("BACKBONE_CONFIG", "config.yaml"))


class BackboneSettings(BaseSettings):
    """Everything the runtime is configured with; build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="BACKBONE_",
        env_nested_delimiter="__",
        extra="ignore",
        hide_input_in_errors=True,
        validate_default=True,
    )

    #: ``data_backbone_mode``; ``None`` lets :func:`backbone.tiers.resolve_tier` decide.
    tier: Literal["bootstrap", "institutional"] | None = None
    stack: str | None = None
    #: Prefix of every cache key and label of every cache metric.
    namespace: str = "backbone"
    cache: CachePolicy = CachePolicy()
    streaming_enabled: bool = True
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    heartbeat_interval_seconds: float = Field(default=2.0, gt=0)
    #: How often a consumer publishes its report to ``telemetry.ingest.health``.
    health_interval_seconds: float = Field(default=10.0, gt=0)
    #: How often ``backbone consume`` logs its one-line summary.
    summary_interval_seconds: float = Field(default=30.0, gt=0)
    validation_timeout_seconds: float = Field(default=3.0, gt=0)
    duckdb_path: str = ".backbone/bootstrap.duckdb"
    redis: RedisConnectionSettings | None = None
    kafka: KafkaConnectionSettings | None = None
    timescale: TimescaleConnectionSettings | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            YamlConfigSettingsSource(settings_cls, yaml_file=_config_file()),
            InitSettingsSource(settings_cls, init_kwargs=_DOCUMENT_VALUES.get() or {}),
        )


def document_values(document: ConnectionsDocument) -> dict[str, Any]:
    """The settings an outputs document implies (secrets stay :class:`SecretStr`)."""
    values: dict[str, Any] = {"stack": document.stack}
    if document.redis is not None:
        r = document.redis
        values["redis"] = {
            "mode": r.mode,
            "host": r.host,
            "port": r.port,
            "sentinels": [s.model_dump() for s in r.sentinels],
            "master_name": r.master_name,
            "username": r.username,
            "password": r.password,
            "sentinel_password": r.sentinel_password,
            "db": r.db,
            "tls": r.tls,
        }
    if document.kafka is not None:
        k = document.kafka
        values["kafka"] = {
            "bootstrap_servers": list(k.bootstrap_servers),
            "security_protocol": k.security_protocol,
            "sasl_mechanism": k.sasl_mechanism,
            "username": k.username,
            "password": k.password,
            "ssl_cafile": k.ssl_cafile,
            "topics": {logical: info.name for logical, info in k.topics.items()},
        }
    if document.timescale is not None:
        t = document.timescale
        values["timescale"] = {
            "hosts": [h.model_dump() for h in t.hosts],
            "dbname": t.dbname,
            "user": t.user,
            "password": t.password,
            "sslmode": t.sslmode,
            "timescaledb": t.timescaledb,
        }
    if document.duckdb is not None:
        values["duckdb_path"] = document.duckdb.path
    if document.monitoring is not None and document.monitoring.backbone_metrics_port:
        # The port the stack's Prometheus scrapes the backbone on.
        values["metrics_port"] = document.monitoring.backbone_metrics_port
    return values


def load_settings(
    document: ConnectionsDocument | None = None,
    *,
    config_file: Path | str | None = None,
    **overrides: Any,
) -> BackboneSettings:
    """Settings from ``overrides`` > ``BACKBONE_*`` env > config.yaml > ``document``."""
    doc_token = _DOCUMENT_VALUES.set(document_values(document) if document else None)
    file_token = _CONFIG_FILE.set(Path(config_file) if config_file is not None else None)
    try:
        return BackboneSettings(**overrides)
    finally:
        _DOCUMENT_VALUES.reset(doc_token)
        _CONFIG_FILE.reset(file_token)
