"""The runtime logs in as the jobs, not as the application (issue 11).

Against the session's real local stack, checked on the servers' side: the
connections this process holds are found by their local ports in Redis's
``CLIENT LIST`` and PostgreSQL's ``pg_stat_activity``, and the user each server
authenticated is compared with the job's. Kafka does not list a client's
principal, so its logins are shown by what the brokers refuse: the ingest
producer may not write the health topic (the application may) and the
consumer's producer may not write a bar topic (the writer may).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
import redis

from backbone.bars import Bar
from backbone.connections import Job, write_document
from backbone.job_logins import JobScopeError
from backbone.job_outputs import job_document
from backbone.runtime import Backbone
from backbone.settings import RedisConnectionSettings
from backbone.stream.producer import ProduceError
from backbone_harness.drills.consumer_crash import ConsumerCrashDrill
from backbone_harness.drills.store_outage import StoreOutageDrill
from backbone_harness.drills.writer import stored_keys
from backbone_infra.render.postgres import SUPERUSER
from backbone_infra.render.redis import ADMIN_USER
from backbone_infra.targets.local.provisioner import LocalStack
from backbone_infra.targets.local.secrets import StackSecrets

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _bars(symbol: str, n: int) -> list[Bar]:
    start = datetime(2024, 3, 1, tzinfo=UTC)
    return [
        Bar(symbol, "1m", start + timedelta(minutes=i), 10.0, 11.0, 9.0, 10.5, 100.0)
        for i in range(n)
    ]


def _local_ports() -> set[int]:
    """This process's established TCP client ports."""
    return {
        c.laddr.port
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.status == psutil.CONN_ESTABLISHED
    }


def _redis_users(stack: LocalStack, since: set[int]) -> set[str]:
    """The ACL users Redis authenticated this process's connections as, for the
    connections opened after ``since`` (the ports held before) was taken."""
    doc = stack.document
    assert doc.redis is not None and doc.redis.host is not None and doc.redis.port is not None
    ours = _local_ports() - since
    admin = redis.Redis(
        host=doc.redis.host, port=doc.redis.port, username=ADMIN_USER,
        password=StackSecrets.load(stack.dir).redis_admin_password, socket_timeout=5,
        **RedisConnectionSettings.from_section(doc.redis).tls_kwargs(),
    )  # fmt: skip
    try:
        clients: list[dict[str, Any]] = admin.client_list()
        me = admin.client_id()
    finally:
        admin.close()
    return {
        str(c["user"])
        for c in clients
        if int(c["id"]) != me and int(str(c["addr"]).rpartition(":")[2]) in ours
    }


def _pg_users(stack: LocalStack, since: set[int]) -> set[str]:
    """The roles PostgreSQL authenticated this process's sessions as (those
    opened after ``since`` was taken, as :func:`_redis_users`)."""
    doc = stack.document
    assert doc.timescale is not None
    pg = doc.timescale
    ours = _local_ports() - since
    with psycopg.connect(
        host=pg.hosts[0].host, port=pg.hosts[0].port, dbname=pg.dbname, user=SUPERUSER,
        password=StackSecrets.load(stack.dir).postgres_superuser_password, sslmode=pg.sslmode,
        sslrootcert=pg.sslrootcert, autocommit=True, connect_timeout=10,
    ) as admin:  # fmt: skip
        rows = admin.execute(
            "SELECT usename, client_port FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND client_port IS NOT NULL"
        ).fetchall()
    return {str(user) for user, port in rows if port in ours}


def _job_user(stack: LocalStack, job: Job, service: str) -> str:
    section: Any = getattr(job_document(stack.document, job), service)
    assert section is not None
    return str(section.user if service == "timescale" else section.username)


@pytest.fixture
def job_outputs(local_stack: LocalStack, tmp_path: Path) -> Iterator[dict[Job, Path]]:
    """Each runtime job's own document (what `harness outputs --job` writes)."""
    jobs: tuple[Job, ...] = ("writer", "consumer", "reader")
    yield {
        job: write_document(job_document(local_stack.document, job), tmp_path / f"{job}.json")
        for job in jobs
    }


def test_a_backbone_on_the_full_document_logs_in_as_each_job(local_stack: LocalStack) -> None:
    doc = local_stack.document
    assert doc.kafka is not None and doc.redis is not None and doc.timescale is not None
    symbol = f"JOB{secrets.token_hex(3).upper()}"
    bars = _bars(symbol, 50)
    consumer_users = {
        "redis": _job_user(local_stack, "consumer", "redis"),
        "timescale": _job_user(local_stack, "consumer", "timescale"),
    }
    # Connections another test left open in this process are not this Backbone's.
    before = _local_ports()
    with Backbone.open(
        tier="institutional",
        outputs=local_stack.outputs_path,
        group_id=f"backbone-jobrun-{symbol.lower()}",
        consumer_start="latest",
    ) as bb:
        assert bb.producer is not None and bb.consumer is not None
        result = bb.ingest(bars)
        assert result.stored == len(bars) and result.reconciles, result
        assert bb.read(symbol, "1m", bars[0].ts, bars[-1].ts + timedelta(minutes=1)) == bars
        assert bb.latest(symbol, "1m") == bars[-1]
        # The servers authenticated the cache and the store as the consumer, and
        # nothing of this process as the application.
        assert _redis_users(local_stack, before) == {consumer_users["redis"]}
        assert _pg_users(local_stack, before) == {consumer_users["timescale"]}
        # Kafka: the ingest producer is the writer (the application could write the
        # health topic, the writer cannot); the consumer's reports producer is the
        # consumer (the writer and the application could write a bar topic).
        reports = bb.health_producer
        assert reports is not None and reports is not bb.producer
        with pytest.raises(ProduceError, match="TopicAuthorizationFailed"):
            reports.send_bars(bars[:1])
            reports.flush(timeout_s=15)
        with pytest.raises(ProduceError, match="TopicAuthorizationFailed"):
            bb.producer.send_json("ingest_health", {"jobrun": symbol}, key=symbol)
            bb.producer.flush(timeout_s=15)


def test_a_reader_document_backbone_reads_and_cannot_ingest(
    local_stack: LocalStack, job_outputs: dict[Job, Path]
) -> None:
    symbol = f"JOR{secrets.token_hex(3).upper()}"
    bars = _bars(symbol, 20)
    with Backbone.open(
        tier="institutional",
        outputs=local_stack.outputs_path,
        group_id=f"backbone-jobrun-{symbol.lower()}",
        consumer_start="latest",
    ) as full:
        assert full.ingest(bars).stored == len(bars)
    before = _local_ports()
    with Backbone.open(outputs=job_outputs["reader"]) as bb:
        assert bb.tier == "institutional"
        assert bb.producer is None and bb.consumer is None
        assert {c.service for c in bb.checks} == {"redis", "postgresql", "metrics"}
        assert bb.read(symbol, "1m", bars[0].ts, bars[-1].ts + timedelta(minutes=1)) == bars
        assert bb.latest(symbol, "1m") == bars[-1]
        assert _redis_users(local_stack, before) == {_job_user(local_stack, "reader", "redis")}
        assert _pg_users(local_stack, before) == {_job_user(local_stack, "reader", "timescale")}
        with pytest.raises(JobScopeError, match="'reader' job") as refused:
            bb.ingest(_bars(symbol, 1))
        assert "harness outputs --job" in str(refused.value)
        with pytest.raises(JobScopeError, match="'reader' job"):
            bb.consume(max_records=1, timeout_s=1)
    # The CLI: one line naming the job and what to do, exit code 2.
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", "backbone", "ingest", "--tier", "institutional",
         "--outputs", str(job_outputs["reader"]), "--symbols", symbol, "--bars", "5"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "'reader' job" in done.stderr and "harness outputs --job" in done.stderr


def test_a_writer_and_a_consumer_document_split_the_ingest(
    local_stack: LocalStack, job_outputs: dict[Job, Path]
) -> None:
    """The writer's process produces, the consumer's stores: each with its own login only."""
    symbol = f"JOS{secrets.token_hex(3).upper()}"
    bars = _bars(symbol, 30)
    with Backbone.open(
        outputs=job_outputs["consumer"],
        group_id=f"backbone-jobrun-{symbol.lower()}",
        consumer_start="latest",
    ) as consumer:
        assert consumer.producer is None and consumer.consumer is not None
        consumer.consumer.wait_for_assignment()
        with Backbone.open(outputs=job_outputs["writer"]) as writer:
            assert writer.consumer is None and writer.producer is not None
            with pytest.raises(JobScopeError, match="'writer' job"):
                writer.ingest(bars)
            writer.producer.send_bars(bars)
            assert writer.producer.flush()  # acknowledged by every in-sync replica
        stats = consumer.consume(timeout_s=60, idle_timeout_s=5)
        assert stats.stored == len(bars) and stats.reconciles, stats
        assert consumer.read(symbol, "1m", bars[0].ts, bars[-1].ts + timedelta(hours=1)) == bars


# --- clients the drills build themselves, not through Backbone ------------------------


def test_a_drills_own_producer_and_store_log_in_as_the_writer_and_the_consumer(
    local_stack: LocalStack,
) -> None:
    """The consumer-crash drill's set-up: its producer (the writer), its group's
    offsets and its store (the consumer); never the application."""
    before = _local_ports()
    drill = ConsumerCrashDrill(local_stack)
    try:
        drill.prepare()  # commits the group's offsets, opens the producer and the store
        assert drill.store is not None and drill.producer is not None
        assert stored_keys(drill.store, drill.symbols) == []  # the pool has a session
        assert _pg_users(local_stack, before) == {_job_user(local_stack, "consumer", "timescale")}
        # The writer may not write the health topic (the application and the consumer may).
        with pytest.raises(ProduceError, match="TopicAuthorizationFailed"):
            drill.producer.send_json("ingest_health", {"drill": drill.group}, key=drill.group)
            drill.producer.flush(timeout_s=15)
    finally:
        drill.close()


def test_an_outage_drills_read_back_logs_in_as_the_reader(local_stack: LocalStack) -> None:
    """The outage drills ingest through a Backbone (the consumer's store and cache)
    and read back through a store of their own that only SELECTs: the reader's."""
    before = _local_ports()
    drill = StoreOutageDrill(local_stack)
    try:
        drill.prepare()
        assert drill.store is not None and drill.store.read_only
        assert stored_keys(drill.store, drill.symbols) == []
        assert _pg_users(local_stack, before) == {
            _job_user(local_stack, "consumer", "timescale"),
            _job_user(local_stack, "reader", "timescale"),
        }
        assert _redis_users(local_stack, before) == {_job_user(local_stack, "consumer", "redis")}
    finally:
        drill.close()
