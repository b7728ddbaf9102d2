"""A job's outputs document holds its own logins and no other principal's password."""

from __future__ import annotations

import json
import stat
import string
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backbone.connections import (
    JOBS,
    TOPIC_NAMES,
    ConnectionsDocument,
    ConnectionsError,
    Job,
    dump_document,
    parse_document,
)
from backbone.job_outputs import job_document
from backbone.settings import load_settings
from backbone_infra.render.postgres import job_roles, monitor_role, reader_role
from backbone_infra.spec import build_spec
from backbone_infra.targets.job_principals import job_principals
from backbone_infra.targets.local.secrets import StackSecrets

SPEC = build_spec("t")
#: The secret fields each job may see: its own logins, nothing else.
OWN: dict[Job, set[str]] = {
    "writer": {"kafka_writer_password", "postgres_writer_password"},
    "consumer": {
        "kafka_consumer_password",
        "redis_consumer_password",
        "postgres_consumer_password",
    },
    "reader": {"redis_reader_password", "postgres_reader_password"},
    "monitor": {"kafka_monitor_password", "redis_exporter_password", "postgres_monitor_password"},
}
#: Which services each job's document reaches.
SECTIONS: dict[Job, set[str]] = {
    "writer": {"kafka", "timescale"},
    "consumer": {"kafka", "redis", "timescale"},
    "reader": {"redis", "timescale"},
    "monitor": {"kafka", "redis", "timescale"},
}
# Long enough that one password never occurs inside another by chance.
PASSWORD = st.text(alphabet=string.ascii_letters + string.digits, min_size=24, max_size=40)


def _full(secrets: StackSecrets, *, sentinel: bool = False) -> ConnectionsDocument:
    """The stack's full document as a local provisioner writes it (application logins
    in the sections, every job's under ``principals``)."""
    where: dict[str, object] = (
        {"mode": "sentinel", "sentinels": ["127.0.0.1:26379"], "master_name": "m",
         "sentinel_password": secrets.sentinel_password}
        if sentinel else {"host": "127.0.0.1", "port": 6379}
    )  # fmt: skip
    return ConnectionsDocument(
        stack="t",
        environment="local",
        tier="institutional",
        redis={**where, "username": SPEC.redis.username, "password": secrets.redis_password},
        kafka={"bootstrap_servers": ["127.0.0.1:9092"], "security_protocol": "SASL_SSL",
               "sasl_mechanism": SPEC.kafka.sasl_mechanism, "username": SPEC.kafka.username,
               "password": secrets.kafka_password,
               "topics": {k: {"name": v, "partitions": 1, "replication_factor": 1}
                          for k, v in TOPIC_NAMES.items()}},
        timescale={"hosts": ["127.0.0.1:5432"], "dbname": SPEC.postgres.dbname,
                   "user": SPEC.postgres.user, "password": secrets.postgres_password},
        principals=job_principals(SPEC, secrets),
    )  # fmt: skip


@st.composite
def stack_secrets(draw: st.DrawFn) -> StackSecrets:
    fields = StackSecrets().generated()
    values = draw(st.lists(PASSWORD, min_size=len(fields), max_size=len(fields), unique=True))
    return StackSecrets(**dict(zip(fields, values, strict=True)))


def assert_each_job_holds_only_its_own(full: ConnectionsDocument, every: Mapping[str, str]) -> None:
    """Each job's document holds exactly its own passwords (``every``: each password
    of the stack by its ``SECRET_KEYS`` / ``StackSecrets`` name), and Sentinel's own
    token where the job has a ``redis`` section of a Sentinel stack. Shared with
    the Pulumi renderings' test (``tests/infra/test_infra_principals.py``)."""
    sentinel = full.redis is not None and full.redis.mode == "sentinel"
    for job in JOBS:
        text = json.dumps(dump_document(job_document(full, job), reveal_secrets=True))
        present = {name for name, value in every.items() if value in text}
        # Sentinel's discovery password (its own token) goes to every cache client.
        shared = {"redis_sentinel_password"} if sentinel and "redis" in SECTIONS[job] else set()
        assert present == OWN[job] | shared, job


@settings(max_examples=40, deadline=None)
@given(secrets=stack_secrets(), sentinel=st.booleans())
def test_a_job_document_holds_its_own_passwords_and_no_other(
    secrets: StackSecrets, sentinel: bool
) -> None:
    assert_each_job_holds_only_its_own(_full(secrets, sentinel=sentinel), secrets.generated())


@pytest.mark.parametrize("job", JOBS)
def test_a_job_document_puts_its_logins_in_the_standard_fields(job: Job) -> None:
    secrets = StackSecrets()
    doc = parse_document(dump_document(job_document(_full(secrets), job), reveal_secrets=True))
    assert doc.job == job and doc.principals is None
    present = {n for n in ("kafka", "redis", "timescale") if getattr(doc, n) is not None}
    assert present == SECTIONS[job]
    # The clients' settings read it as they read the full document.
    settings_ = load_settings(doc)
    users = {
        "kafka": settings_.kafka.username if settings_.kafka else None,
        "redis": settings_.redis.username if settings_.redis else None,
    }
    expected_pg = {
        "writer": job_roles(SPEC.postgres)[0],
        "consumer": job_roles(SPEC.postgres)[1],
        "reader": reader_role(SPEC.postgres),
        "monitor": monitor_role(SPEC.postgres),
    }[job]
    assert doc.timescale is not None and doc.timescale.user == expected_pg
    assert doc.timescale.dbname == ("postgres" if job == "monitor" else SPEC.postgres.dbname)
    assert users["kafka"] != SPEC.kafka.username and users["redis"] != SPEC.redis.username


def test_a_job_document_is_derived_only_from_the_full_one() -> None:
    reader = job_document(_full(StackSecrets()), "reader")
    with pytest.raises(ConnectionsError, match="not the stack's full one"):
        job_document(reader, "writer")
    legacy = _full(StackSecrets()).model_copy(update={"principals": None})
    with pytest.raises(ConnectionsError, match="names no 'writer' principal"):
        job_document(legacy, "writer")


def test_secrets_of_an_older_stack_gain_the_job_passwords_once(tmp_path: Path) -> None:
    """A ``secrets.json`` written before the job principals existed: the generated
    values are saved at the first load, so every later load (and document) agrees."""
    StackSecrets().save(tmp_path)
    path = tmp_path / "secrets.json"
    stored = json.loads(path.read_text())
    for name in OWN["writer"]:
        del stored[name]
    path.write_text(json.dumps(stored))
    first, second = StackSecrets.load(tmp_path), StackSecrets.load(tmp_path)
    assert first.generated() == second.generated()
    assert set(json.loads(path.read_text())) >= OWN["writer"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
