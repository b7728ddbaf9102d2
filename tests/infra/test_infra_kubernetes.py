"""Kubernetes objects: probes and limits on every workload, persistence and a
PDB for every stateful service, NetworkPolicies, and schema validity."""

from __future__ import annotations

import functools

import kubernetes_validate
import kubernetes_validate.utils
import pytest
from pulumi_rendering import (
    K8S_JOB,
    KUBERNETES_IDS,
    NETWORK_POLICY,
    PDB,
    STATEFUL_SET,
    Rendering,
    k8s_object,
    name_of,
    pod_spec,
)

from backbone_infra.targets.kubernetes import CLIENT_LABEL

#: The Kubernetes release the objects are validated against (bundled schemas, offline).
KUBERNETES_VERSION = "1.31"


@pytest.fixture(scope="module", autouse=True)
def _schemas_read_once(monkeypatch_module: pytest.MonkeyPatch) -> None:
    # kubernetes-validate re-reads its (large) JSON schema files on every call;
    # reading each once keeps a hundred validations to a second.
    monkeypatch_module.setattr(
        kubernetes_validate.utils,
        "schema_contents",
        functools.lru_cache(maxsize=None)(kubernetes_validate.utils.schema_contents),
    )


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("rendering", KUBERNETES_IDS, indirect=True)
def test_every_object_validates_against_the_kubernetes_schema(rendering: Rendering) -> None:
    objects = [r for r in rendering.resources if r.typ.startswith("kubernetes:")]
    assert objects
    for r in objects:
        try:
            kubernetes_validate.validate(k8s_object(r), KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{r} is not a valid {r.plain['kind']}: {path}: {exc.message}")


@pytest.mark.parametrize("rendering", KUBERNETES_IDS, indirect=True)
def test_every_workload_container_has_probes_requests_and_limits(rendering: Rendering) -> None:
    for r in rendering.of_type(STATEFUL_SET):
        for c in pod_spec(r)["containers"]:
            where = f"{r} container {c['name']}"
            assert "livenessProbe" in c and "readinessProbe" in c, f"{where} lacks a probe"
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), f"{where} lacks limits"
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), f"{where} lacks requests"
    # Run-to-completion containers (init steps, the topic job) need no probes, but limits.
    for r in [*rendering.of_type(STATEFUL_SET), *rendering.of_type(K8S_JOB)]:
        spec = pod_spec(r)
        for c in [
            *spec.get("initContainers", []),
            *(spec["containers"] if r.typ == K8S_JOB else []),
        ]:
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), f"{r} {c['name']}"


@pytest.mark.parametrize("rendering", KUBERNETES_IDS, indirect=True)
def test_every_stateful_service_has_a_volume_claim_and_a_disruption_budget(
    rendering: Rendering,
) -> None:
    pdbs = [k8s_object(p) for p in rendering.of_type(PDB)]
    for r in rendering.of_type(STATEFUL_SET):
        obj = k8s_object(r)
        claims = obj["spec"].get("volumeClaimTemplates") or []
        assert [c["metadata"]["name"] for c in claims] == ["data"], f"{r} keeps no state"
        mounted = {m["name"] for c in pod_spec(r)["containers"] for m in c.get("volumeMounts", [])}
        assert "data" in mounted, f"{r} claims a volume but mounts none"
        labels = obj["spec"]["template"]["metadata"]["labels"]
        covering = [p for p in pdbs if _matches(p["spec"]["selector"]["matchLabels"], labels)]
        assert len(covering) == 1, f"{r} is covered by {len(covering)} PodDisruptionBudgets"
        assert covering[0]["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("rendering", KUBERNETES_IDS, indirect=True)
def test_network_policies_deny_by_default_and_admit_clients_peers_and_prometheus(
    rendering: Rendering,
) -> None:
    policies = [k8s_object(p) for p in rendering.of_type(NETWORK_POLICY)]
    default = [p for p in policies if not p["spec"]["podSelector"]]
    assert len(default) == 1 and "ingress" not in default[0]["spec"], "no default deny"
    for r in rendering.of_type(STATEFUL_SET):
        obj = k8s_object(r)
        labels = obj["spec"]["template"]["metadata"]["labels"]
        mine = [
            p
            for p in policies
            if p["spec"]["podSelector"]
            and _matches(p["spec"]["podSelector"]["matchLabels"], labels)
        ]
        assert len(mine) == 1, f"{r} has {len(mine)} NetworkPolicies"
        rules = mine[0]["spec"]["ingress"]
        for rule in rules:
            # Every rule names who may connect: nothing is open to the world.
            assert rule.get("from"), f"{r}: a rule admits any source"
        client_rules = [
            rule
            for rule in rules
            if any(
                CLIENT_LABEL in (f.get("podSelector") or {}).get("matchLabels", {})
                for f in rule["from"]
            )
        ]
        ports = {p["containerPort"] for p in pod_spec(r)["containers"][0]["ports"]}
        assert client_rules and {p["port"] for p in client_rules[0]["ports"]} <= ports
        prometheus_rules = [
            rule
            for rule in rules
            if any(
                (f.get("podSelector") or {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                == "prometheus"
                for f in rule["from"]
            )
        ]
        assert prometheus_rules, f"{r}: Prometheus cannot scrape it"


@pytest.mark.parametrize("rendering", KUBERNETES_IDS, indirect=True)
def test_the_controller_port_is_not_open_to_clients(rendering: Rendering) -> None:
    spec = rendering.result.spec
    policy = next(
        k8s_object(p) for p in rendering.of_type(NETWORK_POLICY) if name_of(p) == "kafka-ingress"
    )
    for rule in policy["spec"]["ingress"]:
        if "ports" in rule:
            assert spec.kafka.controller_port not in {p["port"] for p in rule["ports"]}


def test_external_host_adds_node_ports_and_kafka_advertises_them() -> None:
    from pulumi_rendering import K8S_SERVICE, config_for, file_named, render

    rendering = render(
        config_for("kubernetes", "institutional", "ha", external_host="node.example.internal")
    )
    node_ports = [k8s_object(s) for s in rendering.of_type(K8S_SERVICE)]
    node_ports = [s for s in node_ports if s["spec"].get("type") == "NodePort"]
    numbers = [p["nodePort"] for s in node_ports for p in s["spec"]["ports"]]
    assert len(numbers) == len(set(numbers)) and all(30000 <= n <= 32767 for n in numbers)
    by_pod = {s["spec"]["selector"]["statefulset.kubernetes.io/pod-name"]: s for s in node_ports}
    spec = rendering.result.spec
    for ordinal in range(1, spec.kafka.brokers + 1):
        (port,) = by_pod[f"kafka-{ordinal}"]["spec"]["ports"]
        props = file_named(rendering, f"kafka/server-{ordinal}.properties", secret=True)
        assert f"EXTERNAL://node.example.internal:{port['nodePort']}" in props
    # The only rules open to any source are those for the published ports.
    for r in rendering.of_type(NETWORK_POLICY):
        policy = k8s_object(r)
        for rule in policy["spec"].get("ingress", []):
            if not rule.get("from"):
                app = policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                published = {
                    p["targetPort"]
                    for s in node_ports
                    if s["spec"]["selector"]["statefulset.kubernetes.io/pod-name"].rsplit("-", 1)[0]
                    == app
                    for p in s["spec"]["ports"]
                }
                assert {p["port"] for p in rule["ports"]} == published, f"{r} opens too much"
    for r in rendering.resources:
        if r.typ.startswith("kubernetes:"):
            kubernetes_validate.validate(k8s_object(r), KUBERNETES_VERSION, strict=True)
