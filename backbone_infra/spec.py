"""The stack spec: what a backbone stack *is*, as plain data.

Defined once and rendered by every target: the local provisioner
(``backbone_infra.targets.local``) starts processes from it, the Pulumi programs
(``backbone_infra.targets.docker`` / ``backbone_infra.targets.kubernetes``) declare resources from
it. Nothing here knows how a service is started.

Ports in the spec are the *service* ports a container or pod listens on. The
local renderer maps each to a free loopback port of its own choosing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The tier and size names are the outputs document's (defined once, in backbone).
from backbone.connections import DEFAULT_GROUP_PREFIX, SIZES, TIERS, TOPIC_NAMES, Size, Tier

__all__ = [
    "SIZES",
    "TIERS",
    "Images",
    "KafkaSpec",
    "MonitoringSpec",
    "PatroniSpec",
    "PostgresSpec",
    "RedisSpec",
    "Size",
    "StackSpec",
    "Tier",
    "TopicSpec",
    "build_spec",
]


DAY_MS = 24 * 60 * 60 * 1000


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Images(_Spec):
    """Container images, pinned by version: never ``latest``.

    Bitnami's versioned images moved to an unmaintained repository in 2025, so
    these are the projects' official images.
    """

    redis: str = "redis:7.4.2"
    kafka: str = "apache/kafka:4.1.1"
    timescale: str = "timescale/timescaledb-ha:pg15.13-ts2.21.3"
    redis_exporter: str = "oliver006/redis_exporter:v1.67.0"
    postgres_exporter: str = "quay.io/prometheuscommunity/postgres-exporter:v0.17.1"
    kafka_exporter: str = "danielqsj/kafka-exporter:v1.9.0"
    prometheus: str = "prom/prometheus:v2.53.4"
    alertmanager: str = "prom/alertmanager:v0.28.1"
    #: This repository's image (``Containerfile``): ``backbone consume`` and
    #: ``backbone lag-exporter``. Build and push it with the version as its tag.
    backbone: str = "market-data-backbone:0.1.0"
    grafana: str = "grafana/grafana:11.5.2"
    #: This repository's Kafka image (``images/kafka/Containerfile``), which holds
    #: the pinned Prometheus JMX agent: the brokers' init step copies the agent from
    #: it onto the volume, so nothing is downloaded when a pod starts (air-gapped
    #: clusters). Build and push it with the version as its tag.
    kafka_jmx_agent: str = "backbone-kafka:0.1.0"
    #: This repository's etcd image (``images/etcd/Containerfile``): Debian's
    #: ``etcd-server``, the version the local environment runs, as the store of
    #: Patroni on ``ha`` stacks. Build and push it with the version as its tag.
    etcd: str = "backbone-etcd:0.1.0"


class RedisSpec(_Spec):
    version: str = "7.0"
    #: Replicas besides the primary.
    replicas: int = Field(default=0, ge=0)
    #: Sentinels watching the primary; 0 means a standalone server.
    sentinels: int = Field(default=0, ge=0)
    master_name: str = "backbone"
    username: str = "backbone"
    #: The consumer's user: fills and invalidates entries of the namespace.
    consumer_username: str = "backbone-consumer"
    #: The reader's user: reads entries (and touches their LRU score), writes none.
    reader_username: str = "backbone-reader"
    #: The cache's key namespace (``backbone.settings`` ``namespace``): the
    #: application user may touch only ``NS:*`` and ``NS-*`` keys.
    namespace: str = "backbone"
    port: int = 6379
    sentinel_port: int = 26379
    maxmemory_mb: int = 256
    maxmemory_policy: str = "allkeys-lru"
    appendonly: bool = True
    #: Sentinel timings, tuned down from the defaults (30 s / 180 s) so a local
    #: failover completes in seconds. Production can raise them per stack.
    down_after_ms: int = 3000
    failover_timeout_ms: int = 10000
    quorum: int = 2
    exporter_port: int = 9121

    @property
    def nodes(self) -> int:
        return 1 + self.replicas


class TopicSpec(_Spec):
    logical: str
    name: str
    partitions: int = Field(ge=1)
    replication_factor: int = Field(ge=1)
    min_insync_replicas: int = Field(ge=1)
    retention_ms: int
    cleanup_policy: Literal["delete", "compact"] = "delete"


class KafkaSpec(_Spec):
    version: str = "4.1.1"
    brokers: int = Field(default=1, ge=1)
    #: KRaft combined mode: every broker is also a controller voter.
    combined_mode: bool = True
    client_port: int = 9092
    controller_port: int = 9093
    internal_port: int = 9094
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-512"
    username: str = "backbone"
    admin_username: str = "admin"
    #: The lag exporter's principal: DESCRIBE on topics and groups, no data.
    monitor_username: str = "backbone-monitor"
    #: The ingest writer's principal: produces to the spec topics, reads none.
    writer_username: str = "backbone-writer"
    #: The consumer-group member's principal: reads the bar topics and commits its
    #: group's offsets; produces only dead letters and health reports.
    consumer_username: str = "backbone-consumer"
    #: Consumer groups the principals may use start with this (ACLs PREFIXED).
    group_prefix: str = Field(default=DEFAULT_GROUP_PREFIX, pattern=r"^[A-Za-z0-9._-]+$")
    topics: tuple[TopicSpec, ...]
    exporter_port: int = 9404

    @property
    def replication_factor(self) -> int:
        return min(3, self.brokers)

    @property
    def min_insync_replicas(self) -> int:
        return 2 if self.brokers >= 3 else 1


class PatroniSpec(_Spec):
    """Automatic failover of PostgreSQL: Patroni on every node, etcd as its store.

    A crashed PostgreSQL under a live Patroni fails over within a loop or two
    (``primary_start_timeout_s = 0``: Patroni releases the leader key and a
    quorum standby takes it). A lost *node* (Patroni gone too) cannot release
    its key, so the standbys wait until ``ttl_s`` expires.
    Patroni 4 refuses a ``ttl`` below 20 s and requires
    ``loop_wait + 2 * retry_timeout <= ttl`` (it silently shortens the others
    otherwise); both are checked here so a spec never means something else
    than what it says. The chosen values and their trade-off: docs/storage.md.
    """

    #: Patroni's cluster name (the etcd key prefix).
    scope: str = "backbone"
    #: Seconds the leader key lives without renewal: the failover detection time.
    ttl_s: int = Field(default=20, ge=20)
    #: Seconds between two runs of Patroni's HA loop (key renewal, role checks).
    loop_wait_s: int = Field(default=2, ge=1)
    #: Seconds Patroni retries etcd and PostgreSQL before it gives up the lead.
    retry_timeout_s: int = Field(default=9, ge=3)
    #: Seconds a crashed primary's Patroni tries to restart PostgreSQL in place
    #: before failing over. 0: fail over at once when a quorum standby can take
    #: over (safe here: quorum mode promotes only a standby holding every
    #: acknowledged commit), so a crashed server costs a loop or two, not a restart.
    primary_start_timeout_s: int = Field(default=0, ge=0)
    #: Commits wait for this many standbys out of all (``ANY n``, quorum mode).
    synchronous_node_count: int = Field(default=1, ge=1)
    #: Patroni's REST API (roles, health, switchover).
    rest_port: int = 8008
    etcd_client_port: int = 2379
    etcd_peer_port: int = 2380

    @model_validator(mode="after")
    def _timeouts_fit_the_ttl(self) -> PatroniSpec:
        if self.loop_wait_s + 2 * self.retry_timeout_s > self.ttl_s:
            raise ValueError(
                f"loop_wait_s + 2 * retry_timeout_s = "
                f"{self.loop_wait_s + 2 * self.retry_timeout_s} exceeds ttl_s = {self.ttl_s}; "
                "Patroni requires loop_wait + 2*retry_timeout <= ttl: lower them or raise ttl_s"
            )
        return self


class PostgresSpec(_Spec):
    version: str = "15"
    #: Streaming standbys besides the primary.
    standbys: int = Field(default=0, ge=0)
    #: With a standby: commits wait for it (``synchronous_commit=on``).
    synchronous: bool = True
    #: Automatic failover by Patroni (``ha``); ``None``: plain PostgreSQL,
    #: where a lost primary waits for a person.
    patroni: PatroniSpec | None = None
    port: int = 5432
    dbname: str = "marketdata"
    user: str = "backbone"
    replication_user: str = "replicator"
    #: Chunk / partition width for the bars table.
    chunk_interval_days: int = 7
    #: Compress chunks older than this (TimescaleDB only).
    compress_after_days: int = 30
    #: Drop chunks older than this; 0 keeps everything.
    retention_days: int = 0
    exporter_port: int = 9187

    @property
    def nodes(self) -> int:
        return 1 + self.standbys

    @model_validator(mode="after")
    def _patroni_quorum_fits(self) -> PostgresSpec:
        if self.patroni is not None and self.patroni.synchronous_node_count > self.standbys:
            raise ValueError(
                f"patroni.synchronous_node_count={self.patroni.synchronous_node_count} "
                f"needs at least that many standbys (standbys={self.standbys})"
            )
        return self


class MonitoringSpec(_Spec):
    enabled: bool = True
    prometheus_port: int = 9090
    grafana_port: int = 3000
    scrape_interval_s: int = 5
    evaluation_interval_s: int = 5
    #: Port the backbone's own ``/metrics`` is served on by ingest processes.
    backbone_metrics_port: int = 9464
    #: Alertmanager's HTTP port (container targets; local stacks pick a free one).
    alertmanager_port: int = 9093
    #: The broker-side lag exporter's ``/metrics`` port (``backbone lag-exporter``).
    lag_exporter_port: int = 9308
    #: Where Alertmanager posts warning and critical alerts (a webhook receiver);
    #: empty: they are kept in Alertmanager only (its UI and API).
    alert_webhook_url: str = ""
    #: Base of every alert's ``runbook_url`` (``<base>/<Alert>.md``); empty:
    #: this checkout's ``docs/runbooks`` as a ``file://`` URL.
    runbook_base_url: str = ""


class Resources(_Spec):
    """Requests/limits for container targets, one size per service."""

    cpu_request: str = "250m"
    cpu_limit: str = "1"
    memory_request: str = "256Mi"
    memory_limit: str = "1Gi"
    storage: str = "5Gi"


class StackSpec(_Spec):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,38}$")
    tier: Tier
    size: Size
    redis: RedisSpec
    kafka: KafkaSpec
    postgres: PostgresSpec
    monitoring: MonitoringSpec = MonitoringSpec()
    images: Images = Images()
    resources: Resources = Resources()
    #: TLS on every listener (the default). ``False`` exists only to measure
    #: what TLS costs (``harness up --no-tls``, ``harness bench tls``); see docs/tls.md.
    tls: bool = True

    @property
    def has_services(self) -> bool:
        """Bootstrap stacks run no services: embedded DuckDB only."""
        return self.tier == "institutional"


def _topics(brokers: int) -> tuple[TopicSpec, ...]:
    rf = min(3, brokers)
    isr = 2 if brokers >= 3 else 1
    partitions = 6 if brokers >= 3 else 3
    retention = {
        "daily_bars": 30 * DAY_MS,
        "intraday_bars": 7 * DAY_MS,
        "dead_letter": 30 * DAY_MS,
        "ingest_health": 1 * DAY_MS,
    }
    return tuple(
        TopicSpec(
            logical=logical,
            name=name,
            partitions=1 if logical == "ingest_health" else partitions,
            replication_factor=rf,
            min_insync_replicas=isr,
            retention_ms=retention[logical],
        )
        for logical, name in TOPIC_NAMES.items()
    )


def build_spec(
    name: str, *, tier: Tier = "institutional", size: Size = "minimal", tls: bool = True
) -> StackSpec:
    """The spec for one of the two sizes.

    ``minimal``: 1 Redis, 1 Kafka broker, 1 PostgreSQL.
    ``ha``: Redis primary + 1 replica + 3 Sentinels; 3 KRaft brokers in combined
    mode, replication factor 3, ``min.insync.replicas=2``; PostgreSQL primary +
    2 streaming standbys under Patroni (etcd), commits waiting for any one of
    them (quorum), so one lost standby blocks nothing and a lost primary is
    replaced automatically. ``tls=False`` only to measure
    TLS's cost.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; choose one of {', '.join(TIERS)}")
    ha = size == "ha"
    brokers = 3 if ha else 1
    return StackSpec(
        name=name,
        tier=tier,
        size=size,
        redis=RedisSpec(replicas=1 if ha else 0, sentinels=3 if ha else 0),
        kafka=KafkaSpec(brokers=brokers, topics=_topics(brokers)),
        postgres=PostgresSpec(standbys=2, patroni=PatroniSpec()) if ha else PostgresSpec(),
        tls=tls,
    )
