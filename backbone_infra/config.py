"""The stack configuration, read once from ``pulumi.Config``.

Keys live under the project namespace (``market-data-backbone:target`` ...):

=====================  ========================================================
``target``             ``docker`` | ``kubernetes`` | ``local`` (required)
``tier``               ``bootstrap`` | ``institutional`` (default institutional)
``size``               ``minimal`` | ``ha`` (default minimal)
``namespace``          Kubernetes namespace (default ``backbone-<stack>``)
``externalHost``       host name clients outside the network use
                       (Docker default ``127.0.0.1``; Kubernetes: unset = none)
``hostPortBase``       first host port Docker publishes (default 21000)
``nodePortBase``       first NodePort on Kubernetes (default 31000)
``storageClass``       Kubernetes storage class for the PVCs (default: cluster's)
``images``             object: overrides of ``backbone_infra.spec.Images`` fields
``resources``          object: overrides of ``backbone_infra.spec.Resources`` fields
``duckdbPath``         bootstrap tier: DuckDB file (default ``.stacks/<stack>/bars.duckdb``)
=====================  ========================================================

Secrets (``pulumi config set --secret``), each optional: ``redisPassword``,
``redisAdminPassword``, ``redisExporterPassword``, ``kafkaPassword``, ``kafkaAdminPassword``,
``kafkaMonitorPassword``,
``postgresPassword``, ``postgresSuperuserPassword``, ``postgresReaderPassword``,
``postgresMonitorPassword``, ``replicationPassword``,
``grafanaAdminPassword``; the job principals' ``kafkaWriterPassword``,
``kafkaConsumerPassword``, ``redisConsumerPassword``, ``redisReaderPassword``,
``postgresWriterPassword``, ``postgresConsumerPassword``; and the Sentinels'
``redisSentinelPassword`` (it must differ from every other password: each job
document with a ``redis`` section carries it). A missing one is generated with
``RandomPassword``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi

from backbone_infra.spec import SIZES, TIERS, Size, Tier

__all__ = ["SECRET_KEYS", "TARGETS", "StackConfig", "Target", "read_config"]

Target = Literal["docker", "kubernetes", "local"]
TARGETS: tuple[Target, ...] = ("docker", "kubernetes", "local")

#: Credential name -> config key. The names are the fields of the secrets the
#: components take (``Credentials`` in ``backbone_infra.program``).
SECRET_KEYS: dict[str, str] = {
    "redis_password": "redisPassword",
    "redis_admin_password": "redisAdminPassword",
    "redis_exporter_password": "redisExporterPassword",
    "kafka_password": "kafkaPassword",
    "kafka_admin_password": "kafkaAdminPassword",
    "kafka_monitor_password": "kafkaMonitorPassword",
    "postgres_password": "postgresPassword",
    "postgres_superuser_password": "postgresSuperuserPassword",
    "postgres_reader_password": "postgresReaderPassword",
    "postgres_monitor_password": "postgresMonitorPassword",
    "replication_password": "replicationPassword",
    "grafana_admin_password": "grafanaAdminPassword",
    # One principal per job (issue 11): Kafka's writer and consumer, Redis's
    # consumer and reader, PostgreSQL's writer and consumer roles.
    "kafka_writer_password": "kafkaWriterPassword",
    "kafka_consumer_password": "kafkaConsumerPassword",
    "redis_consumer_password": "redisConsumerPassword",
    "redis_reader_password": "redisReaderPassword",
    "postgres_writer_password": "postgresWriterPassword",
    "postgres_consumer_password": "postgresConsumerPassword",
    # Sentinel's own requirepass (ha): every job document with a redis section
    # carries it, so it is no principal's password.
    "redis_sentinel_password": "redisSentinelPassword",
}


@dataclass(frozen=True)
class StackConfig:
    """Everything the program reads from the stack's configuration."""

    stack: str
    target: Target
    tier: Tier = "institutional"
    size: Size = "minimal"
    namespace: str | None = None
    external_host: str | None = None
    host_port_base: int = 21000
    node_port_base: int = 31000
    storage_class: str | None = None
    image_overrides: dict[str, str] = field(default_factory=dict)
    resource_overrides: dict[str, str] = field(default_factory=dict)
    duckdb_path: str | None = None
    #: Where Alertmanager posts warning and critical alerts (``alertWebhookUrl``).
    alert_webhook_url: str | None = None
    #: Base URL of the alerts' runbook links (``runbookBaseUrl``).
    runbook_base_url: str | None = None
    #: Credentials given with ``pulumi config set --secret``; missing ones are generated.
    secrets: dict[str, pulumi.Input[str]] = field(default_factory=dict)
    #: TLS on every listener (``tls``, default true); false only to measure its cost.
    tls: bool = True

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(
                f"market-data-backbone:target is {self.target!r}; set it to one of "
                f"{', '.join(TARGETS)} with `pulumi config set target docker`"
            )
        if self.tier not in TIERS:
            raise ValueError(
                f"market-data-backbone:tier is {self.tier!r}; choose one of {', '.join(TIERS)}"
            )
        if self.size not in SIZES:
            raise ValueError(
                f"market-data-backbone:size is {self.size!r}; choose one of {', '.join(SIZES)}"
            )

    @property
    def k8s_namespace(self) -> str:
        return self.namespace or f"backbone-{self.stack}"


def _object(cfg: pulumi.Config, key: str) -> dict[str, str]:
    raw: Any = cfg.get_object(key) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"market-data-backbone:{key} must be an object of strings")
    return {str(k): str(v) for k, v in raw.items()}


def read_config(cfg: pulumi.Config | None = None, *, stack: str | None = None) -> StackConfig:
    """Read the stack's configuration once; ``target`` is required."""
    cfg = cfg or pulumi.Config()
    secrets: dict[str, pulumi.Input[str]] = {}
    for name, key in SECRET_KEYS.items():
        value = cfg.get_secret(key)
        if value is not None:
            secrets[name] = value
    return StackConfig(
        stack=stack or pulumi.get_stack(),
        target=cfg.require("target"),  # type: ignore[arg-type]
        tier=cfg.get("tier") or "institutional",  # type: ignore[arg-type]
        size=cfg.get("size") or "minimal",  # type: ignore[arg-type]
        namespace=cfg.get("namespace"),
        external_host=cfg.get("externalHost"),
        host_port_base=cfg.get_int("hostPortBase") or 21000,
        node_port_base=cfg.get_int("nodePortBase") or 31000,
        storage_class=cfg.get("storageClass"),
        image_overrides=_object(cfg, "images"),
        resource_overrides=_object(cfg, "resources"),
        duckdb_path=cfg.get("duckdbPath"),
        alert_webhook_url=cfg.get("alertWebhookUrl"),
        runbook_base_url=cfg.get("runbookBaseUrl"),
        secrets=secrets,
        tls=cfg.get_bool("tls") is not False,
    )
