"""Every job's logins, for the ``principals`` section of a stack's full document.

One principal per job (issue 11): the ingest writer, a consumer-group member,
a reader and the monitoring exporters each log in as their own user, which the
renderers grant only what that job does (:mod:`backbone_infra.render.kafka_acls`,
:mod:`backbone_infra.render.redis`, :mod:`backbone_infra.render.postgres`).
Every target that writes a document over a connection (the local processes,
the podman containers) builds the section here, from the spec and the
stack's secrets; :func:`backbone.job_outputs.job_document` hands each job its own.
"""

from __future__ import annotations

from pydantic import SecretStr

from backbone.connections import Credential, Job, JobPrincipals
from backbone_infra.render.postgres import job_roles, monitor_role, reader_role
from backbone_infra.render.redis import EXPORTER_USER
from backbone_infra.spec import StackSpec
from backbone_infra.targets.local.secrets import StackSecrets

__all__ = ["job_principals"]


def _login(username: str, password: str, dbname: str | None = None) -> Credential:
    return Credential(username=username, password=SecretStr(password), dbname=dbname)


def job_principals(spec: StackSpec, secrets: StackSecrets) -> dict[Job, JobPrincipals]:
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
