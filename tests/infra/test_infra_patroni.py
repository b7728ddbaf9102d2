"""PostgreSQL ``ha`` on Docker and Kubernetes: Patroni on every replica, an etcd beside.

Read from the renderings under Pulumi's mocks: the etcd service, the three
Patroni replicas and their ``patroni.yml`` (scope, quorum mode, the etcd the
cluster names, TLS files that are really mounted), the probes Kubernetes uses,
the outputs document's failover host list, and a ``minimal`` size without any
of it. Patroni's own validator checks every ``patroni.yml``. That the DCS
settings are the local ones: ``test_environment_parity.py``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi_rendering import (
    DOCKER_CONTAINER,
    K8S_SERVICE,
    NETWORK_POLICY,
    STATEFUL_SET,
    Rendering,
    Renderings,
    config_files,
    file_named,
    k8s_object,
    name_of,
    pod_spec,
    secret_files,
)

from backbone_infra.components.certificates import service_tls_files
from backbone_infra.components.timescale_database import SERVER_KEY
from backbone_infra.targets.local.patroni import patroni_executable

HA = ["docker-institutional-ha", "kubernetes-institutional-ha"]
MINIMAL = ["docker-institutional-minimal", "kubernetes-institutional-minimal"]
ETCD_CLIENT_PORT = 2379


def patroni_ymls(rendering: Rendering) -> dict[int, dict[str, Any]]:
    """``ordinal -> parsed patroni-<ordinal>.yml`` for every replica of the spec."""
    nodes = rendering.result.spec.postgres.nodes
    return {
        i: yaml.safe_load(file_named(rendering, f"timescale/patroni-{i}.yml", secret=True))
        for i in range(1, nodes + 1)
    }


def docker_containers(rendering: Rendering) -> dict[str, dict[str, Any]]:
    """Docker containers by host name (replicas only; sidecars have none)."""
    return {
        r.plain["hostname"]: r.plain
        for r in rendering.of_type(DOCKER_CONTAINER)
        if "hostname" in r.plain
    }


def stateful_sets(rendering: Rendering) -> dict[str, dict[str, Any]]:
    return {name_of(r): k8s_object(r) for r in rendering.of_type(STATEFUL_SET)}


def mounted_paths(rendering: Rendering, service: str) -> set[str]:
    """Every file path the main container of ``service``'s replica 1 has mounted."""
    if rendering.config.target == "docker":
        replica = docker_containers(rendering)[f"{service}-1"]
        return {u["file"] for u in replica.get("uploads") or []}
    spec = pod_spec(next(r for r in rendering.of_type(STATEFUL_SET) if name_of(r) == service))
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    paths = set()
    for mount in spec["containers"][0].get("volumeMounts") or []:
        source = volumes.get(mount["name"], {})
        items = (source.get("secret") or source.get("configMap") or {}).get("items") or []
        paths |= {f"{mount['mountPath']}/{item['path']}" for item in items}
    return paths


# -- the etcd and the replicas -------------------------------------------------------


@pytest.mark.parametrize("rendering", HA, indirect=True)
def test_ha_runs_one_etcd_and_patroni_on_three_replicas(rendering: Rendering) -> None:
    spec = rendering.result.spec
    assert spec.postgres.nodes == 3
    if rendering.config.target == "docker":
        containers = docker_containers(rendering)
        etcd = containers["etcd-1"]
        assert etcd["entrypoints"] == ["etcd"]
        assert not any(h.startswith("etcd-") for h in containers if h != "etcd-1")
        replicas = sorted(h for h in containers if h.startswith("timescale-"))
        assert replicas == ["timescale-1", "timescale-2", "timescale-3"]
        for host in replicas:
            assert containers[host]["entrypoints"] == ["sh", "/opt/backbone/timescale/start.sh"]
    else:
        sets = stateful_sets(rendering)
        assert sets["etcd"]["spec"]["replicas"] == 1
        assert pod_spec_of(rendering, "etcd")["containers"][0]["command"] == ["etcd"]
        assert sets["timescale"]["spec"]["replicas"] == 3
    start = file_named(rendering, "timescale/start.sh")
    # Each replica runs Patroni on its own file, chosen by its ordinal.
    assert 'exec patroni /run/secrets/timescale/patroni-"$ORD".yml' in start
    assert "postgres -D" not in start


def pod_spec_of(rendering: Rendering, name: str) -> dict[str, Any]:
    return pod_spec(next(r for r in rendering.of_type(STATEFUL_SET) if name_of(r) == name))


def etcd_args(rendering: Rendering) -> list[str]:
    if rendering.config.target == "docker":
        return list(docker_containers(rendering)["etcd-1"]["command"])
    return list(pod_spec_of(rendering, "etcd")["containers"][0]["args"])


@pytest.mark.parametrize("rendering", HA, indirect=True)
def test_every_patroni_yml_names_its_replica_the_quorum_and_the_clusters_etcd(
    rendering: Rendering,
) -> None:
    spec = rendering.result.spec
    patroni = spec.postgres.patroni
    assert patroni is not None
    args = etcd_args(rendering)
    advertised = next(a for a in args if a.startswith("--advertise-client-urls="))
    etcd_host = advertised.split("//", 1)[1].rsplit(":", 1)[0]
    if rendering.config.target == "docker":
        # A network alias of the etcd container.
        etcd = docker_containers(rendering)["etcd-1"]
        aliases = {a for n in etcd["networksAdvanced"] for a in n.get("aliases") or []}
        assert etcd_host in aliases
    else:
        # Pod etcd-1 of the etcd StatefulSet, through its headless Service.
        pod, headless, namespace, *_ = etcd_host.split(".")
        assert pod == "etcd-1" and namespace == rendering.config.k8s_namespace
        assert headless == stateful_sets(rendering)["etcd"]["spec"]["serviceName"]
    assert any(a == f"--listen-client-urls=http://0.0.0.0:{ETCD_CLIENT_PORT}" for a in args)
    for ordinal, config in patroni_ymls(rendering).items():
        assert config["scope"] == patroni.scope
        assert config["name"] == f"timescale-{ordinal}"
        assert config["etcd3"]["hosts"] == [f"{etcd_host}:{ETCD_CLIENT_PORT}"]
        dcs = config["bootstrap"]["dcs"]
        assert dcs["synchronous_mode"] == "quorum"
        assert dcs["synchronous_node_count"] == patroni.synchronous_node_count
        assert dcs["postgresql"]["use_pg_rewind"] is True
        # Its own address, as the other replicas reach it.
        host = config["postgresql"]["connect_address"].rsplit(":", 1)[0]
        assert host.split(".")[0] == f"timescale-{ordinal}"
        assert config["restapi"]["connect_address"] == f"{host}:{patroni.rest_port}"
    assert len({c["name"] for c in patroni_ymls(rendering).values()}) == 3


@pytest.mark.parametrize("rendering", HA, indirect=True)
def test_patroni_serves_and_connects_over_tls_with_files_that_are_mounted(
    rendering: Rendering,
) -> None:
    mounted = mounted_paths(rendering, "timescale")
    shipped = service_tls_files("timescale")
    config = patroni_ymls(rendering)[2]
    parameters = config["bootstrap"]["dcs"]["postgresql"]["parameters"]
    assert parameters["ssl"] == "on"
    assert {parameters["ssl_cert_file"], parameters["ssl_ca_file"], shipped.key} <= mounted
    # PostgreSQL refuses a key others can read: the start script copies it 0600.
    assert parameters["ssl_key_file"] == SERVER_KEY
    assert f"install -D -m 0600 {shipped.key} {SERVER_KEY}" in file_named(
        rendering, "timescale/start.sh"
    )
    for role in ("superuser", "replication"):
        auth = config["postgresql"]["authentication"][role]
        assert auth["sslmode"] == "verify-full", role
        assert auth["sslrootcert"] in mounted, role
    assert all(line.startswith("hostssl ") for line in config["postgresql"]["pg_hba"])
    # Every replica's file is mounted where the start script looks for it.
    for ordinal in patroni_ymls(rendering):
        assert f"/run/secrets/timescale/patroni-{ordinal}.yml" in mounted


@pytest.mark.parametrize("rendering", HA, indirect=True)
def test_patroni_bootstraps_the_roles_and_schema_once(rendering: Rendering) -> None:
    config = patroni_ymls(rendering)[1]
    command = config["bootstrap"]["post_bootstrap"].split()
    # A mounted script, run by sh (mounted files are not executable).
    assert command[0] == "sh" and command[1] in mounted_paths(rendering, "timescale")
    text = file_named(rendering, "timescale/post-bootstrap.sh")
    for sql in ("bootstrap.sql", "extension.sql", "schema.sql"):
        assert f"/{sql}" in text, sql
    bootstrap = file_named(rendering, "timescale/bootstrap.sql", secret=True)
    # Patroni creates the replication role itself (with its password).
    replication = rendering.result.spec.postgres.replication_user
    assert f"CREATE ROLE {replication} " not in bootstrap
    assert f"CREATE ROLE {rendering.result.spec.postgres.user} LOGIN" in bootstrap


# -- Patroni's own validator ------------------------------------------------------


def validation_complaints(text: str, tmp_path: Path) -> list[str]:
    """What ``patroni --validate-config`` says about ``text``, except the etcd
    hosts: their names resolve only in the stack's network, not on this machine."""
    path = tmp_path / "patroni.yml"
    path.write_text(text)
    done = subprocess.run(
        [str(patroni_executable()), "--validate-config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    said = (done.stdout + done.stderr).splitlines()
    complaints = [line for line in said if "didn't pass validation" in line]
    assert done.returncode == 0 or complaints, said  # a failure always names its key
    return [line for line in complaints if not line.startswith("etcd3.hosts.")]


@pytest.mark.parametrize("rendering", HA, indirect=True)
def test_patroni_accepts_every_rendered_patroni_yml(rendering: Rendering, tmp_path: Path) -> None:
    for ordinal in patroni_ymls(rendering):
        text = file_named(rendering, f"timescale/patroni-{ordinal}.yml", secret=True)
        assert validation_complaints(text, tmp_path) == [], ordinal


def test_patroni_validation_sees_a_wrong_setting(renderings: Renderings, tmp_path: Path) -> None:
    """The check above can fail: a value Patroni does not know is reported."""
    text = file_named(renderings.by_id[HA[0]], "timescale/patroni-1.yml", secret=True)
    broken = text.replace("synchronous_mode: quorum", "synchronous_mode: sometimes")
    assert broken != text
    complaints = validation_complaints(broken, tmp_path)
    assert any(line.startswith("bootstrap.dcs.synchronous_mode ") for line in complaints)


# -- Kubernetes: probes, Services, network policy ------------------------------------


@pytest.mark.parametrize("rendering", ["kubernetes-institutional-ha"], indirect=True)
def test_kubernetes_patroni_probes_and_services(rendering: Rendering) -> None:
    patroni = rendering.result.spec.postgres.patroni
    assert patroni is not None
    main = pod_spec_of(rendering, "timescale")["containers"][0]
    # Ready once Patroni says so (leader, or a streaming standby) ...
    assert main["readinessProbe"]["httpGet"] == {"path": "/readiness", "port": patroni.rest_port}
    # ... alive while Patroni's loop answers (not while postgres does: Patroni
    # stops it itself to clone or rewind).
    assert f":{patroni.rest_port}/liveness" in " ".join(main["livenessProbe"]["exec"]["command"])
    assert {p["containerPort"] for p in main["ports"]} >= {5432, patroni.rest_port}
    # The client Service selects every replica Patroni calls ready, not only the
    # primary: clients find the primary with target_session_attrs=read-write.
    sets = stateful_sets(rendering)
    services = {name_of(r): k8s_object(r) for r in rendering.of_type(K8S_SERVICE)}
    selector = sets["timescale"]["spec"]["selector"]["matchLabels"]
    assert services["timescale"]["spec"]["selector"] == selector
    # etcd admits the PostgreSQL pods (its Patroni) on every port.
    policy = next(
        k8s_object(r) for r in rendering.of_type(NETWORK_POLICY) if name_of(r) == "etcd-ingress"
    )
    peers = [
        p["podSelector"]["matchLabels"].get("app.kubernetes.io/name")
        for rule in policy["spec"]["ingress"]
        if "ports" not in rule
        for p in rule["from"]
    ]
    assert "timescale" in peers


# -- the outputs document and the minimal size ------------------------------------


@pytest.mark.parametrize("rendering", HA, indirect=True)
def test_the_document_lists_every_replica_for_failover(rendering: Rendering) -> None:
    """As locally: every node, so libpq's ``target_session_attrs=read-write``
    finds whichever one Patroni made primary."""
    hosts = rendering.exports["connections"]["timescale"]["hosts"]
    assert len(hosts) == rendering.result.spec.postgres.nodes == 3
    if rendering.config.target == "docker":
        containers = docker_containers(rendering)
        for ordinal, host in enumerate(hosts, start=1):
            published = {
                (p["ip"], p["external"])
                for p in containers[f"timescale-{ordinal}"]["ports"]
                if p["internal"] == 5432
            }
            assert (host["host"], host["port"]) in published, host
    else:
        for ordinal, host in enumerate(hosts, start=1):
            assert host["host"].split(".")[0] == f"timescale-{ordinal}"
            assert host["port"] == 5432


@pytest.mark.parametrize("rendering", MINIMAL, indirect=True)
def test_minimal_runs_plain_postgresql_without_patroni_or_etcd(rendering: Rendering) -> None:
    files = {**config_files(rendering), **secret_files(rendering)}
    assert not [k for k in files if "patroni" in k or "post-bootstrap" in k]
    assert 'exec "$PGBIN/postgres"' in file_named(rendering, "timescale/start.sh")
    if rendering.config.target == "docker":
        assert not [h for h in docker_containers(rendering) if h.startswith("etcd")]
    else:
        assert "etcd" not in stateful_sets(rendering)
