"""The outputs document of a stack with its administrators' credentials.

Benchmarks and load ceilings set things up that the application's principals
may not do (least privilege, see ``docs/security.md``): they create and delete
Kafka topics, a PostgreSQL table for the unindexed COPY ceiling, and write
``key:*`` with ``redis-benchmark``. They run with the admin credentials of the
stack's ``secrets.json``. The document keeps ``principals``: the measured
clients that do a job's work (producers, stores, group members) still log in
as that job (:func:`backbone.job_logins.harness_section`), as in production.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from backbone.connections import ConnectionsDocument
from backbone_infra.render.postgres import SUPERUSER
from backbone_infra.render.redis import ADMIN_USER
from backbone_infra.targets.local.secrets import StackSecrets

__all__ = ["admin_document"]


def admin_document(stack: Any) -> ConnectionsDocument:
    """``stack.document`` with Redis ``admin``, the Kafka admin user and the
    PostgreSQL superuser in place of the application's principals. Kept in
    memory: never write it to disk or hand it to an application."""
    doc: ConnectionsDocument = stack.document
    secrets = StackSecrets.load(stack.dir)
    update: dict[str, Any] = {}
    if doc.redis is not None:
        update["redis"] = doc.redis.model_copy(
            update={"username": ADMIN_USER, "password": SecretStr(secrets.redis_admin_password)}
        )
    if doc.kafka is not None:
        update["kafka"] = doc.kafka.model_copy(
            update={
                "username": stack.spec.kafka.admin_username,
                "password": SecretStr(secrets.kafka_admin_password),
            }
        )
    if doc.timescale is not None:
        update["timescale"] = doc.timescale.model_copy(
            update={"user": SUPERUSER, "password": SecretStr(secrets.postgres_superuser_password)}
        )
    return doc.model_copy(update=update)
