"""Every job's logins, for the ``principals`` section of a stack's full document.

One principal per job (issue 11): the ingest writer, a consumer-group member,
a reader and the monitoring exporters each log in as their own user, which the
renderers grant only what that job does (:mod:`backbone_infra.render.kafka_acls`,
:mod:`backbone_infra.render.redis`, :mod:`backbone_infra.render.postgres`).
Every target builds the section here, from the spec and the passwords the
services were given: the local processes and the podman containers pass their
``StackSecrets``, the Pulumi program the values of its config secrets
(:class:`JobPasswordValues`), so the logins in a document cannot drift from
the users the services know. :func:`backbone.job_outputs.job_document` hands
each job its own.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol

from pydantic import SecretStr

from backbone.connections import Credential, Job, JobPrincipals
from backbone_infra.render.postgres import job_roles, monitor_role, reader_role
from backbone_infra.render.redis import EXPORTER_USER
from backbone_infra.spec import StackSpec

__all__ = ["JOB_PASSWORD_FIELDS", "JobPasswordValues", "JobPasswords", "job_principals"]


class JobPasswords(Protocol):
    """The job principals' passwords, named as ``backbone_infra.config.SECRET_KEYS``
    names them (``StackSecrets`` and :class:`JobPasswordValues` have them)."""

    @property
    def kafka_writer_password(self) -> str: ...
    @property
    def kafka_consumer_password(self) -> str: ...
    @property
    def kafka_monitor_password(self) -> str: ...
    @property
    def redis_consumer_password(self) -> str: ...
    @property
    def redis_reader_password(self) -> str: ...
    @property
    def redis_exporter_password(self) -> str: ...
    @property
    def postgres_writer_password(self) -> str: ...
    @property
    def postgres_consumer_password(self) -> str: ...
    @property
    def postgres_reader_password(self) -> str: ...
    @property
    def postgres_monitor_password(self) -> str: ...


@dataclass(frozen=True)
class JobPasswordValues:
    """:class:`JobPasswords` as plain values: what the Pulumi program resolves its
    secret outputs into before it builds the document."""

    kafka_writer_password: str
    kafka_consumer_password: str
    kafka_monitor_password: str
    redis_consumer_password: str
    redis_reader_password: str
    redis_exporter_password: str
    postgres_writer_password: str
    postgres_consumer_password: str
    postgres_reader_password: str
    postgres_monitor_password: str

    def __repr__(self) -> str:
        return "JobPasswordValues(<hidden>)"


#: The names of every job password (the fields of :class:`JobPasswordValues`).
JOB_PASSWORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(JobPasswordValues))


def _login(username: str, password: str, dbname: str | None = None) -> Credential:
    return Credential(username=username, password=SecretStr(password), dbname=dbname)


def job_principals(spec: StackSpec, secrets: JobPasswords) -> dict[Job, JobPrincipals]:
    """Each job's login to each service it uses (a stack with services only).

    writer: produces (Kafka) and writes bars (PostgreSQL); no cache.
    consumer: consumes and commits its group (Kafka), writes the store, fills
    and invalidates the cache. reader: reads the cache and the store.
    monitor: the exporters' read-only logins (PostgreSQL's reaches only the
    ``postgres`` database, where the statistics views are).
    """
    k, r, p = spec.kafka, spec.redis, spec.postgres
    writer_role, consumer_role = job_roles(p)
    return {
        "writer": JobPrincipals(
            kafka=_login(k.writer_username, secrets.kafka_writer_password),
            timescale=_login(writer_role, secrets.postgres_writer_password),
        ),
        "consumer": JobPrincipals(
            kafka=_login(k.consumer_username, secrets.kafka_consumer_password),
            redis=_login(r.consumer_username, secrets.redis_consumer_password),
            timescale=_login(consumer_role, secrets.postgres_consumer_password),
        ),
        "reader": JobPrincipals(
            redis=_login(r.reader_username, secrets.redis_reader_password),
            timescale=_login(reader_role(p), secrets.postgres_reader_password),
        ),
        "monitor": JobPrincipals(
            kafka=_login(k.monitor_username, secrets.kafka_monitor_password),
            redis=_login(EXPORTER_USER, secrets.redis_exporter_password),
            timescale=_login(monitor_role(p), secrets.postgres_monitor_password, "postgres"),
        ),
    }
