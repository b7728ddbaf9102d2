"""Which login each client of the runtime uses: one principal per job (issue 11).

A stack's full outputs document carries every job's login under ``principals``
besides the all-in-one *application* login in its sections' standard fields.
``Backbone.open`` gives each client its job's login, so no client holds a right
its work does not use:

=============================================  ==========  ===================================
client                                         job         what the job's rights allow
=============================================  ==========  ===================================
``BarProducer`` (``ingest``: bars, rejects)    writer      WRITE bar and dead-letter topics
``BarConsumer`` (group member, commits)        consumer    READ bar topics, the group
the consumer's producer (its dead letters,     consumer    WRITE dead-letter and health
health reports)                                            topics only
store (writes, and ``read``/``latest``)        consumer    DML without DELETE, no DDL
cache (fills, invalidations, reads)            consumer    the cache's commands on its keys
=============================================  ==========  ===================================

``read()``/``latest()`` use the consumer's pools rather than the reader's: a
read-through cache *fills* on a miss, which the reader's Redis user may not do
(``SET`` is refused to it), and the reader's logins would need a second
PostgreSQL pool and a second Redis pool in every process that also ingests. A
process that only reads opens the reader's own document (``harness outputs
--job reader``) and gets the reader's logins, nothing else.

Opened on one job's document (``job`` set in it), the runtime uses that
document's logins and opens only what the job can use (:func:`clients_of`); a
call outside the job raises :class:`JobScopeError`, naming the job and what to
do instead. The monitor job's logins are for the exporters: the runtime refuses
them.

Credentials set in the environment or ``config.yaml`` (``BACKBONE_KAFKA__PASSWORD``
...) still win: a section whose credentials are not the document's keeps them
for every client of that service, and does not follow the document file. A
document without ``principals`` (made before issue 11) gives every client the
application's login, as before.

The clients the harness builds itself (drills, the load run's seeding, benches)
take the same choice from :func:`harness_section`, plus the reader's login for
a read-back that only reads (:data:`HARNESS_JOBS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, overload

from backbone.connections import (
    ConnectionsDocument,
    ConnectionsError,
    Job,
    KafkaConnection,
    RedisConnection,
    TimescaleConnection,
)
from backbone.job_outputs import USER_FIELD, Service, job_section
from backbone.settings import (
    BackboneSettings,
    KafkaConnectionSettings,
    RedisConnectionSettings,
    TimescaleConnectionSettings,
)

__all__ = [
    "CLIENT_JOBS",
    "HARNESS_JOBS",
    "Client",
    "HarnessClient",
    "JobScopeError",
    "RuntimeLogins",
    "clients_of",
    "harness_section",
    "runtime_logins",
    "section_follows",
]

Client = Literal["producer", "consumer", "store", "cache"]

#: On a full document: the service and the job each client logs in as.
CLIENT_JOBS: dict[Client, tuple[Service, Job]] = {
    "producer": ("kafka", "writer"),
    "consumer": ("kafka", "consumer"),
    "store": ("timescale", "consumer"),
    "cache": ("redis", "consumer"),
}

#: The clients a job's own document opens (a job uses no other).
_JOB_CLIENTS: dict[Job, frozenset[Client]] = {
    "writer": frozenset({"producer", "store"}),
    "consumer": frozenset({"consumer", "store", "cache"}),
    "reader": frozenset({"store", "cache"}),
    "monitor": frozenset(),
}

#: Clients the harness builds itself, outside ``Backbone`` (the drills' own
#: producers, group members, stores and caches, the load run's seeding, benches):
#: the runtime's job for the same client, and the read-backs that only read.
#: ``topic-reader`` (a drill reading a partition back, no group) is the consumer:
#: the reader job has no Kafka login.
HarnessClient = Literal[
    "producer", "consumer", "store", "cache", "store-reader", "cache-reader", "topic-reader"
]
HARNESS_JOBS: dict[HarnessClient, tuple[Service, Job]] = {
    "producer": CLIENT_JOBS["producer"],
    "consumer": CLIENT_JOBS["consumer"],
    "store": CLIENT_JOBS["store"],
    "cache": CLIENT_JOBS["cache"],
    "store-reader": ("timescale", "reader"),
    "cache-reader": ("redis", "reader"),
    "topic-reader": ("kafka", "consumer"),
}


class JobScopeError(RuntimeError):
    """A call the job whose document the runtime was opened on has no rights for."""


def clients_of(job: Job | None) -> frozenset[Client]:
    """The clients the runtime opens for ``job``'s document (``None``: the full one)."""
    return frozenset(CLIENT_JOBS) if job is None else _JOB_CLIENTS[job]


def section_follows(section: Any, document_section: Any, user_field: str) -> bool:
    """Whether a settings section took its credentials from the document's section
    (the environment or config.yaml may override them: then they stay fixed)."""
    return (
        section is not None
        and document_section is not None
        and getattr(section, user_field) == getattr(document_section, user_field)
        and section.password == document_section.password
    )


@dataclass(frozen=True)
class RuntimeLogins:
    """The settings each runtime client connects with, and what they follow."""

    #: The job of the document the runtime was opened on (``None``: a full document).
    job: Job | None
    producer: KafkaConnectionSettings | None = None
    consumer: KafkaConnectionSettings | None = None
    store: TimescaleConnectionSettings | None = None
    cache: RedisConnectionSettings | None = None
    #: Per client that follows the document file through a rotation, the job whose
    #: login it follows (``None``: the sections' standard fields). A client absent
    #: here keeps its credentials (they came from the environment or config.yaml).
    follows: Mapping[Client, Job | None] = field(default_factory=dict)

    @property
    def read_only(self) -> bool:
        """The reader's logins: the store may create no staging table and no schema."""
        return self.job == "reader"

    def scope_error(self, call: str, needs: str) -> JobScopeError:
        """The error for ``call`` on a job's document whose job lacks ``needs``."""
        return JobScopeError(
            f"{call} needs {needs}, and this Backbone was opened on the {self.job!r} job's "
            f"outputs document, which holds only the {self.job} job's logins; open the stack's "
            "full document (.stacks/NAME/outputs.json) for an all-in-one process, or give "
            "each process its own job's document (`harness outputs --job writer|consumer`)"
        )

    def for_validation(self, settings: BackboneSettings) -> BackboneSettings:
        """``settings`` with the logins the clients will use (the tier's checks log
        in as them, so a refused job login fails the switch, not the first call)."""
        return settings.model_copy(
            update={
                "redis": self.cache,
                "kafka": self.consumer or self.producer,
                "timescale": self.store,
            }
        )


def runtime_logins(
    settings: BackboneSettings, document: ConnectionsDocument | None
) -> RuntimeLogins:
    """Each client's login (see the module docstring)."""
    job = document.job if document is not None else None
    if job == "monitor":
        raise JobScopeError(
            "the monitor job's logins are the exporters' (statistics and offsets, no "
            "data): the backbone runtime has nothing to open with them; open the stack's "
            "full document, or `harness outputs --job reader` to read bars"
        )
    wanted = clients_of(job)
    principals = (document.principals or {}) if document is not None and job is None else {}
    chosen: dict[Client, Any] = {}
    follows: dict[Client, Job | None] = {}
    for client, (service, client_job) in CLIENT_JOBS.items():
        if client not in wanted:
            continue
        section = getattr(settings, service)
        from_document = document is not None and section_follows(
            section, getattr(document, service), USER_FIELD[service]
        )
        login = getattr(principals.get(client_job), service, None) if principals else None
        if from_document and login is not None:
            update: dict[str, Any] = {
                USER_FIELD[service]: login.username,
                "password": login.password,
            }
            if login.dbname is not None:
                update["dbname"] = login.dbname
            section = section.model_copy(update=update)
            follows[client] = client_job
        elif from_document:
            follows[client] = None
        chosen[client] = section
    return RuntimeLogins(job=job, follows=follows, **chosen)


@overload
def harness_section(
    doc: ConnectionsDocument, client: Literal["producer", "consumer", "topic-reader"]
) -> KafkaConnection: ...
@overload
def harness_section(
    doc: ConnectionsDocument, client: Literal["store", "store-reader"]
) -> TimescaleConnection: ...
@overload
def harness_section(
    doc: ConnectionsDocument, client: Literal["cache", "cache-reader"]
) -> RedisConnection: ...
def harness_section(
    doc: ConnectionsDocument, client: HarnessClient
) -> KafkaConnection | RedisConnection | TimescaleConnection:
    """The section a harness ``client`` connects with: its job's login
    (:data:`HARNESS_JOBS`), or the application's on a document without
    ``principals``, as ``Backbone`` does."""
    service, job = HARNESS_JOBS[client]
    section = job_section(doc, service, job)
    if section is None:
        raise ConnectionsError(
            f"stack {doc.stack!r} has no {service} section, which the harness's {client} "
            "needs: use a stack with that service (institutional tier)"
        )
    return section
