"""Drill: rotate every client password of a running stack while ingest continues.

The writer produces bars with ``acks=all`` and idempotence, as in the
partition-leader drill (logged in as the writer job), while ``harness
rotate-credentials`` runs (:func:`backbone_infra.rotation.rotate_credentials`,
on a local or a compose stack) over what it rotates by default: the
application principals and the writer, consumer and reader jobs, so the
producer's own login changes under it. Redis accepts both passwords during the
switch, Kafka and PostgreSQL get their new credential, the outputs document is
rewritten, then Redis forgets the old password. The writer's connections were
authenticated before the switch and stay so; if the writer has to log in again
and is refused, it reloads its job's login from the outputs document and
reopens (the client's side of a rotation).

Checked: no acknowledged bar lost, none twice (read back as the consumer job
with the *new* document, so a new Kafka credential is proven too); after the
rotation a client with the old application password is refused by Redis, Kafka
and PostgreSQL, and a client with the new document works on each.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import kafka.errors as kafka_errors
import psycopg
import redis
from kafka import KafkaAdminClient
from pydantic import SecretStr
from redis.sentinel import Sentinel

from backbone.bars import Bar
from backbone.connections import ConnectionsDocument, load_document
from backbone.job_logins import harness_section
from backbone.settings import KafkaConnectionSettings, load_settings
from backbone.stream.producer import BarProducer, ProducerTuning, kafka_client_config
from backbone_harness.drills.base import Fault
from backbone_harness.drills.kafka_leader import KafkaLeaderKillDrill
from backbone_harness.drills.writer import drill_bars
from backbone_harness.stacks import Stack
from backbone_infra.rotation import CLIENTS, rotate_credentials

__all__ = ["CredentialRotationDrill", "refused_with_old_passwords", "works_with"]

#: Seconds Redis accepts both passwords after the new document is published.
GRACE_S = 3.0


def _redis(doc: ConnectionsDocument, password: str | None = None) -> redis.Redis:
    """A fresh client of the primary (found through Sentinel in sentinel mode)."""
    settings = load_settings(doc).redis
    assert settings is not None
    host, port = settings.host, settings.port
    if settings.mode == "sentinel":
        assert settings.master_name is not None
        sentinel = Sentinel(
            [(s.host, s.port) for s in settings.sentinels],
            sentinel_kwargs=settings.sentinel_kwargs(),
        )
        host, port = sentinel.discover_master(settings.master_name)
        for s in sentinel.sentinels:
            s.close()
    assert host is not None and port is not None
    kwargs = settings.client_kwargs()
    if password is not None:
        kwargs["password"] = password
    kwargs["retry"] = None
    return redis.Redis(host=host, port=port, **kwargs)


def _pg(doc: ConnectionsDocument, password: str | None = None) -> psycopg.Connection:
    t = doc.timescale
    assert t is not None and t.password is not None
    return psycopg.connect(
        t.conninfo(),
        password=password if password is not None else t.password.get_secret_value(),
        connect_timeout=5,
    )


def _kafka_login(doc: ConnectionsDocument, password: str | None = None) -> None:
    assert doc.kafka is not None
    section = doc.kafka
    if password is not None:
        section = section.model_copy(update={"password": SecretStr(password)})
    config = kafka_client_config(
        KafkaConnectionSettings.from_section(section), client_id="drill-rotation-check"
    )
    KafkaAdminClient(**config, bootstrap_timeout_ms=4000).close()


def works_with(doc: ConnectionsDocument) -> list[str]:
    """Problems a fresh client with ``doc`` meets on each service (none: it works)."""
    problems: list[str] = []
    key = f"{load_settings(doc).namespace}-rotation-{secrets.token_hex(3)}:check"
    try:
        with _redis(doc) as client:
            client.set(key, b"1", px=10_000)
    except redis.RedisError as exc:
        problems.append(f"redis refused the new document: {type(exc).__name__}")
    try:
        with _pg(doc) as conn:
            conn.execute("SELECT count(*) FROM bars").fetchone()
    except psycopg.Error as exc:
        problems.append(f"postgres refused the new document: {type(exc).__name__}")
    try:
        _kafka_login(doc)
    except kafka_errors.KafkaError as exc:
        problems.append(f"kafka refused the new document: {type(exc).__name__}")
    return problems


def refused_with_old_passwords(doc: ConnectionsDocument, old: ConnectionsDocument) -> list[str]:
    """Problems: each service that still lets a new client in with ``old``'s password."""
    assert old.redis and old.redis.password and old.kafka and old.kafka.password
    assert old.timescale and old.timescale.password
    problems: list[str] = []
    try:
        with _redis(doc, old.redis.password.get_secret_value()) as client:
            client.ping()
        problems.append("redis still accepts the old password")
    except redis.AuthenticationError:
        pass
    try:
        with _pg(doc, old.timescale.password.get_secret_value()):
            problems.append("postgres still accepts the old password")
    except psycopg.OperationalError:
        pass
    try:
        _kafka_login(doc, old.kafka.password.get_secret_value())
        problems.append("kafka still accepts the old password")
    except kafka_errors.KafkaError:
        pass
    return problems


class CredentialRotationDrill(KafkaLeaderKillDrill):
    """The writer and reader of the partition-leader drill; the fault is a rotation."""

    name = "credential-rotation"
    #: Seconds writes may stop (a rotation must not stop ingest: connections stay authenticated).
    max_unavailable_s: float | None = 5.0
    summary = "rotate the Redis, Kafka and PostgreSQL passwords during acks=all produce"
    fault = Fault(role="the application's and the jobs' credentials", kind="rotate")
    min_acknowledged = 200
    stack_sizes = ("minimal", "ha")
    environments = ("local", "compose")

    def __init__(self, stack: Stack) -> None:
        super().__init__(stack)
        self.old_document: ConnectionsDocument = stack.document
        self.reopened = 0

    def target(self) -> str:
        return "credentials"

    def bars(self) -> Iterator[Bar]:
        return drill_bars(self.symbols)

    def write(self, bars: list[Bar]) -> None:
        assert self.producer is not None
        try:
            self.producer.send_bars(bars)
            self.producer.flush()
        except Exception:
            # A failed send after a rotation (a new login refused): reload the
            # document and reopen; the batch counts as not acknowledged.
            if self._rotated():
                self._reopen()
            raise

    def _rotated(self) -> bool:
        kafka = harness_section(load_document(self.stack.outputs_path), "producer")
        assert kafka.password is not None
        mine = self.kafka.password
        return mine is None or mine.get_secret_value() != kafka.password.get_secret_value()

    def _reopen(self) -> None:
        if self.producer is not None:
            self.producer.close(timeout_s=5)
        kafka = harness_section(load_document(self.stack.outputs_path), "producer")
        self.kafka = KafkaConnectionSettings.from_section(kafka)
        self.producer = BarProducer(
            self.kafka,
            tuning=ProducerTuning(bars_per_record=25, flush_timeout_s=45.0),
            client_id=f"drill-{self.name}",
        )
        self.reopened += 1

    def inject(self, node: str) -> None:
        # The application's logins and every job's: the writer's is the producer's.
        result = rotate_credentials(self.stack, CLIENTS, grace_s=GRACE_S)
        self.figures["seconds_to_publish"] = round(result.seconds_to_publish, 2)
        self.figures["grace_s"] = GRACE_S

    def during_fault(self, node: str) -> None:
        new = load_document(self.stack.outputs_path)
        self.problems += works_with(new)
        self.problems += refused_with_old_passwords(new, self.old_document)

    def recover(self, node: str) -> None:
        """Nothing to undo: the stack keeps its new credentials (the point of it)."""

    def found_keys(self, acknowledged: list[Any]) -> list[Any]:
        # Read back with the new document: proves the consumer's new Kafka credential too.
        doc = load_document(self.stack.outputs_path)
        self.reading = KafkaConnectionSettings.from_section(harness_section(doc, "topic-reader"))
        self.figures["writer_reopened"] = self.reopened
        return super().found_keys(acknowledged)
