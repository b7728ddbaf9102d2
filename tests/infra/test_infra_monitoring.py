"""Monitoring is attached: every replica of every service has an exporter and
a scrape target that points at it; the config and rules pass promtool; Grafana
is provisioned with the Prometheus datasource and the dashboards."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from pulumi_rendering import (
    DOCKER_CONTAINER,
    DOCKER_IDS,
    INSTITUTIONAL_IDS,
    KUBERNETES_IDS,
    STATEFUL_SET,
    Rendering,
    config_files,
    file_named,
    k8s_object,
    name_of,
    pod_spec,
)

from backbone_infra.monitoring.assets import dashboards_dir, rules_file
from backbone_infra.monitoring.promtool import check_config
from backbone_infra.render.prometheus import EXPORTER_JOBS, JOB_BACKBONE
from backbone_infra.targets.workload import FIRST_ORDINAL


def prometheus_config(rendering: Rendering) -> dict:
    return yaml.safe_load(file_named(rendering, "backbone/prometheus.yml"))


def scrape_targets(rendering: Rendering) -> dict[str, list[str]]:
    return {
        job["job_name"]: [t for s in job["static_configs"] for t in s["targets"]]
        for job in prometheus_config(rendering)["scrape_configs"]
    }


@pytest.mark.parametrize("rendering", KUBERNETES_IDS, indirect=True)
def test_kubernetes_every_replica_is_scraped_at_an_exporter_port(rendering: Rendering) -> None:
    sets = {
        name_of(r): r
        for kind in (STATEFUL_SET, "kubernetes:apps/v1:Deployment")
        for r in rendering.of_type(kind)
    }
    scraped: set[tuple[str, int]] = set()
    for job, targets in scrape_targets(rendering).items():
        for target in targets:
            host, port = target.rsplit(":", 1)
            pod = host.split(".")[0]
            service, _, ordinal = pod.rpartition("-")
            if service not in sets:
                continue  # localhost (Prometheus itself) and the backbone's own metrics
            ports = {
                p["containerPort"]: p.get("name")
                for c in pod_spec(sets[service])["containers"]
                for p in c["ports"]
            }
            assert int(port) in ports, f"job {job} scrapes {target}: no container serves {port}"
            scraped.add((service, int(ordinal)))
    every_replica = {
        (name, i)
        for name, r in sets.items()
        for i in range(1, k8s_object(r)["spec"]["replicas"] + 1)
    }
    # The consumer is scraped through its Service, the target the config always had.
    (backbone,) = scrape_targets(rendering)["backbone"]
    host, port = backbone.rsplit(":", 1)
    assert host.split(".")[0] == "backbone-ingest"
    consumer_ports = [p["containerPort"] for c in pod_spec(sets["backbone-ingest"])["containers"]
                      for p in c["ports"]]  # fmt: skip
    assert int(port) in consumer_ports
    # Not scraped: Prometheus itself (localhost), the consumer (its Service, above)
    # and Patroni's etcd, which the local stack does not monitor either.
    unscraped = {("prometheus", FIRST_ORDINAL), ("backbone-ingest", FIRST_ORDINAL)}
    unscraped.add(("etcd", FIRST_ORDINAL))
    assert every_replica - unscraped <= scraped, every_replica - scraped


@pytest.mark.parametrize("rendering", DOCKER_IDS, indirect=True)
def test_docker_every_replica_is_scraped_where_its_exporter_listens(rendering: Rendering) -> None:
    containers = rendering.of_type(DOCKER_CONTAINER)
    by_host = {r.plain["hostname"]: r for r in containers if "hostname" in r.plain}
    scraped = set()
    for job, targets in scrape_targets(rendering).items():
        for target in targets:
            host, port = target.rsplit(":", 1)
            if host not in by_host:
                continue
            # The exporter is the replica's container or a sidecar in its network namespace.
            replica = by_host[host].plain["name"]
            pod = [r for r in containers if r.plain["name"].startswith(replica)]
            said = " ".join(
                str(r.plain.get(k)) for r in pod for k in ("envs", "entrypoints", "command")
            )
            # ... or the start script the container runs (Kafka's javaagent).
            said += " ".join(
                str(u["content"])
                for r in pod
                for u in r.plain.get("uploads") or []
                if u["file"].endswith("/start.sh")
            )
            assert re.search(rf"[:=]{port}\b", said), (
                f"job {job}: nothing in {host} listens on {port}"
            )
            scraped.add(host)
    # Patroni's etcd is not monitored, as locally.
    assert set(by_host) - {"prometheus-1", "etcd-1"} <= scraped, set(by_host) - scraped


@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_every_exporter_job_the_rules_use_is_scraped(rendering: Rendering) -> None:
    jobs = set(scrape_targets(rendering))
    sentinels = rendering.result.spec.redis.sentinels
    expected = {j for j in EXPORTER_JOBS if sentinels or j != "redis-sentinel"} | {JOB_BACKBONE}
    assert expected <= jobs, expected - jobs
    rules = yaml.safe_load(file_named(rendering, "backbone/rules.yml"))
    assert rules == yaml.safe_load(rules_file().read_text()), "the shared rules file, unchanged"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_prometheus_config_and_rules_pass_promtool(rendering: Rendering, tmp_path: Path) -> None:
    config = prometheus_config(rendering)
    (tmp_path / "rules.yml").write_text(file_named(rendering, "backbone/rules.yml"))
    # Point rule_files at the copy: promtool checks the rules the config names.
    assert [Path(p).name for p in config["rule_files"]] == ["rules.yml"]
    config["rule_files"] = [str(tmp_path / "rules.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    check_config(path)
    rules = subprocess.run(
        ["promtool", "check", "rules", str(tmp_path / "rules.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr


@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_grafana_is_provisioned_with_prometheus_and_the_dashboards(rendering: Rendering) -> None:
    datasources = yaml.safe_load(file_named(rendering, "datasources/prometheus.yml"))
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["isDefault"] is True
    host, port = ds["url"].removeprefix("http://").rsplit(":", 1)
    assert int(port) == rendering.result.spec.monitoring.prometheus_port
    assert host.split(".")[0] == "prometheus"
    provider = yaml.safe_load(file_named(rendering, "dashboards/backbone.yml"))
    path = provider["providers"][0]["options"]["path"]
    # Docker keys are mount paths, ConfigMap keys the same with "/" turned into "_".
    prefix = path.strip("/").replace("/", "_") + "_"
    keys = [k.replace("/", "_").lstrip("_") for k in config_files(rendering)]
    mounted = {k.removeprefix(prefix) for k in keys if k.startswith(prefix)}
    shipped = {p.name for p in dashboards_dir().glob("*.json")}
    assert mounted == shipped
