"""Runtime settings: one connection model per service, and the backbone's own knobs.

Each ``*Settings`` connection class *extends* the outputs document's section
(:mod:`backbone.connections`) with client-side knobs (pool sizes, timeouts,
certificate checks), so a field the document carries cannot be lost on its way
to a client: the document's section is validated into the settings class as it
is (:meth:`RedisSettings.from_section` ...), and each client takes the settings
class only. ``docs/configuration.md`` lists every field.

Sources, highest priority first (pydantic-settings does the merging):

1. arguments passed to :func:`load_settings` / the constructor;
2. the environment: ``BACKBONE_*`` variables, nested with ``__``
   (``BACKBONE_REDIS__URL``, ``BACKBONE_CACHE__TTL_SECONDS``), and the tier as
   ``BACKBONE_TIER`` or ``DATA_BACKBONE_MODE``;
3. a ``config.yaml`` overlay (path from ``BACKBONE_CONFIG``, else ``./config.yaml``),
   where the tier is ``data_backbone_mode`` (or ``tier``); an unknown key is an error;
4. the values of the ``backbone.connections/v1`` outputs document.

Secrets are :class:`~pydantic.SecretStr` and errors never echo input values.
This module only reads files; it never writes credentials anywhere.
"""

from __future__ import annotations

import os
import ssl
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

import pydantic_settings
import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from backbone.cache.policy import CachePolicy
from backbone.connections import (
    TIERS,
    TOPIC_NAMES,
    ConnectionsDocument,
    KafkaConnection,
    RedisConnection,
    Tier,
    TimescaleConnection,
    TopicInfo,
)
from backbone.contract import ContractPolicy

__all__ = [
    "MODE_ENV",
    "MODE_KEY",
    "BackboneSettings",
    "KafkaConnectionSettings",
    "RedisConnectionSettings",
    "SettingsError",
    "TimescaleConnectionSettings",
    "load_settings",
    "parse_redis_url",
    "section_values",
]

#: The operators' names for the tier: the environment variable and the config.yaml key.
MODE_ENV = "DATA_BACKBONE_MODE"
MODE_KEY = "data_backbone_mode"

_Section = TypeVar("_Section", bound="_ClientSettings")


class SettingsError(ValueError):
    """The settings cannot be used; the message names each bad field, never its value."""


def section_values(section: BaseModel) -> dict[str, Any]:
    """Every field of a model, by name, values as they are (secrets stay :class:`SecretStr`).

    The one generic path from a document section to settings: it copies every
    field the section's class declares, so none can be dropped on the way.
    """
    return {name: getattr(section, name) for name in type(section).model_fields}


class _ClientSettings(BaseModel):
    """Mixin of the settings classes: build one from the document's section."""

    @classmethod
    def from_section(cls: type[_Section], section: BaseModel, **knobs: Any) -> _Section:
        """The settings for a document section (every field kept), plus client ``knobs``."""
        return cls.model_validate({**section_values(section), **knobs})


# --- Redis ---------------------------------------------------------------------------


def _split_hosts(text: str, scheme: str) -> list[str]:
    hosts = [h for h in text.split(",") if h]
    if not hosts:
        raise ValueError(f"redis.url: a {scheme}:// URL needs host:port after the scheme")
    return hosts


def parse_redis_url(url: str) -> dict[str, Any]:
    """The :class:`RedisConnectionSettings` fields a Redis URL sets.

    ``redis://[user:password@]host[:port][/db]``, ``rediss://`` (TLS), and
    ``redis+sentinel://[user:password@]host:port,host:port/master_name[/db]``
    (``rediss+sentinel://`` with TLS). Credentials are percent-decoded; errors
    never repeat the URL, which may hold a password.
    """
    scheme, sep, rest = url.strip().partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("redis", "rediss", "redis+sentinel", "rediss+sentinel"):
        raise ValueError(
            "redis.url must start with redis://, rediss:// or redis+sentinel:// "
            "(rediss+sentinel:// for TLS)"
        )
    netloc, _, path = rest.partition("/")
    path, _, _query = path.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    values: dict[str, Any] = {"tls": scheme.startswith("rediss")}
    if at:
        user, colon, password = userinfo.partition(":")
        if user:
            values["username"] = unquote(user)
        if colon:
            values["password"] = unquote(password)
    parts = [p for p in path.split("/") if p]
    if scheme.endswith("+sentinel"):
        if not parts:
            raise ValueError("redis.url: a redis+sentinel:// URL ends with /master_name")
        values.update(
            mode="sentinel",
            sentinels=_split_hosts(hosts, scheme),
            master_name=unquote(parts[0]),
            host=None,
            port=None,
        )
        parts = parts[1:]
    else:
        address = _split_hosts(hosts, scheme)
        if len(address) > 1:
            raise ValueError(f"redis.url: a {scheme}:// URL names one server")
        if address[0].startswith("["):  # [IPv6]:port
            host, _, port = address[0][1:].partition("]")
            port = port.removeprefix(":")
        else:
            host, _, port = address[0].partition(":")
        values.update(mode="standalone", host=host, port=port or "6379")
    if parts:
        values["db"] = parts[0]
    return values


class RedisConnectionSettings(RedisConnection, _ClientSettings):
    """The document's Redis section plus the client's knobs.

    ``url`` (``redis://``, ``rediss://``, ``redis+sentinel://``) sets the fields it
    carries, over any other source's values for those fields.
    """

    #: A Redis URL; a secret, since it may hold the password.
    url: SecretStr | None = None
    #: Verify certificates and host names whenever TLS is on (the default).
    ssl_verify: bool = True
    #: Seconds to connect and to wait for each reply.
    socket_timeout: float = Field(default=2.0, gt=0)
    #: The connection pool's size (redis-py's ``max_connections``; 100 is its own default).
    max_connections: int = Field(default=100, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _apply_url(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("url") is None:
            return data
        url = data["url"]
        text = url.get_secret_value() if isinstance(url, SecretStr) else str(url)
        return {**data, **parse_redis_url(text)}

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
            "max_connections": self.max_connections,
        }
        return {**kwargs, **self.tls_kwargs()}

    def tls_kwargs(self) -> dict[str, Any]:
        """redis-py's TLS arguments (empty without TLS): the CA bundle, and
        certificates and host names verified unless ``ssl_verify`` is off."""
        if not self.tls:
            return {}
        return {
            "ssl": True,
            "ssl_ca_certs": self.ssl_cafile,
            "ssl_cert_reqs": "required" if self.ssl_verify else "none",
            "ssl_check_hostname": self.ssl_verify,
        }

    def sentinel_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the connections to the Sentinels themselves."""
        kwargs: dict[str, Any] = {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_timeout,
        }
        if self.sentinel_password is not None:
            kwargs["password"] = self.sentinel_password.get_secret_value()
        # The Sentinels serve TLS like the servers they watch.
        return {**kwargs, **self.tls_kwargs()}


# --- Kafka ---------------------------------------------------------------------------


def _default_topics() -> dict[str, TopicInfo]:
    return {logical: TopicInfo(name=name) for logical, name in TOPIC_NAMES.items()}


class KafkaConnectionSettings(KafkaConnection, _ClientSettings):
    """The document's Kafka section plus the client's knobs.

    ``topics`` defaults to the standard names; a source may rename some of them
    (``topics: {daily_bars: my.bars}``) and keep the defaults for the rest.
    """

    topics: dict[str, TopicInfo] = Field(default_factory=_default_topics)
    #: Verify the brokers' certificates and host names when TLS is used (the default).
    ssl_verify: bool = True
    #: kafka-python's ``request_timeout_ms``, in seconds (its default: 30).
    request_timeout_seconds: float = Field(default=30.0, gt=0)

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return (
            [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else value
        )

    @field_validator("topics", mode="before")
    @classmethod
    def _over_defaults(cls, value: Any) -> Any:
        return {**_default_topics(), **value} if isinstance(value, dict) else value

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

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


# --- PostgreSQL / TimescaleDB -----------------------------------------------------


class TimescaleConnectionSettings(TimescaleConnection, _ClientSettings):
    """The document's Timescale section plus the client's knobs (libpq and the pool)."""

    #: Connections the pool keeps open; at least 1, so opening proves the server answers.
    pool_min_size: int = Field(default=1, ge=1)
    pool_max_size: int = Field(default=4, ge=1)
    #: libpq's ``connect_timeout`` per host, seconds.
    connect_timeout_seconds: int = Field(default=5, ge=1)

    @field_validator("hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return [h for h in value.split(",") if h.strip()] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _pool_bounds(self) -> TimescaleConnectionSettings:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("timescale.pool_min_size must not exceed timescale.pool_max_size")
        return self

    @property
    def endpoint(self) -> str:
        return ",".join(str(h) for h in self.hosts)

    def conninfo(self, *, target_session_attrs: str = "read-write") -> str:
        """A libpq DSN over all hosts, *without* the password (pass it separately)."""
        return (
            f"{super().conninfo(target_session_attrs=target_session_attrs)} "
            f"connect_timeout={self.connect_timeout_seconds}"
        )

    def connect_kwargs(self) -> dict[str, Any]:
        """``psycopg.connect(conninfo, **connect_kwargs())``: the password, kept out of the DSN."""
        return {"password": self.password.get_secret_value()} if self.password else {}


# --- sources ---------------------------------------------------------------------------

# The document and the config file are per call, not per class: pass them to the
# sources through context variables set by load_settings for one construction.
_DOCUMENT_VALUES: ContextVar[dict[str, Any] | None] = ContextVar("_DOCUMENT_VALUES", default=None)
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("_CONFIG_FILE", default=None)


def _config_file() -> Path:
    explicit = _CONFIG_FILE.get()
    if explicit is not None:
        return explicit
    return Path(os.environ.get("BACKBONE_CONFIG", "config.yaml"))


def _one_tier(values: dict[str, Any], names: tuple[str, str], where: str) -> dict[str, Any]:
    """Fold two spellings of the tier into ``tier``; refuse if they disagree."""
    given = {n: v for n in names if (v := values.pop(n, None)) is not None}
    found = {str(v).strip().lower() for v in given.values()}
    if len(found) > 1:
        raise SettingsError(
            f"{where}: {' and '.join(given)} disagree; set the tier once ({' or '.join(TIERS)})"
        )
    if found:
        values["tier"] = found.pop()
    return values


class _ModeEnvSource(PydanticBaseSettingsSource):
    """``DATA_BACKBONE_MODE``, the operators' name for ``BACKBONE_TIER``."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values = {MODE_ENV: os.environ.get(MODE_ENV) or None}
        values["BACKBONE_TIER"] = os.environ.get("BACKBONE_TIER") or None
        return _one_tier(values, ("BACKBONE_TIER", MODE_ENV), "the environment")


class _EnvSource(EnvSettingsSource):
    """``BACKBONE_*`` variables; a list may be written comma-separated (``h1:9092,h2:9092``)."""

    def decode_complex_value(self, field_name: str, field: Any, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            return value  # not JSON: the field's own validator reads it (or names the field)


class _YamlSource(YamlConfigSettingsSource):
    """config.yaml, where the tier may be spelled ``data_backbone_mode``."""

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        if not isinstance(data, dict):
            raise SettingsError(f"{self.yaml_file_path} must hold a mapping of settings")
        return _one_tier(dict(data), ("tier", MODE_KEY), str(self.yaml_file_path))


class _DocumentSource(PydanticBaseSettingsSource):
    """The outputs document, lowest priority."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_DOCUMENT_VALUES.get() or {})


class BackboneSettings(BaseSettings):
    """Everything the runtime is configured with; build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="BACKBONE_",
        env_nested_delimiter="__",
        extra="forbid",
        hide_input_in_errors=True,
        validate_default=True,
    )

    #: ``data_backbone_mode``; ``None`` lets the runtime decide (see ``docs/configuration.md``).
    tier: Tier | None = None
    stack: str | None = None
    #: Prefix of every cache key and label of every cache metric.
    namespace: str = "backbone"
    cache: CachePolicy = CachePolicy()
    #: The bar contract's settings (``docs/data-contract.md``).
    contract: ContractPolicy = ContractPolicy()
    streaming_enabled: bool = True
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    heartbeat_interval_seconds: float = Field(default=2.0, gt=0)
    #: How often a consumer publishes its report to ``telemetry.ingest.health``.
    health_interval_seconds: float = Field(default=10.0, gt=0)
    #: How often ``backbone consume`` logs its one-line summary.
    summary_interval_seconds: float = Field(default=30.0, gt=0)
    validation_timeout_seconds: float = Field(default=3.0, gt=0)
    #: Refuse the institutional tier when Redis does not answer, instead of
    #: starting in cache-degraded mode (``--require-cache`` sets it per command).
    require_cache: bool = False
    #: Seconds between the probes that re-attach a detached cache.
    cache_probe_interval_seconds: float = Field(default=2.0, gt=0)
    #: Bars sent to Kafka and not yet acknowledged, at most; past it ``ingest``
    #: waits for acknowledgements (and fails loudly when none come).
    max_bars_in_flight: int = Field(default=50_000, ge=1)
    #: How long the consumer holds a poll while the store is unreachable before
    #: it gives up with an error (its offsets stay uncommitted).
    store_outage_max_seconds: float = Field(default=300.0, gt=0)
    duckdb_path: str = ".backbone/bootstrap.duckdb"
    redis: RedisConnectionSettings | None = None
    kafka: KafkaConnectionSettings | None = None
    timescale: TimescaleConnectionSettings | None = None

    @field_validator("tier", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def has_credentials(self) -> bool:
        """Redis or Kafka credentials are configured: the default tier is institutional."""
        return any(
            section is not None and section.password is not None
            for section in (self.redis, self.kafka)
        )

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
            _ModeEnvSource(settings_cls),
            _EnvSource(settings_cls),
            _YamlSource(settings_cls, yaml_file=_config_file()),
            _DocumentSource(settings_cls),
        )


def _document_values(document: ConnectionsDocument) -> dict[str, Any]:
    """The settings an outputs document implies: each section with every field."""
    values: dict[str, Any] = {"stack": document.stack}
    for name in ("redis", "kafka", "timescale"):
        section = getattr(document, name)
        if section is not None:
            values[name] = section_values(section)
    if document.duckdb is not None:
        values["duckdb_path"] = document.duckdb.path
    if document.monitoring is not None and document.monitoring.backbone_metrics_port:
        # The port the stack's Prometheus scrapes the backbone on.
        values["metrics_port"] = document.monitoring.backbone_metrics_port
    return values


def _problems(exc: ValidationError) -> str:
    out = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "<settings>"
        if err["type"] == "extra_forbidden":
            out.append(f"{where}: unknown setting (see docs/configuration.md for the names)")
        else:
            out.append(f"{where}: {err['msg']}")
    return "; ".join(out)


def load_settings(
    document: ConnectionsDocument | None = None,
    *,
    config_file: Path | str | None = None,
    **overrides: Any,
) -> BackboneSettings:
    """Settings from ``overrides`` > environment > config.yaml > ``document``.

    Raises :class:`SettingsError` naming every bad or unknown field (never a value).
    """
    doc_token = _DOCUMENT_VALUES.set(_document_values(document) if document else None)
    file_token = _CONFIG_FILE.set(Path(config_file) if config_file is not None else None)
    try:
        return BackboneSettings(**overrides)
    except ValidationError as exc:
        problems = _problems(exc)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        # The YAML error text quotes the file, which may hold a password: not shown.
        problems = f"{_config_file()} is not valid YAML{line}"
    except pydantic_settings.SettingsError as exc:  # a BACKBONE_* value that is not JSON
        problems = str(exc).split(":", 1)[0]
    finally:
        _DOCUMENT_VALUES.reset(doc_token)
        _CONFIG_FILE.reset(file_token)
    raise SettingsError(
        f"the backbone settings are not usable ({problems}); fix the config.yaml "
        "(BACKBONE_CONFIG), the BACKBONE_* variables or the arguments"
    )
