"""The Pulumi program as a function: ``run(config)`` declares one stack.

``backbone_infra/__main__.py`` calls it with the stack's configuration; the unit tests
call it once per target, tier and size under Pulumi's mocks. It renders the
stack spec (:func:`backbone_infra.spec.build_spec`) with the target's backend, then
exports the ``backbone.connections/v1`` document as the secret output
``connections`` plus human-friendly outputs. The document carries every job's
login under ``principals``, built by the one function every target uses
(:func:`backbone_infra.targets.job_principals.job_principals`) from the same
secrets the services were given, so ``harness outputs --job`` works on a
saved ``pulumi stack output --json connections --show-secrets`` too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import pulumi
import pulumi_random as random

from backbone.connections import (
    ConnectionsDocument,
    DuckDBConnection,
    HostPort,
    KafkaConnection,
    MonitoringConnection,
    RedisConnection,
    TimescaleConnection,
    TopicInfo,
    dump_document,
    parse_document,
)
from backbone.job_outputs import job_document
from backbone_infra.components.backbone_ingest import BackboneIngest, BackboneIngestArgs
from backbone_infra.components.certificates import (
    TLS_DIR,
    StackCertificates,
    StackCertificatesArgs,
)
from backbone_infra.components.kafka_cluster import SERVICE as KAFKA_SERVICE
from backbone_infra.components.kafka_cluster import KafkaCluster, KafkaClusterArgs
from backbone_infra.components.monitoring import Monitoring, MonitoringArgs
from backbone_infra.components.redis_deployment import (
    SENTINEL_SERVICE,
    RedisDeployment,
    RedisDeploymentArgs,
)
from backbone_infra.components.redis_deployment import SERVICE as REDIS_SERVICE
from backbone_infra.components.timescale_database import SERVICE as TIMESCALE_SERVICE
from backbone_infra.components.timescale_database import TimescaleDatabase, TimescaleDatabaseArgs
from backbone_infra.config import SECRET_KEYS, StackConfig
from backbone_infra.render.certificates import CA_FILE
from backbone_infra.spec import Images, Resources, StackSpec, build_spec
from backbone_infra.targets.docker import DockerBackend
from backbone_infra.targets.job_principals import (
    JOB_PASSWORD_FIELDS,
    JobPasswordValues,
    job_principals,
)
from backbone_infra.targets.kubernetes import KubernetesBackend
from backbone_infra.targets.workload import FIRST_ORDINAL, ordinals

__all__ = ["EXPORT_KEYS", "Credentials", "ProgramResult", "make_spec", "run"]

#: Stable snake_case export keys, by tier (``connections`` is always secret).
EXPORT_KEYS: dict[str, tuple[str, ...]] = {
    "bootstrap": ("connections", "environment", "tier", "size", "duckdb_path"),
    "institutional": (
        "connections",
        "environment",
        "tier",
        "size",
        "redis_mode",
        "redis_endpoints",
        "kafka_bootstrap",
        "timescale_hosts",
        "prometheus_url",
        "grafana_url",
        "grafana_admin_password",
        "ca_certificate",
    ),
}


@dataclass(frozen=True)
class Credentials:
    """Every password of a stack (the names of ``backbone_infra.config.SECRET_KEYS``); each a
    secret Output."""

    redis_password: pulumi.Output[str]
    redis_admin_password: pulumi.Output[str]
    redis_exporter_password: pulumi.Output[str]
    kafka_password: pulumi.Output[str]
    kafka_admin_password: pulumi.Output[str]
    kafka_monitor_password: pulumi.Output[str]
    postgres_password: pulumi.Output[str]
    postgres_superuser_password: pulumi.Output[str]
    postgres_reader_password: pulumi.Output[str]
    postgres_monitor_password: pulumi.Output[str]
    replication_password: pulumi.Output[str]
    grafana_admin_password: pulumi.Output[str]
    kafka_writer_password: pulumi.Output[str]
    kafka_consumer_password: pulumi.Output[str]
    redis_consumer_password: pulumi.Output[str]
    redis_reader_password: pulumi.Output[str]
    postgres_writer_password: pulumi.Output[str]
    postgres_consumer_password: pulumi.Output[str]
    redis_sentinel_password: pulumi.Output[str]

    def job_passwords(self) -> pulumi.Output[JobPasswordValues]:
        """The job principals' passwords, resolved (a secret Output)."""
        outputs = {name: getattr(self, name) for name in JOB_PASSWORD_FIELDS}
        return pulumi.Output.all(**outputs).apply(lambda got: JobPasswordValues(**got))


@dataclass
class ProgramResult:
    """What ``run`` declared: its exports and, for tests and callers, the components."""

    spec: StackSpec
    exports: dict[str, pulumi.Output[Any]]
    components: dict[str, pulumi.ComponentResource] = field(default_factory=dict)
    #: The target backend that rendered the services (its ``plan`` on Docker).
    backend: DockerBackend | KubernetesBackend | None = None


def make_spec(config: StackConfig) -> StackSpec:
    """The stack spec with the configured image and resource overrides applied."""
    spec = build_spec(config.stack, tier=config.tier, size=config.size, tls=config.tls)
    images = Images.model_validate({**spec.images.model_dump(), **config.image_overrides})
    for field_name, ref in images.model_dump().items():
        tag = ref.rsplit("/", 1)[-1].partition(":")[2]
        if not tag or tag == "latest":
            raise ValueError(
                f"image {field_name}={ref!r} is not pinned; give a version tag "
                "(never `latest`) in market-data-backbone:images"
            )
    resources = Resources.model_validate(
        {**spec.resources.model_dump(), **config.resource_overrides}
    )
    monitoring = spec.monitoring.model_copy(
        update={
            "alert_webhook_url": config.alert_webhook_url or "",
            "runbook_base_url": config.runbook_base_url or "",
        }
    )
    return spec.model_copy(
        update={"images": images, "resources": resources, "monitoring": monitoring}
    )


def _credentials(config: StackConfig) -> Credentials:
    values: dict[str, pulumi.Output[str]] = {}
    for name in SECRET_KEYS:
        given = config.secrets.get(name)
        if given is None:
            # No special characters: the values go into Redis ACL, JAAS and pgpass syntax.
            given = random.RandomPassword(
                f"{config.stack}-{name.replace('_', '-')}", length=32, special=False
            ).result
        values[name] = pulumi.Output.secret(given)
    return Credentials(**values)


def _require_distinct(passwords: dict[str, str]) -> dict[str, str]:
    """Refuse configured secrets that repeat one another: a job's document must hold
    no other principal's password, and the Sentinel password reaches every job
    document with a ``redis`` section. Names the keys, never a value."""
    same = [
        (SECRET_KEYS[a], SECRET_KEYS[b])
        for a, b in combinations(sorted(passwords), 2)
        if passwords[a] == passwords[b]
    ]
    if same:
        pairs = "; ".join(f"{a} = {b}" for a, b in same)
        raise ValueError(
            f"market-data-backbone: these config secrets are equal: {pairs}; every principal "
            "needs a password of its own: set another with "
            f"`pulumi config set --secret {same[0][1]}` (or remove it to have one generated)"
        )
    return passwords


def _backend(config: StackConfig) -> DockerBackend | KubernetesBackend:
    if config.target == "docker":
        return DockerBackend(
            stack=config.stack,
            external_host=config.external_host or "127.0.0.1",
            host_port_base=config.host_port_base,
        )
    return KubernetesBackend(
        stack=config.stack,
        namespace=config.k8s_namespace,
        external_host=config.external_host,
        node_port_base=config.node_port_base,
        storage_class=config.storage_class,
    )


def _document(spec: StackSpec, environment: str, values: dict[str, Any]) -> dict[str, Any]:
    """Build and validate the connections document; secrets in clear for the secret output."""
    doc = ConnectionsDocument.model_validate(
        {
            "schema": "backbone.connections/v1",
            "stack": spec.name,
            "environment": environment,
            "tier": spec.tier,
            "size": spec.size,
            **values,
        }
    )
    return dump_document(doc, reveal_secrets=True)


def _consumer_document(full: dict[str, Any]) -> dict[str, Any]:
    return dump_document(job_document(parse_document(full), "consumer"), reveal_secrets=True)


def _bootstrap(spec: StackSpec, config: StackConfig) -> ProgramResult:
    path = config.duckdb_path or f".stacks/{spec.name}/bars.duckdb"
    document = _document(spec, config.target, {"duckdb": DuckDBConnection(path=path)})
    return ProgramResult(
        spec=spec,
        exports={
            "connections": pulumi.Output.secret(document),
            "environment": pulumi.Output.from_input(config.target),
            "tier": pulumi.Output.from_input(spec.tier),
            "size": pulumi.Output.from_input(spec.size),
            "duckdb_path": pulumi.Output.from_input(path),
        },
    )


def _certificates(spec: StackSpec, backend: Any) -> StackCertificates | None:
    """The stack's CA and one certificate per service naming every address
    its clients and peers dial: each replica, the service, the loopback names
    a container's own probes and sidecars use, and a published host."""
    if not spec.tls:
        return None

    def names(*services: tuple[str, int]) -> list[str]:
        hosts = [backend.replica_host(s, i) for s, n in services for i in ordinals(n)]
        hosts += [backend.service_host(s) for s, _ in services]
        external = [backend.external(s, FIRST_ORDINAL, 1) for s, _ in services]
        hosts += [e.host for e in external if e is not None]
        return list(dict.fromkeys([*hosts, "localhost", "127.0.0.1"]))

    r = spec.redis
    return StackCertificates(
        f"{spec.name}-tls",
        StackCertificatesArgs(
            stack=spec.name,
            hosts={
                REDIS_SERVICE: names((REDIS_SERVICE, r.nodes), (SENTINEL_SERVICE, r.sentinels)),
                KAFKA_SERVICE: names((KAFKA_SERVICE, spec.kafka.brokers)),
                TIMESCALE_SERVICE: names((TIMESCALE_SERVICE, spec.postgres.nodes)),
            },
        ),
    )


def _institutional(spec: StackSpec, config: StackConfig) -> ProgramResult:
    creds = _credentials(config)
    backend = _backend(config)
    backend.bind(None)
    certs = _certificates(spec, backend)
    #: Where clients find the CA: in-cluster pods have it mounted; clients on
    #: a Docker host keep the ``ca_certificate`` output beside the document.
    ca_path = (
        None if certs is None else (CA_FILE if backend.clients_outside else f"{TLS_DIR}/{CA_FILE}")
    )
    redis = RedisDeployment(
        f"{spec.name}-redis",
        RedisDeploymentArgs(
            spec,
            backend,
            creds.redis_password,
            creds.redis_admin_password,
            creds.redis_exporter_password,
            certificates=certs,
            job_passwords=(creds.redis_consumer_password, creds.redis_reader_password),
            sentinel_password=creds.redis_sentinel_password,
        ),
    )
    kafka = KafkaCluster(
        f"{spec.name}-kafka",
        KafkaClusterArgs(
            spec,
            backend,
            creds.kafka_password,
            creds.kafka_admin_password,
            creds.kafka_monitor_password,
            certificates=certs,
            job_passwords=(creds.kafka_writer_password, creds.kafka_consumer_password),
        ),
    )
    timescale = TimescaleDatabase(
        f"{spec.name}-timescale",
        TimescaleDatabaseArgs(
            spec,
            backend,
            creds.postgres_password,
            creds.postgres_superuser_password,
            creds.replication_password,
            creds.postgres_reader_password,
            creds.postgres_monitor_password,
            certificates=certs,
            job_passwords=(creds.postgres_writer_password, creds.postgres_consumer_password),
        ),
    )
    monitoring = Monitoring(
        f"{spec.name}-monitoring",
        MonitoringArgs(
            spec,
            backend,
            [*redis.services, *kafka.services, *timescale.services],
            creds.grafana_admin_password,
        ),
    )
    topics = {
        t.logical: TopicInfo(
            name=t.name, partitions=t.partitions, replication_factor=t.replication_factor
        )
        for t in spec.kafka.topics
    }

    def build(got: dict[str, Any]) -> dict[str, Any]:
        redis_pw, kafka_pw, pg_pw = got["redis"], got["kafka"], got["timescale"]
        return _document(
            spec,
            backend.environment,
            {
                "redis": RedisConnection(
                    mode=redis.mode,
                    host=redis.endpoint.host if redis.endpoint else None,
                    port=redis.endpoint.port if redis.endpoint else None,
                    sentinels=redis.sentinels,
                    master_name=redis.master_name if redis.sentinels else None,
                    username=redis.username,
                    password=redis_pw,
                    # The Sentinels' own password, as on local and podman stacks.
                    sentinel_password=got["sentinel"],
                    tls=certs is not None,
                    ssl_cafile=ca_path,
                ),
                "kafka": KafkaConnection(
                    bootstrap_servers=[str(h) for h in kafka.bootstrap_servers],
                    security_protocol=kafka.security_protocol,
                    ssl_cafile=ca_path,
                    sasl_mechanism=kafka.sasl_mechanism,
                    username=kafka.username,
                    password=kafka_pw,
                    topics=topics,
                    group_prefix=spec.kafka.group_prefix,
                ),
                "timescale": TimescaleConnection(
                    hosts=timescale.hosts,
                    dbname=timescale.dbname,
                    user=timescale.user,
                    password=pg_pw,
                    sslmode="verify-full" if certs is not None else "disable",
                    sslrootcert=ca_path,
                    timescaledb=True,
                ),
                "monitoring": MonitoringConnection(
                    prometheus_url=monitoring.prometheus_url,
                    grafana_url=monitoring.grafana_url,
                    alertmanager_url=monitoring.alertmanager_url,
                ),
                # The same logins the services were configured with: one function
                # for every target, over the same secrets.
                "principals": job_principals(spec, got["jobs"]),
            },
        )

    every = {name: getattr(creds, name) for name in SECRET_KEYS}
    document = pulumi.Output.all(
        redis=redis.password,
        kafka=kafka.password,
        timescale=timescale.password,
        sentinel=redis.sentinel_password,
        jobs=creds.job_passwords(),
        distinct=pulumi.Output.all(**every).apply(_require_distinct),
    ).apply(build)
    ingest = BackboneIngest(
        f"{spec.name}-backbone",
        BackboneIngestArgs(
            spec,
            backend,
            kafka_bootstrap=kafka.internal_bootstrap,
            # The lag exporter logs in as the DESCRIBE-only monitoring principal.
            kafka_username=spec.kafka.monitor_username,
            kafka_sasl_mechanism=kafka.sasl_mechanism,
            kafka_password=creds.kafka_monitor_password,
            # Only where the document's addresses are in-network (Kubernetes);
            # the consumer gets its job's document, not every principal's.
            document=None if backend.clients_outside else document.apply(_consumer_document),
            certificates=certs,
        ),
    )
    redis_endpoints: list[HostPort] = redis.sentinels or [redis.endpoint]  # type: ignore[list-item]
    return ProgramResult(
        spec=spec,
        exports={
            "connections": pulumi.Output.secret(document),
            "environment": pulumi.Output.from_input(backend.environment),
            "tier": pulumi.Output.from_input(spec.tier),
            "size": pulumi.Output.from_input(spec.size),
            "redis_mode": pulumi.Output.from_input(redis.mode),
            "redis_endpoints": pulumi.Output.from_input([str(h) for h in redis_endpoints]),
            "kafka_bootstrap": pulumi.Output.from_input(
                ",".join(str(h) for h in kafka.bootstrap_servers)
            ),
            "timescale_hosts": pulumi.Output.from_input([str(h) for h in timescale.hosts]),
            "prometheus_url": pulumi.Output.from_input(monitoring.prometheus_url),
            "grafana_url": pulumi.Output.from_input(monitoring.grafana_url),
            "grafana_admin_password": monitoring.grafana_admin_password,
            # Public: what clients verify the servers with (save it as the
            # document's ssl_cafile; empty without TLS).
            "ca_certificate": certs.ca_cert_pem
            if certs is not None
            else pulumi.Output.from_input(""),
        },
        components={
            "redis": redis,
            "kafka": kafka,
            "timescale": timescale,
            "monitoring": monitoring,
            "backbone": ingest,
        },
        backend=backend,
    )


def _local(spec: StackSpec, config: StackConfig) -> ProgramResult:
    # Imported here: the local target pulls in the local provisioner.
    from backbone_infra.targets.local import pulumi_resource as local

    out = local.deploy(spec, config)
    connections = out.apply(lambda o: o["connections"])
    monitoring = connections.apply(lambda doc: (doc or {}).get("monitoring") or {})
    return ProgramResult(
        spec=spec,
        exports={
            "connections": pulumi.Output.secret(connections),
            "environment": pulumi.Output.from_input("local"),
            "tier": pulumi.Output.from_input(spec.tier),
            "size": pulumi.Output.from_input(spec.size),
            # The provider's whole output is secret because it holds the document;
            # these derived values are not, so operators can read them plainly.
            "stack_dir": pulumi.Output.unsecret(out.apply(lambda o: o["stack_dir"])),
            "outputs_path": pulumi.Output.unsecret(out.apply(lambda o: o["outputs_path"])),
            "prometheus_url": pulumi.Output.unsecret(
                monitoring.apply(lambda m: m.get("prometheus_url"))
            ),
            "grafana_url": pulumi.Output.unsecret(monitoring.apply(lambda m: m.get("grafana_url"))),
        },
    )


def run(config: StackConfig, *, export: bool = True) -> ProgramResult:
    """Declare the stack for ``config`` and (by default) export its outputs."""
    spec = make_spec(config)
    if config.target == "local":
        result = _local(spec, config)
    elif spec.has_services:
        result = _institutional(spec, config)
    else:
        result = _bootstrap(spec, config)
    if export:
        for key, value in result.exports.items():
            pulumi.export(key, value)
    return result
