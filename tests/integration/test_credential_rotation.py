"""Rotating a running stack's credentials (``harness rotate-credentials``), the quick version.

Against the session's real local stack: clients connected before the switch
keep working (Redis holds both passwords during it; Kafka and PostgreSQL keep
established sessions), every acknowledged bar is read back exactly once with
the new document, the old passwords are refused afterwards, and the files stay
private. Then the ``credential-rotation`` drill rotates again under continuous
``acks=all`` ingest with the usual reconciliation.
"""

from __future__ import annotations

import secrets
import stat
import time
from datetime import UTC, datetime, timedelta

import kafka.errors as kafka_errors
import psycopg
import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from pydantic import SecretStr
from redis.backoff import NoBackoff
from redis.retry import Retry
from typer.testing import CliRunner

from backbone.bars import Bar
from backbone.connections import ConnectionsDocument
from backbone.job_outputs import job_document
from backbone.settings import KafkaConnectionSettings, RedisConnectionSettings
from backbone.stream.codec import decode_record
from backbone.stream.producer import BarProducer, ProducerTuning, kafka_client_config
from backbone_harness import observe
from backbone_harness.cli import app
from backbone_harness.drills import DRILLS, run_drill
from backbone_harness.drills.credential_rotation import refused_with_old_passwords, works_with
from backbone_infra.render.postgres import monitor_role
from backbone_infra.render.prometheus import EXPORTER_JOBS
from backbone_infra.render.redis import EXPORTER_USER, password_hash
from backbone_infra.rotation import rotate_credentials
from backbone_infra.targets.local.lag_exporter import LAG_EXPORTER
from backbone_infra.targets.local.provisioner import LocalStack
from backbone_infra.targets.local.secrets import StackSecrets

pytestmark = pytest.mark.integration


def _bars(symbol: str, n: int, start: datetime) -> list[Bar]:
    return [
        Bar(symbol, "1m", start + timedelta(minutes=i), 1.0, 1.0 + i, 1.0, 1.0 + i, 1.0)
        for i in range(n)
    ]


def _read_back(stack: LocalStack, symbol: str, tp: TopicPartition, start: int) -> list[object]:
    kafka = stack.document.kafka
    assert kafka is not None
    reader = KafkaConsumer(
        **kafka_client_config(KafkaConnectionSettings.from_section(kafka), client_id="rot-read"),
        enable_auto_commit=False,
    )
    found: list[object] = []
    try:
        reader.assign([tp])
        end = reader.end_offsets([tp])[tp]
        reader.seek(tp, start)
        deadline = time.monotonic() + 60
        while reader.position(tp) < end and time.monotonic() < deadline:
            for records in reader.poll(timeout_ms=500).values():
                for rec in records:
                    if rec.key == symbol.encode():
                        decoded = decode_record(rec.value, rec.headers, key=rec.key, origin="t")
                        found.extend(b.key for b in decoded.bars)
    finally:
        reader.close()
    return found


def test_running_clients_survive_a_rotation_and_the_old_passwords_are_refused(
    local_stack: LocalStack,
) -> None:
    old_doc, old = local_stack.document, StackSecrets.load(local_stack.dir)
    assert old_doc.kafka and old_doc.redis and old_doc.timescale
    assert old_doc.redis.host is not None and old_doc.redis.port is not None
    settings = KafkaConnectionSettings.from_section(old_doc.kafka)
    topic = old_doc.kafka.topic("intraday_bars")
    symbol = f"ROT{secrets.token_hex(2).upper()}"
    producer = BarProducer(settings, tuning=ProducerTuning(bars_per_record=10), client_id="rot")
    cache = redis.Redis(
        host=old_doc.redis.host, port=old_doc.redis.port, username=old_doc.redis.username,
        password=old.redis_password,
        **RedisConnectionSettings.from_section(old_doc.redis).tls_kwargs(),
    )  # fmt: skip
    session = psycopg.connect(
        old_doc.timescale.conninfo(), password=old.postgres_password, autocommit=True
    )
    try:
        assert cache.ping() and session.execute("SELECT 1").fetchone() == (1,)
        before = _bars(symbol, 50, datetime(2024, 3, 1, tzinfo=UTC))
        producer.send_bars(before)
        producer.flush()

        result = rotate_credentials(local_stack, grace_s=1.0)

        assert result.principals == ("redis", "kafka", "postgres")
        # Connected before the switch: still working, nothing to reconnect.
        after = _bars(symbol, 50, datetime(2024, 3, 2, tzinfo=UTC))
        producer.send_bars(after)
        producer.flush()  # raises unless every record was acknowledged
        assert cache.set(f"backbone-rot-{symbol}:k", b"1", px=10_000)
        assert session.execute("SELECT count(*) FROM bars").fetchone() is not None
    finally:
        producer.close(timeout_s=10)
        cache.close()
        session.close()

    new_doc, new = local_stack.document, StackSecrets.load(local_stack.dir)
    for field in ("redis_password", "kafka_password", "postgres_password"):
        assert getattr(new, field) != getattr(old, field), field
    assert works_with(new_doc) == []
    assert refused_with_old_passwords(new_doc, old_doc) == []
    # Every acknowledged bar, once, read with the new Kafka credential.
    keys = [k for p in range(old_doc.kafka.partitions("intraday_bars"))
            for k in _read_back(local_stack, symbol, TopicPartition(topic, p), 0)]  # fmt: skip
    expected = [b.key for b in before + after]
    assert sorted(map(str, keys)) == sorted(map(str, expected))
    # Files: private, and Redis keeps only the new hash (CONFIG REWRITE persisted it).
    for path in (local_stack.outputs_path, local_stack.dir / "secrets.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    conf = local_stack.dir / "redis" / "redis-1" / "redis.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    text = conf.read_text()
    assert password_hash(new.redis_password)[1:] in text
    assert password_hash(old.redis_password)[1:] not in text
    assert new.redis_password not in text
    assert old.kafka_password not in local_stack.outputs_path.read_text()


def test_the_rotation_drill_loses_and_doubles_no_acknowledged_bar(local_stack: LocalStack) -> None:
    report = run_drill(DRILLS["credential-rotation"], local_stack, max_write_s=30)

    assert report.acknowledged >= 200, report
    assert report.lost_acknowledged == 0, report.lost_examples
    assert report.duplicates == 0
    assert report.passed, report.reason


def test_the_cli_rotates_one_principal_and_names_a_missing_stack(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_STACKS_DIR", str(local_stack.dir.parent))
    before = StackSecrets.load(local_stack.dir)
    runner = CliRunner()
    done = runner.invoke(
        app, ["rotate-credentials", "--name", local_stack.name, "--principal", "postgres",
              "--grace", "0"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    after = StackSecrets.load(local_stack.dir)
    assert after.postgres_password != before.postgres_password
    assert after.redis_password == before.redis_password
    assert after.kafka_password == before.kafka_password
    assert after.postgres_password not in done.output and "postgres" in done.output
    assert works_with(local_stack.document) == []
    missing = runner.invoke(app, ["rotate-credentials", "--name", "no-such-stack"])
    assert missing.exit_code == 2
    assert "no-such-stack" in missing.output


def test_rotation_on_an_ha_stack_keeps_the_sentinels_and_every_replica(
    ha_stack: LocalStack,
) -> None:
    """Every Redis server takes the new password, the Sentinels keep theirs (pinned),
    and the drill's reconciliation holds with replicated topics."""
    old = StackSecrets.load(ha_stack.dir)

    report = run_drill(DRILLS["credential-rotation"], ha_stack, max_write_s=30)

    assert report.lost_acknowledged == 0, report.lost_examples
    assert report.duplicates == 0
    assert report.passed, report.reason
    new = StackSecrets.load(ha_stack.dir)
    assert new.redis_password != old.redis_password
    assert new.sentinel_password == old.sentinel_password  # Sentinels were not touched
    doc = ha_stack.document
    assert doc.redis is not None and doc.redis.sentinel_password is not None
    assert doc.redis.sentinel_password.get_secret_value() == old.sentinel_password
    tls = RedisConnectionSettings.from_section(doc.redis).tls_kwargs()
    servers = [r.name for r in ha_stack.services["redis"].records if r.name.startswith("redis-")]
    assert len(servers) >= 2
    for node in servers:
        port = ha_stack.node(node).record.ports["client"]
        with redis.Redis(
            host="127.0.0.1", port=port, username=doc.redis.username,
            password=new.redis_password, **tls,
        ) as client:  # fmt: skip
            assert client.ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(
                host="127.0.0.1", port=port, username=doc.redis.username,
                password=old.redis_password, retry=Retry(NoBackoff(), 0), **tls,
            ).ping()  # fmt: skip


def _logs_in(doc: ConnectionsDocument, service: str, password: str) -> bool:
    """Whether a new client of ``service`` gets in as ``doc``'s user with ``password``."""
    if service == "redis":
        assert doc.redis is not None and doc.redis.host and doc.redis.port
        settings = RedisConnectionSettings.from_section(doc.redis)
        kwargs = {**settings.client_kwargs(), "password": password, "retry": Retry(NoBackoff(), 0)}
        try:
            with redis.Redis(host=doc.redis.host, port=doc.redis.port, **kwargs) as client:
                return bool(client.ping())
        except redis.AuthenticationError:
            return False
    if service == "timescale":
        assert doc.timescale is not None
        try:
            with psycopg.connect(doc.timescale.conninfo(), password=password, connect_timeout=5):
                return True
        except psycopg.OperationalError:
            return False
    assert doc.kafka is not None
    section = doc.kafka.model_copy(update={"password": SecretStr(password)})
    config = kafka_client_config(KafkaConnectionSettings.from_section(section), client_id="rot")
    try:
        KafkaAdminClient(**config, bootstrap_timeout_ms=4000).close()
        return True
    except kafka_errors.KafkaError:
        return False


def test_the_cli_rotates_the_job_principals_and_their_documents_follow(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_STACKS_DIR", str(local_stack.dir.parent))
    old_doc, before = local_stack.document, StackSecrets.load(local_stack.dir)
    done = CliRunner().invoke(
        app, ["rotate-credentials", "--name", local_stack.name, "-p", "writer", "-p", "consumer",
              "-p", "reader", "--grace", "0", "--json"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    after = StackSecrets.load(local_stack.dir)
    changed = {f for f, v in after.generated().items() if before.generated()[f] != v}
    assert changed == {
        "kafka_writer_password", "postgres_writer_password", "kafka_consumer_password",
        "redis_consumer_password", "postgres_consumer_password", "redis_reader_password",
        "postgres_reader_password",
    }  # fmt: skip
    assert not any(pw in done.output for pw in after.generated().values())
    checked = 0
    for job in ("writer", "consumer", "reader"):
        new, old = job_document(local_stack.document, job), job_document(old_doc, job)
        for service in ("kafka", "redis", "timescale"):
            section, was = getattr(new, service), getattr(old, service)
            if section is None:
                continue
            assert _logs_in(new, service, section.password.get_secret_value()), (job, service)
            assert not _logs_in(new, service, was.password.get_secret_value()), (job, service)
            checked += 1
    assert checked == 7


def _monitor_pids(stack: LocalStack) -> dict[str, int | None]:
    stack.refresh()
    return {rec.name: rec.pid for rec in stack.services["monitoring"].records}


def test_rotating_the_monitor_principal_keeps_every_exporter_reaching_its_service(
    local_stack: LocalStack,
) -> None:
    """The exporters' logins rotate like the clients'; the exporters that read them
    restart on the new ones, and Prometheus sees each one reach its service."""
    doc = local_stack.document
    assert doc.monitoring is not None and doc.monitoring.prometheus_url is not None
    url = doc.monitoring.prometheus_url
    old, before = StackSecrets.load(local_stack.dir), _monitor_pids(local_stack)

    rotate_credentials(local_stack, ["monitor"], grace_s=0)

    new, after = StackSecrets.load(local_stack.dir), _monitor_pids(local_stack)
    changed = {f for f, v in new.generated().items() if old.generated()[f] != v}
    assert changed == {
        "redis_exporter_password", "kafka_monitor_password", "postgres_monitor_password"
    }  # fmt: skip
    restarted = {n for n in after if after[n] != before[n]}
    assert restarted == {"exporter-redis-1", "exporter-postgres-1", LAG_EXPORTER}
    # Every sample since the restarts says the exporter logged in (old passwords are gone).
    time.sleep(4)
    checks = ("redis_up", "pg_up", "backbone_broker_lag_up")
    deadline = time.monotonic() + 30
    while True:
        seen = {
            q: [s.value for s in observe.instant(url, f"min_over_time({q}[3s])")] for q in checks
        }
        targets = [t for t in observe.targets(url) if t.job in EXPORTER_JOBS]
        if all(v == [1.0] for v in seen.values()) and all(t.up for t in targets):
            break
        assert time.monotonic() < deadline, (seen, [(t.instance, t.last_error) for t in targets])
        time.sleep(1)
    # The old exporter logins are refused; the monitoring files stay private.
    assert doc.redis is not None and doc.redis.host and doc.redis.port and doc.timescale
    tls = RedisConnectionSettings.from_section(doc.redis).tls_kwargs()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(
            host=doc.redis.host, port=doc.redis.port, username=EXPORTER_USER,
            password=old.redis_exporter_password, retry=Retry(NoBackoff(), 0), **tls,
        ).ping()  # fmt: skip
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            doc.timescale.conninfo(), user=monitor_role(local_stack.spec.postgres),
            password=old.postgres_monitor_password, connect_timeout=5,
        )  # fmt: skip
    files = [p for p in (local_stack.dir / "monitoring").iterdir() if p.is_file()]
    gone = [getattr(old, f) for f in changed]
    assert not [p for p in files if any(pw.encode() in p.read_bytes() for pw in gone)]
    now = [getattr(new, f).encode() for f in changed]
    holders = [p for p in files if any(pw in p.read_bytes() for pw in now)]
    assert len(holders) == 3, holders  # the two exporters' password files, the lag exporter's
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in holders)
