"""A job's outputs document: only the sections and the credentials its job needs.

The stack's full document (``backbone.connections/v1``) keeps every job's
login under ``principals``. :func:`job_document` hands one job (``writer``,
``consumer``, ``reader``, ``monitor``) a document of the same schema in which
the sections it uses carry its own login in the standard fields
(``kafka.username``/``password``, ``redis.username``/``password``,
``timescale.user``/``password``), the sections it does not use are absent, and
no other principal's password appears: a client given it reads it as it reads
the full document, and a leaked copy exposes one job's rights only.

Sentinel's ``sentinel_password`` is kept: it guards discovery only (Sentinel
has no ACL users), and every cache client needs it to find the primary.
"""

from __future__ import annotations

from typing import Literal, TypeVar, overload

from pydantic import BaseModel, SecretStr

from backbone.connections import (
    ConnectionsDocument,
    ConnectionsError,
    Credential,
    Job,
    KafkaConnection,
    RedisConnection,
    TimescaleConnection,
)

__all__ = ["USER_FIELD", "Service", "job_document", "job_section"]

Service = Literal["kafka", "redis", "timescale"]
#: The field each service's section keeps its user name in.
USER_FIELD: dict[Service, str] = {"kafka": "username", "redis": "username", "timescale": "user"}

_Section = TypeVar("_Section", bound=BaseModel)


def job_document(doc: ConnectionsDocument, job: Job) -> ConnectionsDocument:
    """The document for ``job``, built from the stack's full document ``doc``."""
    if doc.job is not None:
        raise ConnectionsError(
            f"this is the {doc.job!r} job's document, not the stack's full one; "
            "derive job documents from .stacks/NAME/outputs.json (`harness outputs --job`)"
        )
    logins = (doc.principals or {}).get(job)
    if logins is None and doc.redis is None and doc.kafka is None and doc.timescale is None:
        raise ConnectionsError(
            f"stack {doc.stack!r} names no {job!r} principal: it has no services "
            "(bootstrap tier); hand its document as it is"
        )
    if logins is None:
        raise ConnectionsError(
            f"the document of stack {doc.stack!r} names no {job!r} principal; "
            "recreate the stack with this version (`harness down`, then `harness up`)"
        )
    return doc.model_copy(
        update={
            "job": job,
            "principals": None,
            "redis": _with(doc.redis, logins.redis, user_field=USER_FIELD["redis"]),
            "kafka": _with(doc.kafka, logins.kafka, user_field=USER_FIELD["kafka"]),
            "timescale": _with(doc.timescale, logins.timescale, user_field=USER_FIELD["timescale"]),
        }
    )


@overload
def job_section(
    doc: ConnectionsDocument, service: Literal["kafka"], job: Job
) -> KafkaConnection | None: ...
@overload
def job_section(
    doc: ConnectionsDocument, service: Literal["redis"], job: Job
) -> RedisConnection | None: ...
@overload
def job_section(
    doc: ConnectionsDocument, service: Literal["timescale"], job: Job
) -> TimescaleConnection | None: ...
def job_section(
    doc: ConnectionsDocument, service: Service, job: Job
) -> KafkaConnection | RedisConnection | TimescaleConnection | None:
    """``doc``'s ``service`` section with ``job``'s login in its standard fields, for a
    client built outside ``Backbone`` (a drill's producer, a bench's store ...).

    A full document without ``principals`` (made before issue 11) gives the section
    as it is (the application's login), as ``Backbone`` does; so does ``job``'s own
    document. ``None`` when the stack has no such service.
    """
    section = getattr(doc, service)
    if section is None or (doc.job is None and doc.principals is None) or doc.job == job:
        return section
    if doc.job is not None:
        raise ConnectionsError(
            f"this is the {doc.job!r} job's document, which has no {job!r} login; "
            "give the stack's full document (.stacks/NAME/outputs.json)"
        )
    logins = (doc.principals or {}).get(job)
    login = getattr(logins, service, None) if logins is not None else None
    if login is None:
        raise ConnectionsError(
            f"the {job!r} job of stack {doc.stack!r} has no {service} login; "
            "pick the job whose rights the client needs (writer, consumer or reader)"
        )
    return _with(section, login, user_field=USER_FIELD[service])


def _with(
    section: _Section | None, login: Credential | None, *, user_field: str
) -> _Section | None:
    """``section`` with ``login`` in its standard fields; ``None`` without a login."""
    if section is None or login is None:
        return None
    update: dict[str, str | SecretStr] = {user_field: login.username, "password": login.password}
    if login.dbname is not None:
        update["dbname"] = login.dbname
    return section.model_copy(update=update)
