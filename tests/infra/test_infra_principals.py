"""The Pulumi targets' ``principals`` and Sentinel password, under Pulumi's mocks.

The exported ``connections`` document carries every job's login, and each is
the password the services were given: the Redis ACL users in ``redis.conf``,
the Kafka SCRAM users the brokers format into their metadata, the PostgreSQL
roles of ``bootstrap.sql``. Each job's document (``job_document``, what
``harness outputs --job`` writes) holds only its own passwords. The Sentinels
require a password of their own, which reaches ``sentinel.conf``, the files
the nodes and probes read, and the document. No engine or cluster runs here:
the resources are the ones the program declared, recorded by the mocks.
"""

from __future__ import annotations

import base64
import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pulumi_rendering import (
    DOCKER_CONTAINER,
    INSTITUTIONAL_IDS,
    KUBERNETES_IDS,
    Rendering,
    Renderings,
    config_for,
    file_named,
    render,
    unwrap,
)
from typer.testing import CliRunner

from backbone.connections import JOBS, ConnectionsDocument, load_document, parse_document
from backbone.job_outputs import job_document
from backbone_harness.cli import app
from backbone_infra.config import SECRET_KEYS
from backbone_infra.render.postgres import job_roles, monitor_role, reader_role, scram_verifier
from backbone_infra.render.redis import EXPORTER_USER, password_hash
from tests.unit.test_job_outputs import OWN, PASSWORD, assert_each_job_holds_only_its_own

HA_IDS = [i for i in INSTITUTIONAL_IDS if i.endswith("-ha")]
MINIMAL_IDS = [i for i in INSTITUTIONAL_IDS if i.endswith("-minimal")]
DOCKER_HA = "docker-institutional-ha"


def _doc(rendering: Rendering) -> ConnectionsDocument:
    return parse_document(rendering.exports["connections"])


def _password(doc: ConnectionsDocument, job: str, service: str) -> str:
    login = getattr((doc.principals or {})[job], service)  # type: ignore[index]
    assert login is not None, f"{job} has no {service} login"
    return str(login.password.get_secret_value())


# -- the logins the services were given ------------------------------------------------


def redis_acl_hashes(redis_conf: str) -> dict[str, set[str]]:
    """ACL user -> the password hashes (``#<sha256>``) its ``user`` line grants."""
    users: dict[str, set[str]] = {}
    for line in redis_conf.splitlines():
        words = line.split()
        if words[:1] == ["user"]:
            users[words[1]] = {w for w in words[2:] if w.startswith("#")}
    return users


def kafka_scram_users(format_args: str) -> dict[str, str]:
    """SCRAM user -> password, from a broker's ``StorageTool format`` arguments."""
    return dict(re.findall(r"\[name=([^,\]]+),password=([^\]]+)\]", format_args))


def postgres_verifiers(bootstrap_sql: str) -> dict[str, str]:
    """Role -> the SCRAM verifier ``bootstrap.sql`` creates it with."""
    return dict(re.findall(r"CREATE ROLE (\S+) LOGIN .*?PASSWORD '([^']+)'", bootstrap_sql))


def verifies(verifier: str, password: str) -> bool:
    """True when ``verifier`` (``SCRAM-SHA-256$iter:salt$stored:server``) is ``password``'s."""
    head, _, _ = verifier.partition("$")[2].partition("$")
    iterations, salt = head.split(":")
    return verifier == scram_verifier(
        password, iterations=int(iterations), salt=base64.b64decode(salt)
    )


@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_the_document_carries_every_jobs_login_as_a_secret(rendering: Rendering) -> None:
    doc = _doc(rendering)
    assert "connections" in rendering.secret_exports
    assert doc.principals is not None and set(doc.principals) == set(JOBS)
    creds = rendering.credentials
    for job, names in OWN.items():
        in_doc = {
            _password(doc, job, service)
            for service in ("kafka", "redis", "timescale")
            if getattr(doc.principals[job], service) is not None
        }
        assert in_doc == {creds[n] for n in names}, job


@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_redis_acl_users_have_the_documents_passwords(rendering: Rendering) -> None:
    doc, redis = _doc(rendering), rendering.result.spec.redis
    acl = redis_acl_hashes(file_named(rendering, "redis/redis-1.conf", secret=True))
    expected = {
        redis.consumer_username: _password(doc, "consumer", "redis"),
        redis.reader_username: _password(doc, "reader", "redis"),
        EXPORTER_USER: _password(doc, "monitor", "redis"),
    }
    for user, password in expected.items():
        assert acl[user] == {password_hash(password)}, user


@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_kafka_scram_users_have_the_documents_passwords(rendering: Rendering) -> None:
    doc, kafka = _doc(rendering), rendering.result.spec.kafka
    for ordinal in range(1, kafka.brokers + 1):
        users = kafka_scram_users(
            file_named(rendering, f"kafka/format-{ordinal}.args", secret=True)
        )
        assert users[kafka.writer_username] == _password(doc, "writer", "kafka")
        assert users[kafka.consumer_username] == _password(doc, "consumer", "kafka")
        assert users[kafka.monitor_username] == _password(doc, "monitor", "kafka")


@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_postgres_roles_have_the_documents_passwords(rendering: Rendering) -> None:
    doc, pg = _doc(rendering), rendering.result.spec.postgres
    verifiers = postgres_verifiers(file_named(rendering, "timescale/bootstrap.sql", secret=True))
    writer, consumer = job_roles(pg)
    expected = {
        writer: ("writer", "backbone_writer"),
        consumer: ("consumer", "backbone_consumer"),
        reader_role(pg): ("reader", "backbone_reader"),
        monitor_role(pg): ("monitor", "backbone_monitor"),
    }
    for role, (job, name) in expected.items():
        login = (doc.principals or {})[job].timescale  # type: ignore[index]
        assert login is not None and login.username == role == name
        assert verifies(verifiers[role], login.password.get_secret_value()), role
        assert not verifies(verifiers[role], doc.timescale.password.get_secret_value())  # type: ignore[union-attr]


def test_the_scram_check_can_fail() -> None:
    good = scram_verifier("right-password")
    assert verifies(good, "right-password") and not verifies(good, "wrong-password")


# -- each job's document -------------------------------------------------------------------


@pytest.mark.parametrize("rendering", INSTITUTIONAL_IDS, indirect=True)
def test_each_job_document_holds_only_its_own_passwords(rendering: Rendering) -> None:
    assert_each_job_holds_only_its_own(_doc(rendering), rendering.credentials)


@st.composite
def configured_secrets(draw: st.DrawFn) -> dict[str, str]:
    values = draw(
        st.lists(PASSWORD, min_size=len(SECRET_KEYS), max_size=len(SECRET_KEYS), unique=True)
    )
    return dict(zip(SECRET_KEYS, values, strict=True))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    secrets=configured_secrets(),
    target=st.sampled_from(["docker", "kubernetes"]),
    size=st.sampled_from(["minimal", "ha"]),
)
def test_configured_secrets_reach_only_their_jobs_documents(
    secrets: dict[str, str], target: str, size: str
) -> None:
    """With any configured secrets (``pulumi config set --secret``), each job's
    document holds exactly its own passwords (and Sentinel's, on ha)."""
    rendering = render(config_for(target, "institutional", size, secrets=secrets))
    assert_each_job_holds_only_its_own(_doc(rendering), secrets)


@pytest.mark.parametrize("rendering", KUBERNETES_IDS, indirect=True)
def test_the_in_cluster_consumer_gets_its_jobs_document(rendering: Rendering) -> None:
    mounted = json.loads(file_named(rendering, "backbone/outputs.json", secret=True))
    doc = parse_document(mounted)
    assert doc.job == "consumer" and doc.principals is None
    assert doc == job_document(_doc(rendering), "consumer")


def test_equal_configured_secrets_are_refused_naming_the_keys_only() -> None:
    given = {name: f"given-{name.replace('_', '-')}-0123456789" for name in SECRET_KEYS}
    given["redis_sentinel_password"] = given["redis_password"]
    with pytest.raises(Exception) as caught:
        render(config_for("docker", "institutional", "ha", secrets=given))
    message = str(caught.value)
    assert "redisPassword = redisSentinelPassword" in message
    assert "pulumi config set --secret redisSentinelPassword" in message
    assert given["redis_password"] not in message


# -- the Sentinels' own password -------------------------------------------------------------


def _directive(conf: str, name: str) -> list[str]:
    return [
        ln.split(" ", len(name.split()))[-1]
        for ln in conf.splitlines()
        if ln.startswith(f"{name} ")
    ]


@pytest.mark.parametrize("rendering", HA_IDS, indirect=True)
def test_sentinels_require_their_own_password(rendering: Rendering) -> None:
    doc, creds = _doc(rendering), rendering.credentials
    assert doc.redis is not None and doc.redis.sentinel_password is not None and doc.redis.password
    sentinel = doc.redis.sentinel_password.get_secret_value()
    assert sentinel == creds["redis_sentinel_password"]
    assert sentinel not in {v for k, v in creds.items() if k != "redis_sentinel_password"}
    for ordinal in range(1, rendering.result.spec.redis.sentinels + 1):
        conf = file_named(rendering, f"redis/sentinel-{ordinal}.conf", secret=True)
        assert _directive(conf, "requirepass") == [sentinel]
        assert _directive(conf, "sentinel sentinel-pass") == [sentinel]
        assert doc.redis.password.get_secret_value() not in conf
    # What the nodes' start script and the Sentinels' probe present.
    assert file_named(rendering, "redis/sentinel-password", secret=True) == sentinel


def _container_uploads(rendering: Rendering, service: str, sidecar: str = "") -> dict[str, str]:
    """``file -> content`` of one service's Docker containers (``...-redis-sentinel-1``),
    or of their ``sidecar`` (``-exporter``)."""
    found: dict[str, str] = {}
    for r in rendering.of_type(DOCKER_CONTAINER):
        plain: dict[str, Any] = unwrap(r.inputs)
        if re.fullmatch(rf".*-{re.escape(service)}-\d+{sidecar}", plain["name"]):
            found.update({u["file"]: u["content"] for u in plain.get("uploads") or []})
    return found


def test_the_sentinel_exporter_and_the_nodes_log_in_with_the_sentinel_password(
    renderings: Renderings,
) -> None:
    rendering = renderings.by_id[DOCKER_HA]
    sentinel = rendering.credentials["redis_sentinel_password"]
    exporters = {
        service: json.loads(
            _container_uploads(rendering, service, "-exporter")[
                "/run/secrets/redis-exporter/passwords.json"
            ]
        )
        for service in ("redis", "redis-sentinel")
    }
    assert list(exporters["redis-sentinel"].values()) == [sentinel]
    assert list(exporters["redis"].values()) == [rendering.credentials["redis_exporter_password"]]
    assert (
        _container_uploads(rendering, "redis-sentinel")["/run/secrets/redis/sentinel-password"]
        == sentinel
    )
    nodes = _container_uploads(rendering, "redis")
    assert nodes["/run/secrets/redis/sentinel-password"] == sentinel
    assert "sentinel-password" in nodes["/opt/backbone/redis/start.sh"]
    # The application's password is not among the nodes' files any more.
    assert not any(rendering.credentials["redis_password"] == v for v in nodes.values())


@pytest.mark.parametrize("rendering", MINIMAL_IDS, indirect=True)
def test_standalone_stacks_name_no_sentinel_password(rendering: Rendering) -> None:
    doc = _doc(rendering)
    assert doc.redis is not None and doc.redis.mode == "standalone"
    assert doc.redis.sentinel_password is None


# -- harness outputs --job on a saved Pulumi document --------------------------------------


@pytest.mark.parametrize("job", JOBS)
def test_harness_outputs_writes_a_job_document_from_a_saved_pulumi_output(
    job: str, tmp_path: Path, renderings: Renderings
) -> None:
    """What an operator does with a Docker stack: ``pulumi stack output --json
    connections --show-secrets > outputs.json``, the CA beside it, then
    ``harness outputs --outputs outputs.json --job JOB``."""
    rendering = renderings.by_id[DOCKER_HA]
    saved = tmp_path / "outputs.json"
    saved.write_text(json.dumps(rendering.exports["connections"]))
    (tmp_path / "ca.crt").write_text(rendering.exports["ca_certificate"])
    result = CliRunner().invoke(app, ["outputs", "--outputs", str(saved), "--job", job])
    assert result.exit_code == 0, result.output
    written = Path(result.stdout.strip())
    assert written == tmp_path / f"outputs.{job}.json"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    doc = load_document(written)
    assert doc.job == job
    assert doc == job_document(load_document(saved), job)
    # The output names the file only, never a password.
    assert not any(v in result.output for v in rendering.credentials.values())


def test_harness_outputs_names_a_missing_saved_document(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"
    result = CliRunner().invoke(app, ["outputs", "--outputs", str(missing), "--job", "reader"])
    assert result.exit_code == 2
    assert str(missing) in result.stderr and "pass --outputs PATH" in result.stderr
