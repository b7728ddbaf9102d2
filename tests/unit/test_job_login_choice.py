"""Each runtime client gets its job's login (issue 11); overrides still win."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from pydantic import SecretStr

from backbone.connections import JOBS, ConnectionsError, Job, write_document
from backbone.credentials import DocumentCredentials
from backbone.job_logins import (
    CLIENT_JOBS,
    HARNESS_JOBS,
    JobScopeError,
    clients_of,
    harness_section,
    runtime_logins,
)
from backbone.job_outputs import USER_FIELD, job_document
from backbone.settings import load_settings
from backbone_infra.targets.local.secrets import StackSecrets
from tests.unit.test_job_outputs import _full, stack_secrets


def _password(section: object) -> str:
    secret = getattr(section, "password", None)
    assert isinstance(secret, SecretStr)
    return secret.get_secret_value()


@settings(max_examples=30, deadline=None)
@given(secrets=stack_secrets())
def test_on_a_full_document_each_client_logs_in_as_its_job(secrets: StackSecrets) -> None:
    doc = _full(secrets)
    logins = runtime_logins(load_settings(doc), doc)
    assert logins.job is None and not logins.read_only
    app_passwords = {secrets.kafka_password, secrets.redis_password, secrets.postgres_password}
    for client, (service, job) in CLIENT_JOBS.items():
        chosen = getattr(logins, client)
        expected = getattr(job_document(doc, job), service)
        assert chosen is not None and expected is not None, client
        user = "user" if service == "timescale" else "username"
        assert getattr(chosen, user) == getattr(expected, user), client
        assert _password(chosen) == _password(expected), client
        assert _password(chosen) not in app_passwords, client
        assert logins.follows[client] == job
    # The validation hooks log in as the consumer, the one job that uses every service.
    checked = logins.for_validation(load_settings(doc))
    consumer_kafka = job_document(doc, "consumer").kafka
    assert checked.kafka is not None and consumer_kafka is not None
    assert checked.kafka.username == consumer_kafka.username


def test_credentials_from_the_environment_override_every_client_of_their_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = _full(StackSecrets())
    monkeypatch.setenv("BACKBONE_KAFKA__USERNAME", "operator")
    monkeypatch.setenv("BACKBONE_KAFKA__PASSWORD", "from-the-environment")
    logins = runtime_logins(load_settings(doc), doc)
    for client in ("producer", "consumer"):
        chosen = getattr(logins, client)
        assert chosen.username == "operator" and _password(chosen) == "from-the-environment"
        assert client not in logins.follows  # fixed: they do not follow the file
    assert logins.store is not None and logins.follows["store"] == "consumer"


def test_a_document_without_principals_gives_every_client_the_application_login() -> None:
    doc = _full(StackSecrets()).model_copy(update={"principals": None})
    logins = runtime_logins(load_settings(doc), doc)
    assert logins.producer is not None and logins.producer.username == doc.kafka.username  # type: ignore[union-attr]
    assert logins.producer == logins.consumer
    assert set(logins.follows.values()) == {None}


@pytest.mark.parametrize("job", [j for j in JOBS if j != "monitor"])
def test_a_job_document_opens_only_its_jobs_clients(job: Job) -> None:
    doc = job_document(_full(StackSecrets()), job)
    logins = runtime_logins(load_settings(doc), doc)
    opened = {c for c in CLIENT_JOBS if getattr(logins, c) is not None}
    assert opened == clients_of(job)
    assert logins.read_only == (job == "reader")
    assert "consumer" not in opened or "producer" not in opened  # no job ingests alone
    error = logins.scope_error("ingest", "the writer's Kafka login")
    assert f"'{job}' job" in str(error) and "harness outputs --job" in str(error)


def test_the_monitor_document_opens_no_runtime() -> None:
    doc = job_document(_full(StackSecrets()), "monitor")
    with pytest.raises(JobScopeError, match="monitor job's logins are the exporters'"):
        runtime_logins(load_settings(doc), doc)


def test_a_job_source_follows_its_jobs_password_through_a_rotation(tmp_path: Path) -> None:
    first = _full(StackSecrets())
    path = write_document(first, tmp_path / "outputs.json")
    consumer = DocumentCredentials(path, first).for_job("consumer")
    writer = consumer.for_job("writer")
    before = _password(consumer.document().redis)
    assert before == first.principals["consumer"].redis.password.get_secret_value()  # type: ignore[index,union-attr]
    rotated = StackSecrets()
    second = _full(rotated)
    write_document(second, path)
    assert _password(consumer.document().redis) == rotated.redis_consumer_password
    assert _password(consumer.document().kafka) == rotated.kafka_consumer_password
    assert _password(writer.document().kafka) == rotated.kafka_writer_password
    assert consumer.document().job == "consumer"


# --- the clients the harness builds itself (drills, load seeding, benches) ------------


@settings(max_examples=30, deadline=None)
@given(secrets=stack_secrets())
def test_each_harness_client_gets_its_jobs_login_and_keeps_the_rest_of_the_section(
    secrets: StackSecrets,
) -> None:
    doc = _full(secrets, sentinel=True)
    app_passwords = {secrets.kafka_password, secrets.redis_password, secrets.postgres_password}
    for client, (service, job) in HARNESS_JOBS.items():
        chosen = harness_section(doc, client)
        expected = getattr(job_document(doc, job), service)
        assert chosen == expected, client  # login, hosts, topics, TLS: the job's section
        assert _password(chosen) not in app_passwords, client
        user = USER_FIELD[service]
        only_login = {"password": chosen.password, user: getattr(chosen, user)}
        assert getattr(doc, service).model_copy(update=only_login) == chosen, client
    # The runtime's choice for the same client, and least privilege for read-backs.
    assert all(HARNESS_JOBS[c] == CLIENT_JOBS[c] for c in CLIENT_JOBS)
    assert HARNESS_JOBS["producer"] == ("kafka", "writer")
    assert HARNESS_JOBS["store-reader"] == ("timescale", "reader")
    assert HARNESS_JOBS["cache-reader"] == ("redis", "reader")


def test_a_harness_client_on_a_document_without_principals_uses_the_application_login() -> None:
    doc = _full(StackSecrets()).model_copy(update={"principals": None})
    assert harness_section(doc, "producer") == doc.kafka
    assert harness_section(doc, "topic-reader") == doc.kafka
    assert harness_section(doc, "store-reader") == doc.timescale
    assert harness_section(doc, "cache") == doc.redis


def test_a_harness_client_on_a_job_document_takes_that_job_or_is_told_what_to_give() -> None:
    full = _full(StackSecrets())
    writer = job_document(full, "writer")
    assert harness_section(writer, "producer") == writer.kafka
    with pytest.raises(ConnectionsError, match=r"'writer' job's document.*outputs\.json"):
        harness_section(writer, "consumer")
    # A job without the login the client needs is named, not replaced by another's.
    principals = {k: v for k, v in (full.principals or {}).items() if k != "consumer"}
    with pytest.raises(ConnectionsError, match="'consumer' job of stack 't' has no kafka"):
        harness_section(full.model_copy(update={"principals": principals}), "topic-reader")
    no_kafka = full.model_copy(update={"kafka": None})
    with pytest.raises(ConnectionsError, match="no kafka section"):
        harness_section(no_kafka, "producer")
