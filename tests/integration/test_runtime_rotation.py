"""A running ``Backbone`` picks up rotated credentials (issue 11, item 4).

Against the session's real local stack: open the runtime on the stack's outputs
document, ingest, rotate the passwords of the jobs the runtime logs in as (the
writer's and the consumer's, issue 11) with the real rotation function, then
force every client to reconnect — Redis ``CLIENT KILL`` and PostgreSQL
``pg_terminate_backend`` as the administrators, Kafka through
``reload_credentials()`` — and ingest again. The old passwords are refused by
then, so the reconnects succeed only with the new document's: every
acknowledged bar is stored exactly once, the cache serves a hit after a miss,
and no password reaches the logs. A rotation of the application's Kafka
password before that rebuilds nothing: no client of the runtime uses it.

The daemon tests rotate the consumer's logins under ``backbone consume``'s
loop: a reload requested the way SIGHUP requests it (or forced by a refused
login) rebuilds its Kafka clients, and bars produced afterwards are stored once.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from kafka import KafkaConsumer, TopicPartition

from backbone.bars import Bar
from backbone.cache import DegradableCache
from backbone.connections import ConnectionsDocument
from backbone.daemon import ConsumerDaemon
from backbone.job_outputs import job_document
from backbone.runtime import Backbone
from backbone.settings import KafkaConnectionSettings, RedisConnectionSettings
from backbone.stream.codec import decode_record
from backbone.stream.producer import BarProducer, ProducerTuning, kafka_client_config
from backbone_harness.drills.credential_rotation import refused_with_old_passwords
from backbone_infra.render.postgres import SUPERUSER
from backbone_infra.render.redis import ADMIN_USER
from backbone_infra.rotation import rotate_credentials
from backbone_infra.targets.local.provisioner import LocalStack
from backbone_infra.targets.local.secrets import StackSecrets

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _bars(symbol: str, n: int, start: datetime) -> list[Bar]:
    return [
        Bar(symbol, "1m", start + timedelta(minutes=i), 10.0, 11.0 + i, 9.0, 10.5, 100.0)
        for i in range(n)
    ]


def _superuser(doc: ConnectionsDocument, admin: StackSecrets) -> psycopg.Connection[Any]:
    assert doc.timescale is not None
    pg = doc.timescale
    extra: dict[str, Any] = {"sslrootcert": pg.sslrootcert} if pg.sslrootcert else {}
    return psycopg.connect(
        host=pg.hosts[0].host, port=pg.hosts[0].port, dbname=pg.dbname, user=SUPERUSER,
        password=admin.postgres_superuser_password, sslmode=pg.sslmode, autocommit=True,
        connect_timeout=10, **extra,
    )  # fmt: skip


def _redis_admin(doc: ConnectionsDocument, admin: StackSecrets) -> redis.Redis:
    assert doc.redis is not None and doc.redis.host is not None
    return redis.Redis(
        host=doc.redis.host, port=doc.redis.port or 6379, username=ADMIN_USER,
        password=admin.redis_admin_password, socket_timeout=5,
        **RedisConnectionSettings.from_section(doc.redis).tls_kwargs(),
    )  # fmt: skip


def _force_reconnects(doc: ConnectionsDocument, admin: StackSecrets) -> int:
    """Drop the consumer job's Redis connections and PostgreSQL sessions (the
    runtime's cache and store log in as it); returns how many PostgreSQL
    sessions were terminated."""
    consumer = job_document(doc, "consumer")
    assert consumer.redis is not None and consumer.redis.username is not None
    assert consumer.timescale is not None
    user = consumer.timescale.user
    with _redis_admin(doc, admin) as client:
        client.execute_command("CLIENT", "KILL", "USER", consumer.redis.username)
    with _superuser(doc, admin) as pg:
        row = pg.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE usename = %s AND application_name = 'backbone-store'",
            (user,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _stored(doc: ConnectionsDocument, admin: StackSecrets, symbol: str) -> list[datetime]:
    with _superuser(doc, admin) as pg:
        rows = pg.execute(
            "SELECT ts FROM bars WHERE symbol = %s AND timeframe = '1m' ORDER BY ts", (symbol,)
        ).fetchall()
    return [r[0].astimezone(UTC) for r in rows]


def _secrets_of(*docs: ConnectionsDocument) -> set[str]:
    """Every password of the documents: the application's and each job's."""
    found: set[str] = set()
    for doc in docs:
        logins = [p for job in (doc.principals or {}).values() for p in job.__dict__.values()]
        for section in (doc.redis, doc.kafka, doc.timescale, *logins):
            password = getattr(section, "password", None)
            if password is not None:
                found.add(password.get_secret_value())
    return found


def test_a_running_backbone_reconnects_with_rotated_credentials(
    local_stack: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="backbone")
    old_doc, admin = local_stack.document, StackSecrets.load(local_stack.dir)
    assert old_doc.timescale is not None
    symbol = f"RLD{secrets.token_hex(3).upper()}"
    before = _bars(symbol, 120, datetime(2024, 5, 1, tzinfo=UTC))
    after = _bars(symbol, 80, datetime(2024, 5, 2, tzinfo=UTC))
    with Backbone.open(
        tier="institutional",
        outputs=local_stack.outputs_path,
        group_id=f"backbone-reload-{symbol.lower()}",
        consumer_start="latest",
    ) as bb:
        first = bb.ingest(before)
        assert first.stored == len(before) and first.reconciles

        # The application's login is no client's any more: nothing to rebuild.
        rotate_credentials(local_stack, principals=("kafka",), grace_s=0)
        assert not bb.kafka_credentials_changed()
        assert bb.reload_credentials() is False
        # ... but the settings keep following it (dead-letter inspection reads with it).
        app_kafka = local_stack.document.kafka
        assert bb.settings.kafka is not None and app_kafka is not None
        assert bb.settings.kafka.password == app_kafka.password

        rotate_credentials(local_stack, principals=("writer", "consumer"), grace_s=0.5)
        new_doc = local_stack.document
        consumer_before = job_document(old_doc, "consumer")
        assert refused_with_old_passwords(job_document(new_doc, "consumer"), consumer_before) == []
        killed_at = time.time()
        assert _force_reconnects(new_doc, admin) >= 1
        assert bb.kafka_credentials_changed()
        assert {login.job for login in bb.kafka_logins} == {"writer", "consumer"}
        assert bb.reload_credentials() is True
        # Every Kafka client now logs in with its job's new password.
        for login in bb.kafka_logins:
            rotated = job_document(new_doc, login.job).kafka  # type: ignore[arg-type]
            assert rotated is not None and login.settings.password == rotated.password
        assert not bb.kafka_credentials_changed()
        assert bb.reload_credentials() is False  # nothing newer: the clients stay

        second = bb.ingest(after)
        assert second.stored == len(after) and second.duplicates == 0
        assert second.reconciles and second.degraded == {}, second
        # The cache answers again on new connections: a miss, then a hit.
        assert isinstance(bb.cache, DegradableCache) and not bb.cache.state().degraded
        stats = bb.cache.stats()
        latest = bb.latest(symbol, "1m")
        assert latest is not None and latest.ts == after[-1].ts
        assert bb.latest(symbol, "1m") == latest
        now = bb.cache.stats()
        assert now.misses == stats.misses + 1 and now.hits == stats.hits + 1
        with _superuser(new_doc, admin) as pg:
            fresh = pg.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                "'backbone-store' AND backend_start > to_timestamp(%s)",
                (killed_at,),
            ).fetchone()
        assert fresh is not None and fresh[0] >= 1  # the pool logged in again

    assert _stored(new_doc, admin, symbol) == [b.ts for b in before + after]
    logged = caplog.text
    leaked = [pw for pw in _secrets_of(old_doc, new_doc) if pw in logged]
    assert leaked == [], "a password reached the logs"


def test_the_consumer_daemon_reloads_on_request_and_stores_each_bar_once(
    local_stack: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    old_doc, admin = local_stack.document, StackSecrets.load(local_stack.dir)
    symbol = f"RLH{secrets.token_hex(3).upper()}"
    bars = _bars(symbol, 60, datetime(2024, 6, 1, tzinfo=UTC))
    with Backbone.open(
        tier="institutional",
        outputs=local_stack.outputs_path,
        group_id=f"backbone-reload-daemon-{symbol.lower()}",
        consumer_start="latest",
    ) as bb:
        assert bb.consumer is not None
        bb.consumer.wait_for_assignment()
        daemon = ConsumerDaemon(bb, metrics_port=None)
        # The daemon's own bound only keeps a broken test from hanging: it is
        # stopped below. (At 120 s it once ran out on a loaded machine while the
        # rotation and the reload took their time, and stored nothing after.)
        runner = threading.Thread(target=daemon.run, kwargs={"timeout_s": 600.0}, daemon=True)
        runner.start()
        try:
            rotate_credentials(local_stack, principals=("consumer",), grace_s=0)
            new_doc = local_stack.document
            assert new_doc.kafka is not None
            daemon.request_reload()  # what SIGHUP does in `backbone consume`
            deadline = time.monotonic() + 60
            while daemon.credential_reloads == 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert daemon.credential_reloads == 1
            assert runner.is_alive()
            deadline = time.monotonic() + 120
            producer = BarProducer(
                KafkaConnectionSettings.from_section(new_doc.kafka), client_id="reload-test"
            )
            try:
                producer.send_bars(bars)
                producer.flush()  # acknowledged
            finally:
                producer.close(timeout_s=10)
            while len(_stored(new_doc, admin, symbol)) < len(bars) and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            daemon.stop()
            runner.join(timeout=60)
        assert not runner.is_alive()
    assert _stored(new_doc, admin, symbol) == [b.ts for b in bars]
    logged = caplog.text
    assert [pw for pw in _secrets_of(old_doc, new_doc) if pw in logged] == []


def test_the_consumer_daemon_reloads_when_kafka_refuses_its_old_login(
    local_stack: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    """No signal: the broker restarts after a rotation, the daemon's clients are
    refused with the old password, and the daemon reloads from the document."""
    caplog.set_level(logging.INFO)
    old_doc, admin = local_stack.document, StackSecrets.load(local_stack.dir)
    symbol = f"RLA{secrets.token_hex(3).upper()}"
    bars = _bars(symbol, 60, datetime(2024, 7, 1, tzinfo=UTC))
    broker = local_stack.services["kafka"].records[0].name
    with Backbone.open(
        tier="institutional",
        outputs=local_stack.outputs_path,
        group_id=f"backbone-reload-auth-{symbol.lower()}",
        consumer_start="latest",
    ) as bb:
        assert bb.consumer is not None
        bb.consumer.wait_for_assignment()
        daemon = ConsumerDaemon(bb, metrics_port=None)
        runner = threading.Thread(target=daemon.run, kwargs={"timeout_s": 600.0}, daemon=True)
        runner.start()
        try:
            rotate_credentials(local_stack, principals=("consumer",), grace_s=0)
            new_doc = local_stack.document
            assert new_doc.kafka is not None
            local_stack.restart_node(broker)  # every connection logs in again
            deadline = time.monotonic() + 150
            while daemon.credential_reloads == 0 and time.monotonic() < deadline:
                assert runner.is_alive(), "the daemon died instead of reloading"
                time.sleep(0.5)
            assert daemon.credential_reloads == 1
            deadline = time.monotonic() + 120
            producer = BarProducer(
                KafkaConnectionSettings.from_section(new_doc.kafka), client_id="reload-test"
            )
            try:
                producer.send_bars(bars)
                producer.flush()
            finally:
                producer.close(timeout_s=10)
            while len(_stored(new_doc, admin, symbol)) < len(bars) and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            daemon.stop()
            runner.join(timeout=60)
        assert not runner.is_alive()
    assert _stored(new_doc, admin, symbol) == [b.ts for b in bars]
    assert [pw for pw in _secrets_of(old_doc, new_doc) if pw in caplog.text] == []


def _wait_for(lines: list[str], text: str, proc: subprocess.Popen[str], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if any(text in line for line in lines):
            return True
        time.sleep(0.2)
    return any(text in line for line in lines)


def test_backbone_consume_reloads_its_credentials_on_sighup(local_stack: LocalStack) -> None:
    old_doc, admin = local_stack.document, StackSecrets.load(local_stack.dir)
    symbol = f"RLS{secrets.token_hex(3).upper()}"
    bars = _bars(symbol, 40, datetime(2024, 8, 1, tzinfo=UTC))
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    group = f"backbone-reload-cli-{symbol.lower()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "backbone", "--log-level", "info", "consume",
         "--outputs", str(local_stack.outputs_path), "--group", group,
         "--start", "latest", "--metrics-port", "-1", "--timeout", "180"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    lines: list[str] = []
    stderr = proc.stderr
    assert stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(stderr.readline, "")))
    reader.start()
    try:
        assert _wait_for(lines, "consuming:", proc, 90), lines[-20:]
        rotate_credentials(local_stack, principals=("consumer",), grace_s=0)
        new_doc = local_stack.document
        assert new_doc.kafka is not None
        proc.send_signal(signal.SIGHUP)
        assert _wait_for(lines, "credentials reloaded (requested)", proc, 90), lines[-20:]
        producer = BarProducer(
            KafkaConnectionSettings.from_section(new_doc.kafka), client_id="reload-cli"
        )
        try:
            producer.send_bars(bars)
            producer.flush()
        finally:
            producer.close(timeout_s=10)
        deadline = time.monotonic() + 60
        while len(_stored(new_doc, admin, symbol)) < len(bars) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(timeout=10)
    assert proc.returncode == 0, lines[-20:]
    assert _stored(new_doc, admin, symbol) == [b.ts for b in bars]
    text = "".join(lines)
    assert [pw for pw in _secrets_of(old_doc, new_doc) if pw in text] == []


def test_a_producer_refused_after_a_rotation_resends_on_its_new_client(
    local_stack: LocalStack,
) -> None:
    """The broker restarts after a rotation: the old client's sends are refused,
    and ``reconnect`` sends them again, same records and keys, with the new password."""
    old_doc = local_stack.document
    assert old_doc.kafka is not None
    symbol = f"RLP{secrets.token_hex(3).upper()}"
    early = _bars(symbol, 30, datetime(2024, 9, 1, tzinfo=UTC))
    late = _bars(symbol, 30, datetime(2024, 9, 2, tzinfo=UTC))
    producer = BarProducer(
        KafkaConnectionSettings.from_section(old_doc.kafka),
        tuning=ProducerTuning(bars_per_record=10, flush_timeout_s=10),
        client_id="reload-resend",
    )
    try:
        producer.send_bars(early)
        acked = producer.flush()
        rotate_credentials(local_stack, principals=("kafka",), grace_s=0)
        new_doc = local_stack.document
        assert new_doc.kafka is not None
        local_stack.restart_node(local_stack.services["kafka"].records[0].name)
        producer.send_bars(late)  # the old client can only be refused now
        resent = producer.reconnect(KafkaConnectionSettings.from_section(new_doc.kafka))
        assert resent == 3  # three records of ten bars
        acked_late = producer.flush()  # raises unless every record was acknowledged
    finally:
        producer.close(timeout_s=10)
    assert acked and acked_late
    topic = new_doc.kafka.topic("intraday_bars")
    keys: list[object] = []
    reader = KafkaConsumer(
        **kafka_client_config(
            KafkaConnectionSettings.from_section(new_doc.kafka), client_id="reload-read"
        ),
        enable_auto_commit=False,
    )
    try:
        parts = [TopicPartition(topic, p) for p in range(new_doc.kafka.partitions("intraday_bars"))]
        reader.assign(parts)
        reader.seek_to_beginning()
        ends = reader.end_offsets(parts)
        deadline = time.monotonic() + 60
        while any(reader.position(tp) < ends[tp] for tp in parts) and time.monotonic() < deadline:
            for records in reader.poll(timeout_ms=500).values():
                for rec in records:
                    if rec.key == symbol.encode():
                        decoded = decode_record(rec.value, rec.headers, key=rec.key, origin="t")
                        keys.extend(b.key for b in decoded.bars)
    finally:
        reader.close()
    # In Kafka exactly once: the refused client delivered nothing it was asked to re-send.
    assert sorted(map(str, keys)) == sorted(str(b.key) for b in early + late)
