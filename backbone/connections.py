"""The connection outputs document, ``backbone.connections/v1``.

This is the only thing the clients know about a stack. The local provisioner
writes it to ``.stacks/NAME/outputs.json``; the Pulumi programs export it as the
``connections`` stack output. Both sides build and validate it with this model.

Secrets are :class:`pydantic.SecretStr`: they never show in ``repr``, logs or
validation errors. :func:`dump_document` writes them out only when asked to,
for the 0600 outputs file and the Pulumi secret output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    model_validator,
)
from pydantic_core.core_schema import SerializationInfo

__all__ = [
    "DEFAULT_GROUP_PREFIX",
    "JOBS",
    "SCHEMA",
    "SIZES",
    "TIERS",
    "TOPIC_NAMES",
    "ConnectionsDocument",
    "ConnectionsError",
    "Credential",
    "DrillConnection",
    "DuckDBConnection",
    "HostPort",
    "Job",
    "JobPrincipals",
    "KafkaConnection",
    "MonitoringConnection",
    "RedisConnection",
    "Size",
    "Tier",
    "TimescaleConnection",
    "TopicInfo",
    "dump_document",
    "load_document",
    "parse_document",
    "write_document",
]

SCHEMA: Final = "backbone.connections/v1"

#: Logical topic name -> Kafka topic name. The spec, the provisioners and the
#: clients all use these keys.
TOPIC_NAMES: dict[str, str] = {
    "daily_bars": "market-data.daily-bars",
    "intraday_bars": "market-data.intraday-bars",
    "dead_letter": "market-data.dead-letter",
    "ingest_health": "telemetry.ingest.health",
}

#: The two tiers (``data_backbone_mode``). Defined here, once: the spec, the
#: settings and the tier toggle all import it, since the document carries it.
Tier = Literal["bootstrap", "institutional"]
TIERS: tuple[Tier, ...] = get_args(Tier)
#: Stack sizes: ``minimal`` (one node per service) or ``ha``.
Size = Literal["minimal", "ha"]
SIZES: tuple[Size, ...] = get_args(Size)
Environment = Literal["local", "docker", "kubernetes"]
#: The jobs that get their own principals (issue 11): the ingest writer, a
#: consumer-group member, a reader of the cache and the store, and the
#: monitoring exporters. Administrators appear in no document.
Job = Literal["writer", "consumer", "reader", "monitor"]
JOBS: tuple[Job, ...] = get_args(Job)
#: Every consumer group of a stack starts with this: the Kafka ACLs grant the
#: principals groups by this prefix (``PREFIXED``), not every group (``*``).
DEFAULT_GROUP_PREFIX: Final = "backbone-"


class ConnectionsError(ValueError):
    """The outputs document is missing or does not match ``backbone.connections/v1``."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    @field_serializer("*", when_used="always")
    def _reveal_when_asked(self, value: Any, info: SerializationInfo) -> Any:
        # Secrets serialise masked unless the caller passes context={"reveal": True}.
        if isinstance(value, SecretStr):
            ctx = info.context or {}
            return value.get_secret_value() if ctx.get("reveal") else "**********"
        return value


class HostPort(_Model):
    host: str
    port: int = Field(ge=1, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        # ``"host:port"`` (``"[::1]:6379"`` for IPv6) is how operators write an address.
        if isinstance(data, str):
            host, sep, port = data.strip().rpartition(":")
            if not sep or not host:
                raise ValueError("an address is written host:port")
            return {"host": host.strip("[]"), "port": port}
        return data

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class RedisConnection(_Model):
    """Redis as a client reaches it: a single server, or a Sentinel-watched primary.

    Credentials are optional here (a Redis without ACLs needs none); a document
    written by a provisioner always carries them (see :class:`ConnectionsDocument`).
    """

    mode: Literal["standalone", "sentinel"] = "standalone"
    #: standalone: the server; sentinel: empty (discover through ``sentinels``).
    host: str | None = None
    port: int | None = None
    sentinels: list[HostPort] = Field(default_factory=list)
    master_name: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    #: Sentinels may require their own password; ``None`` means none.
    sentinel_password: SecretStr | None = None
    db: int = 0
    #: TLS to the servers and the Sentinels, certificates and host names verified.
    tls: bool = False
    #: The CA bundle (PEM) the servers' certificates are verified with; never a key.
    ssl_cafile: str | None = None

    @model_validator(mode="after")
    def _mode_fields(self) -> RedisConnection:
        if self.mode == "standalone" and (self.host is None or self.port is None):
            raise ValueError("redis.mode=standalone needs redis.host and redis.port")
        if self.mode == "sentinel" and (not self.sentinels or not self.master_name):
            raise ValueError("redis.mode=sentinel needs redis.sentinels and redis.master_name")
        return self


class TopicInfo(_Model):
    """A topic and its layout. Configuration may name a topic only (``None`` layout);
    a provisioner's document always states both numbers."""

    name: str
    partitions: int | None = Field(default=None, ge=1)
    replication_factor: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


class KafkaConnection(_Model):
    bootstrap_servers: list[str] = Field(min_length=1)
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    username: str | None = None
    password: SecretStr | None = None
    #: The CA bundle (PEM) the brokers' certificates are verified with (``SASL_SSL``).
    ssl_cafile: str | None = None
    #: Keyed by the logical names in :data:`TOPIC_NAMES`.
    topics: dict[str, TopicInfo]
    #: The consumer groups the stack's principals may join and commit: those
    #: whose id starts with this (the ACLs are prefixed on it).
    group_prefix: str = Field(default=DEFAULT_GROUP_PREFIX, pattern=r"^[A-Za-z0-9._-]+$")

    @model_validator(mode="after")
    def _auth_fields(self) -> KafkaConnection:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.username and self.password
        ):
            raise ValueError(
                "kafka.security_protocol SASL_* needs sasl_mechanism, username and password"
            )
        missing = set(TOPIC_NAMES) - set(self.topics)
        if missing:
            raise ValueError(f"kafka.topics lacks {sorted(missing)}")
        return self

    def topic(self, logical: str) -> str:
        """The Kafka topic name for a logical topic (``daily_bars`` ...)."""
        return self.topics[logical].name

    def check_group(self, group_id: str) -> str:
        """``group_id`` if the stack's ACLs let its principals use it; else a
        :class:`ConnectionsError` naming the prefix (the broker would refuse
        the join with a ``GroupAuthorizationFailedError`` only at the first poll)."""
        if not group_id.startswith(self.group_prefix):
            raise ConnectionsError(
                f"consumer group {group_id!r} does not start with {self.group_prefix!r}, "
                "the prefix the stack's Kafka ACLs grant groups by; name it "
                f"{self.group_prefix + group_id!r} (or set kafka.group_prefix when "
                "provisioning the stack)"
            )
        return group_id

    def partitions(self, logical: str) -> int:
        """The partition count of a logical topic, as the document states it."""
        count = self.topics[logical].partitions
        if count is None:
            raise ConnectionsError(
                f"kafka.topics.{logical} does not state its partitions; "
                "use the stack's outputs document, which does"
            )
        return count


class TimescaleConnection(_Model):
    """PostgreSQL/TimescaleDB; ``hosts`` lists every node, primary first when known."""

    hosts: list[HostPort] = Field(min_length=1)
    dbname: str
    user: str
    #: Optional here (peer or certificate authentication); documents carry it.
    password: SecretStr | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    #: The CA bundle (PEM) libpq verifies the server with (``verify-ca``/``verify-full``).
    sslrootcert: str | None = None
    #: True when the TimescaleDB extension is installed; otherwise the schema
    #: uses native range partitioning with the same tables and columns.
    timescaledb: bool = False

    def conninfo(self, *, target_session_attrs: str = "read-write") -> str:
        """A libpq conninfo string *without* the password (pass it separately)."""
        hosts = ",".join(h.host for h in self.hosts)
        ports = ",".join(str(h.port) for h in self.hosts)
        text = (
            f"host={hosts} port={ports} dbname={self.dbname} user={self.user} "
            f"sslmode={self.sslmode} target_session_attrs={target_session_attrs}"
        )
        return f"{text} sslrootcert={self.sslrootcert}" if self.sslrootcert else text


class DuckDBConnection(_Model):
    #: File path of the embedded database; ``:memory:`` for a throwaway one.
    path: str


class MonitoringConnection(_Model):
    prometheus_url: str | None = None
    grafana_url: str | None = None
    alertmanager_url: str | None = None
    #: Port on which an ingest process serves the backbone's ``/metrics`` so
    #: the stack's Prometheus scrapes it (loopback for local stacks).
    backbone_metrics_port: int | None = Field(default=None, ge=1, le=65535)


class DrillConnection(_Model):
    """Where the harness's outage drills reach a stack by another path than the
    clients' (local stacks). Not a client setting: the settings never read it,
    and nothing answers at these addresses outside a drill."""

    #: Each Kafka broker's ``DRILL`` listener, advertised at a port only a network
    #: drill's Toxiproxy listens on: a drill's clients bootstrap here so that it can
    #: cut or slow the path to one broker (``docs/runbooks/drills.md``).
    kafka_bootstrap_servers: list[str] = Field(default_factory=list)


class Credential(_Model):
    """One principal's login to one service."""

    username: str
    password: SecretStr
    #: PostgreSQL only: the database this principal connects to when it is not
    #: the section's (the monitor role reaches only ``postgres``).
    dbname: str | None = None


class JobPrincipals(_Model):
    """A job's login to each service it uses; a service it does not use is ``None``."""

    kafka: Credential | None = None
    redis: Credential | None = None
    timescale: Credential | None = None


class ConnectionsDocument(_Model):
    """Everything a client needs to reach one stack.

    The stack's full document (``job`` ``None``) carries the all-in-one
    application principal in its sections and every job's login in
    ``principals``; a job's document (:func:`backbone.job_outputs.job_document`)
    carries only that job's sections, with its login in the standard fields.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, hide_input_in_errors=True
    )

    schema_: Literal["backbone.connections/v1"] = Field(default=SCHEMA, alias="schema")
    stack: str
    environment: Environment
    tier: Tier
    size: Size | None = None
    redis: RedisConnection | None = None
    kafka: KafkaConnection | None = None
    timescale: TimescaleConnection | None = None
    duckdb: DuckDBConnection | None = None
    monitoring: MonitoringConnection | None = None
    drill: DrillConnection | None = None
    #: The job a per-job document is for; ``None``: the stack's full document.
    job: Job | None = None
    #: Every job's logins (full document only).
    principals: dict[Job, JobPrincipals] | None = None

    @model_validator(mode="after")
    def _tier_fields(self) -> ConnectionsDocument:
        # A job's document holds only the services that job uses.
        if self.tier == "institutional" and self.job is None:
            missing = [n for n in ("redis", "kafka", "timescale") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"tier institutional needs {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _provisioned_fields(self) -> ConnectionsDocument:
        # The section models allow what an operator may leave out; a provisioned
        # stack states its credentials and topic layouts, and clients rely on that.
        lacking: list[str] = []
        if self.redis is not None:
            lacking += [
                f"redis.{n}" for n in ("username", "password") if not getattr(self.redis, n)
            ]
        if self.timescale is not None and self.timescale.password is None:
            lacking.append("timescale.password")
        if self.kafka is not None:
            lacking += [
                f"kafka.topics.{logical}.{n}"
                for logical, info in self.kafka.topics.items()
                for n in ("partitions", "replication_factor")
                if getattr(info, n) is None
            ]
        if lacking:
            raise ValueError(f"a stack's document needs {', '.join(lacking)}")
        return self


def parse_document(data: dict[str, Any] | str | bytes) -> ConnectionsDocument:
    """Validate a document; the error lists the failing fields, never their values."""
    try:
        if isinstance(data, (str, bytes)):
            return ConnectionsDocument.model_validate_json(data)
        return ConnectionsDocument.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<document>'}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)
        )
        raise ConnectionsError(
            f"not a valid {SCHEMA} document ({problems}); regenerate it with "
            "`harness up` or `pulumi stack output --json connections --show-secrets`"
        ) from None


def dump_document(doc: ConnectionsDocument, *, reveal_secrets: bool) -> dict[str, Any]:
    """The JSON-ready dict; secrets in clear text only when ``reveal_secrets``."""
    return doc.model_dump(
        mode="json", by_alias=True, exclude_none=True, context={"reveal": reveal_secrets}
    )


def write_document(doc: ConnectionsDocument, path: Path) -> Path:
    """Write the document with its secrets, readable by the owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(dump_document(doc, reveal_secrets=True), fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def load_document(path: Path | str) -> ConnectionsDocument:
    """Read and validate an outputs document from a file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConnectionsError(
            f"cannot read the outputs document {p} ({exc.strerror}); "
            "bring a stack up with `harness up --env local` or pass --outputs PATH"
        ) from None
    return _resolve_ca_paths(parse_document(raw), p.parent)


#: Each section's CA bundle field.
_CA_FIELDS = {"redis": "ssl_cafile", "kafka": "ssl_cafile", "timescale": "sslrootcert"}


def _resolve_ca_paths(doc: ConnectionsDocument, base: Path) -> ConnectionsDocument:
    """A relative CA path names a file beside the document (the Docker target's
    ``ca.crt``, saved from its ``ca_certificate`` output)."""
    updates: dict[str, Any] = {}
    for section, name in _CA_FIELDS.items():
        value = getattr(doc, section)
        path = getattr(value, name, None) if value is not None else None
        if path and not Path(path).is_absolute():
            updates[section] = value.model_copy(update={name: str(base / path)})
    return doc.model_copy(update=updates) if updates else doc
