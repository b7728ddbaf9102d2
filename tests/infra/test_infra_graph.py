"""The resource graph per target, tier and size: counts per kind, replicas,
persistence, images pinned, ports consistent with the exported outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi_rendering import (
    BOOTSTRAP_IDS,
    CONFIG_MAP,
    DOCKER_CONTAINER,
    DOCKER_IDS,
    DOCKER_IMAGE,
    DOCKER_VOLUME,
    INSTITUTIONAL_IDS,
    K8S_JOB,
    K8S_SECRET,
    K8S_SERVICE,
    KUBERNETES_IDS,
    NETWORK_POLICY,
    PDB,
    STATEFUL_SET,
    Rendering,
    config_files,
    file_named,
    k8s_object,
    name_of,
    pod_spec,
)

from backbone_infra.components.kafka_cluster import EXTERNAL_PORT, JMX_JAR, VOLUME
from backbone_infra.config import SECRET_KEYS
from backbone_infra.render.kafka import JMX_EXPORTER_RULES
from backbone_infra.render.postgres import as_owner, grant_statements, job_roles
from backbone_infra.spec import StackSpec


def stateful_replicas(spec: StackSpec) -> dict[str, int]:
    """What the spec asks for, service by service (read independently of the program)."""
    replicas = {
        "redis": 1 + spec.redis.replicas,
        "kafka": spec.kafka.brokers,
        "timescale": 1 + spec.postgres.standbys,
        "prometheus": 1,
        "grafana": 1,
        "alertmanager": 1,
        "kafka-lag": 1,
    }
    if spec.redis.sentinels:
        replicas["redis-sentinel"] = spec.redis.sentinels
    if spec.postgres.patroni is not None:
        replicas["etcd"] = 1  # Patroni's store, one member
    return replicas


@pytest.mark.parametrize("rendering", BOOTSTRAP_IDS, indirect=True)
def test_bootstrap_tier_provisions_nothing(rendering: Rendering) -> None:
    assert rendering.resources == [], [str(r) for r in rendering.resources]


@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_one_component_per_service_concern(rendering: Rendering) -> None:
    components = sorted(r.typ for r in rendering.resources if r.typ.startswith("backbone:"))
    assert components == [
        "backbone:infra:BackboneIngest",
        "backbone:infra:KafkaCluster",
        "backbone:infra:Monitoring",
        "backbone:infra:RedisDeployment",
        "backbone:infra:StackCertificates",  # TLS by default: one CA per stack
        "backbone:infra:TimescaleDatabase",
    ]


@pytest.mark.parametrize("rendering", KUBERNETES_IDS, indirect=True)
def test_kubernetes_counts_per_kind(rendering: Rendering) -> None:
    # In Kubernetes the consumer runs in the cluster too (its clients are in-network);
    # it and the lag exporter keep no state: Deployments.
    expected = {**stateful_replicas(rendering.result.spec), "backbone-ingest": 1}
    stateless = {"backbone-ingest", "kafka-lag"}
    sets = {name_of(r): k8s_object(r)["spec"]["replicas"] for r in rendering.of_type(STATEFUL_SET)}
    deployments = {
        name_of(r): k8s_object(r)["spec"]["replicas"]
        for r in rendering.of_type("kubernetes:apps/v1:Deployment")
    }
    assert sets == {k: v for k, v in expected.items() if k not in stateless}
    assert deployments == {k: v for k, v in expected.items() if k in stateless}
    n = len(expected)
    counts = rendering.count()
    assert counts[PDB] == n
    assert counts[NETWORK_POLICY] == n + 1  # one per service + the namespace's default deny
    assert counts[K8S_SERVICE] == 2 * n  # headless + client per service (no externalHost)
    assert counts[CONFIG_MAP] == n + 1  # one per service + the topic job
    # Every service but Prometheus, Alertmanager (no webhook configured) and
    # etcd holds a credential, + the job.
    assert counts[K8S_SECRET] == n - 1 - ("etcd" in expected)
    assert counts[K8S_JOB] == 1
    assert counts["kubernetes:core/v1:Namespace"] == 1
    assert counts["random:index/randomPassword:RandomPassword"] == len(SECRET_KEYS)


@pytest.mark.parametrize("rendering", DOCKER_IDS, indirect=True)
def test_docker_counts_per_kind(rendering: Rendering) -> None:
    expected = stateful_replicas(rendering.result.spec)
    per_replica = {  # main container + exporter sidecar (Kafka: JMX agent in-process + init step)
        "redis": 2,
        "redis-sentinel": 2,
        "kafka": 2,
        "timescale": 2,
        "prometheus": 1,
        "grafana": 1,
        "alertmanager": 1,
        "kafka-lag": 1,
        "etcd": 1,
    }
    counts = rendering.count()
    assert counts[DOCKER_VOLUME] == sum(expected.values())
    assert counts[DOCKER_CONTAINER] == sum(per_replica[s] * n for s, n in expected.items()) + 1
    assert counts["docker:index/network:Network"] == 1
    hostnames = sorted(
        r.plain["hostname"] for r in rendering.of_type(DOCKER_CONTAINER) if "hostname" in r.plain
    )
    assert hostnames == sorted(f"{s}-{i}" for s, n in expected.items() for i in range(1, n + 1))


def _pinned(image: str) -> bool:
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    return bool(tag) and tag != "latest"


@pytest.mark.parametrize("rendering", KUBERNETES_IDS, indirect=True)
def test_kubernetes_images_are_pinned(rendering: Rendering) -> None:
    for r in [*rendering.of_type(STATEFUL_SET), *rendering.of_type(K8S_JOB)]:
        spec = pod_spec(r)
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            assert _pinned(c["image"]), f"{r}: container {c['name']} image {c['image']} unpinned"


@pytest.mark.parametrize("rendering", DOCKER_IDS, indirect=True)
def test_docker_images_are_pinned(rendering: Rendering) -> None:
    images = {r.plain["name"] for r in rendering.of_type(DOCKER_IMAGE)}
    assert images and all(_pinned(i) for i in images), sorted(images)
    spec = rendering.result.spec
    spec_images = set(spec.images.model_dump().values())
    # Not run: Kafka's exporter (the lag exporter replaced it), etcd without Patroni.
    unused = {spec.images.kafka_exporter} | (
        {spec.images.etcd} if spec.postgres.patroni is None else set()
    )
    assert spec_images - unused <= images
    for r in rendering.of_type(DOCKER_CONTAINER):
        # Containers run the digest Docker resolved for one of the pinned RemoteImages.
        assert r.plain["image"].startswith("sha256:"), f"{r} does not use a RemoteImage"


def _document(rendering: Rendering) -> dict[str, Any]:
    return rendering.exports["connections"]


@pytest.mark.parametrize("rendering", KUBERNETES_IDS, indirect=True)
def test_kubernetes_exported_addresses_are_the_services_replicas(rendering: Rendering) -> None:
    """Every exported host is <pod>.<headless service>.<namespace> and its port is a
    container port of that StatefulSet."""
    doc = _document(rendering)
    sets = {name_of(r): r for r in rendering.of_type(STATEFUL_SET)}
    namespace = rendering.config.k8s_namespace

    def check(service: str, host: str, port: int) -> None:
        pod, headless, ns, *_ = host.split(".")
        sset = k8s_object(sets[service])
        assert headless == sset["spec"]["serviceName"] and ns == namespace, host
        assert 1 <= int(pod.rsplit("-", 1)[1]) <= sset["spec"]["replicas"], host
        ports = {
            p["containerPort"] for c in pod_spec(sets[service])["containers"] for p in c["ports"]
        }
        assert port in ports, f"{service}: exported port {port} not in {sorted(ports)}"

    for server in doc["kafka"]["bootstrap_servers"]:
        host, port = server.rsplit(":", 1)
        check("kafka", host, int(port))
    for hp in doc["timescale"]["hosts"]:
        check("timescale", hp["host"], hp["port"])
    redis = doc["redis"]
    if redis["mode"] == "sentinel":
        for hp in redis["sentinels"]:
            check("redis-sentinel", hp["host"], hp["port"])
    else:
        check("redis", redis["host"], redis["port"])


@pytest.mark.parametrize("rendering", DOCKER_IDS, indirect=True)
def test_docker_exported_addresses_are_published_loopback_ports(rendering: Rendering) -> None:
    """Every exported address is a 127.0.0.1 port that one container publishes."""
    published: dict[int, tuple[str, int]] = {}
    for r in rendering.of_type(DOCKER_CONTAINER):
        for p in r.plain.get("ports") or []:
            assert p["ip"] == "127.0.0.1", f"{r} publishes on {p['ip']}"
            assert int(p["external"]) not in published, f"host port {p['external']} reused"
            published[int(p["external"])] = (r.plain["hostname"], int(p["internal"]))
    doc = _document(rendering)
    spec = rendering.result.spec

    def check(address: str, service: str, container_port: int) -> None:
        host, port = address.rsplit(":", 1)
        assert host == "127.0.0.1", address
        hostname, internal = published[int(port)]
        assert hostname.rsplit("-", 1)[0] == service and internal == container_port, address

    for server in doc["kafka"]["bootstrap_servers"]:
        check(server, "kafka", EXTERNAL_PORT)
    for hp in doc["timescale"]["hosts"]:
        check(f"{hp['host']}:{hp['port']}", "timescale", spec.postgres.port)
    if doc["redis"]["mode"] == "sentinel":
        for hp in doc["redis"]["sentinels"]:
            check(f"{hp['host']}:{hp['port']}", "redis-sentinel", spec.redis.sentinel_port)
    else:
        check(f"{doc['redis']['host']}:{doc['redis']['port']}", "redis", spec.redis.port)
    for url, service, port in (
        (doc["monitoring"]["prometheus_url"], "prometheus", spec.monitoring.prometheus_port),
        (doc["monitoring"]["grafana_url"], "grafana", spec.monitoring.grafana_port),
    ):
        check(url.removeprefix("http://"), service, port)


@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_kafka_advertises_what_clients_are_given(rendering: Rendering) -> None:
    """A broker hands clients its advertised listeners: the exported bootstrap
    addresses must be among them, broker by broker, or clients get unreachable names."""
    servers = _document(rendering)["kafka"]["bootstrap_servers"]
    for ordinal, server in enumerate(servers, start=1):
        props = file_named(rendering, f"kafka/server-{ordinal}.properties", secret=True)
        advertised = next(
            line.split("=", 1)[1] for line in props.splitlines() if line.startswith("advertised.")
        )
        addresses = [entry.split("://", 1)[1] for entry in advertised.split(",")]
        assert server in addresses, (
            f"broker {ordinal} advertises {advertised}, clients get {server}"
        )
        assert f"node.id={ordinal}" in props


@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_kafka_quorum_lists_every_broker(rendering: Rendering) -> None:
    spec = rendering.result.spec
    server = file_named(rendering, "kafka/server-1.properties", secret=True)
    voters = next(ln for ln in server.splitlines() if ln.startswith("controller.quorum.voters="))
    ids = [v.split("@", 1)[0] for v in voters.split("=", 1)[1].split(",")]
    assert ids == [str(i) for i in range(1, spec.kafka.brokers + 1)]
    assert "process.roles=broker,controller" in server
    assert f"min.insync.replicas={spec.kafka.min_insync_replicas}" in server


@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_topics_job_creates_every_spec_topic(rendering: Rendering) -> None:
    script = file_named(rendering, "create-topics.sh")
    for t in rendering.result.spec.kafka.topics:
        line = next(ln for ln in script.splitlines() if f"--topic {t.name} " in ln)
        assert f"--partitions {t.partitions} " in line
        assert f"--replication-factor {t.replication_factor} " in line
        assert f"min.insync.replicas={t.min_insync_replicas} " in line
        assert f"retention.ms={t.retention_ms} " in line


@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_timescale_boots_the_shared_config_and_schema_with_telemetry_off(
    rendering: Rendering,
) -> None:
    from backbone.store.schema import schema_statements
    from backbone_infra.components.certificates import service_tls_files
    from backbone_infra.components.timescale_database import SERVER_KEY
    from backbone_infra.render.certificates import TLSFiles
    from backbone_infra.render.patroni import postgres_parameters
    from backbone_infra.render.postgres import postgresql_conf

    spec = rendering.result.spec.postgres
    expected = schema_statements(
        timescaledb=True,
        chunk_interval_days=spec.chunk_interval_days,
        compress_after_days=spec.compress_after_days,
        retention_days=spec.retention_days,
    )
    assert file_named(rendering, "timescale/extension.sql") == f"{expected[0]};\n"
    # The schema as the owner role, then the application's and the jobs' grants
    # (backbone_infra.render.postgres).
    owned = [*as_owner(expected[1:], spec), *grant_statements(spec, with_job_roles=True)]
    assert file_named(rendering, "timescale/schema.sql") == "".join(f"{s};\n" for s in owned)
    bootstrap = file_named(rendering, "bootstrap.sql", secret=True)
    for role in job_roles(spec):  # the writer's and the consumer's roles, verifiers only
        assert f"CREATE ROLE {role} LOGIN " in bootstrap and "PASSWORD 'SCRAM-SHA-256$" in bootstrap
    mounted = service_tls_files("timescale")
    tls = TLSFiles(ca=mounted.ca, cert=mounted.cert, key=SERVER_KEY, keystore=mounted.keystore)
    if spec.patroni is not None:
        # Under Patroni the same settings are its parameters (test_infra_patroni.py).
        config = yaml.safe_load(file_named(rendering, "timescale/patroni-1.yml", secret=True))
        parameters = config["bootstrap"]["dcs"]["postgresql"]["parameters"]
        assert parameters == postgres_parameters(spec, timescaledb=True, tls=tls)
        assert parameters["ssl"] == "on" and parameters["timescaledb.telemetry_level"] == "off"
        assert "patroni " in file_named(rendering, "timescale/start.sh")
        return
    conf = file_named(rendering, "timescale/postgresql.conf")
    assert conf == postgresql_conf(spec, listen="*", timescaledb=True, tls=tls)
    assert "ssl = on" in conf
    assert "timescaledb.telemetry_level = off" in conf
    if spec.standbys and spec.synchronous:
        assert "synchronous_standby_names = 'ANY 1 (*)'" in conf
    else:
        assert "synchronous_standby_names" not in conf
    start = file_named(rendering, "timescale/start.sh")
    assert "docker-entrypoint" not in start and 'exec "$PGBIN/postgres"' in start


@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_every_rendered_shell_script_parses(rendering: Rendering, tmp_path: Path) -> None:
    import subprocess

    scripts = {k: v for k, v in config_files(rendering).items() if k.endswith(".sh")}
    assert len(scripts) >= 5  # redis start/probe, kafka start/topics, timescale start
    for key, text in scripts.items():
        path = tmp_path / "script.sh"
        path.write_text(text)
        result = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{key}: {result.stderr}"


@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_broker_jvm_options_stay_out_of_the_container_env(rendering: Rendering) -> None:
    """Probes run Kafka's tools in the same container: a javaagent or a 512 MB heap
    in the env would start a second agent on the metrics port, or exhaust the limit."""
    spec = rendering.result.spec
    for r in rendering.resources:
        text = str(r.plain.get("envs", "")) + str(r.plain.get("spec", ""))
        assert "KAFKA_OPTS" not in text and "KAFKA_HEAP_OPTS" not in text, str(r)
    start = file_named(rendering, "kafka/start.sh")
    assert f"-javaagent:{VOLUME}/jmx/{JMX_JAR}=0.0.0.0:{spec.kafka.exporter_port}:" in start
    # The rules the local nodes run, byte for byte: one file for every target.
    assert file_named(rendering, "jmx-exporter.yml") == JMX_EXPORTER_RULES.read_text()


#: Shared by the whole stack, so parented by the stack itself.
STACK_LEVEL = {
    "random:index/randomPassword:RandomPassword",
    "docker:index/network:Network",
    "docker:index/remoteImage:RemoteImage",
    "kubernetes:core/v1:Namespace",
    "kubernetes:networking.k8s.io/v1:NetworkPolicy",  # the namespace's default deny
}


@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_every_service_resource_is_a_child_of_its_component(rendering: Rendering) -> None:
    assert len(rendering.urns) == len(rendering.resources)
    for urn in rendering.urns:
        # Parent types ... own type, below the stack itself.
        chain = [t for t in urn.split("::")[2].split("$") if t != "pulumi:pulumi:Stack"]
        if chain[-1].startswith("backbone:infra:"):
            assert len(chain) == 1, f"{urn}: components sit at the top"
        elif len(chain) == 1:
            assert chain[0] in STACK_LEVEL, f"{urn} has no component parent"
            if chain[0].endswith("NetworkPolicy"):
                assert urn.endswith("-default-deny"), urn
        else:
            assert chain[0].startswith("backbone:infra:") and len(chain) == 2, urn
