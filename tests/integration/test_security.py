"""Security guarantees of a local stack, tried against the real services.

Each refusal is asserted together with its error class: no credentials, a
wrong password, the Redis ``default`` user, and each principal attempting one
thing outside its job (least privilege, rendered once in ``backbone_infra.render``).
Then where the processes listen (loopback only), and that no generated
password leaked into a file a stack or a test run wrote. ``docs/security.md``
lists these guarantees beside these tests.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kafka.errors as kafka_errors
import psutil
import psycopg
import psycopg.errors
import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.admin import NewTopic
from redis.backoff import NoBackoff
from redis.retry import Retry

from backbone.bars import Bar
from backbone.cache import RedisCache
from backbone.connections import ConnectionsError, Job
from backbone.job_outputs import job_document
from backbone.settings import RedisConnectionSettings, load_settings
from backbone_infra.render.postgres import monitor_role, reader_role
from backbone_infra.render.redis import ADMIN_USER, EXPORTER_USER
from backbone_infra.targets.local.secrets import StackSecrets
from backbone_infra.targets.local.stack import LocalStack

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
_ONCE = Retry(NoBackoff(), 0)  # redis-py retries even a refused AUTH by default


# -- helpers ------------------------------------------------------------------------------


def _secrets(stack: LocalStack) -> StackSecrets:
    return StackSecrets.load(stack.dir)


def _redis(stack: LocalStack, username: str | None, password: str | None) -> redis.Redis:
    doc = stack.document
    assert doc.redis is not None and doc.redis.host is not None
    return redis.Redis(
        host=doc.redis.host,
        port=doc.redis.port or 6379,
        username=username,
        password=password,
        retry=_ONCE,
        socket_timeout=5,
        # Every refusal below happens over the stack's verified TLS.
        **RedisConnectionSettings.from_section(doc.redis).tls_kwargs(),
    )


@pytest.fixture
def app_redis(local_stack: LocalStack) -> Iterator[redis.Redis]:
    doc = local_stack.document
    assert doc.redis is not None and doc.redis.password is not None
    client = _redis(local_stack, doc.redis.username, doc.redis.password.get_secret_value())
    yield client
    client.close()


def _kafka_config(stack: LocalStack, **override: Any) -> dict[str, Any]:
    k = stack.document.kafka
    assert k is not None and k.password is not None
    config: dict[str, Any] = {
        "bootstrap_servers": k.bootstrap_servers,
        "security_protocol": k.security_protocol,
        "sasl_mechanism": k.sasl_mechanism,
        "sasl_plain_username": k.username,
        "sasl_plain_password": k.password.get_secret_value(),
        "request_timeout_ms": 10000,
        **({"ssl_cafile": k.ssl_cafile, "ssl_check_hostname": True} if k.ssl_cafile else {}),
    }
    return {**config, **override}


def _pg(stack: LocalStack, **override: Any) -> psycopg.Connection:
    t = stack.document.timescale
    assert t is not None and t.password is not None
    host = t.hosts[0]
    kwargs: dict[str, Any] = {
        "host": host.host,
        "port": host.port,
        "dbname": t.dbname,
        "user": t.user,
        "password": t.password.get_secret_value(),
        "sslmode": t.sslmode,
        **({"sslrootcert": t.sslrootcert} if t.sslrootcert else {}),
        "connect_timeout": 5,
        "autocommit": True,
    }
    return psycopg.connect(**{**kwargs, **override})


# -- Redis --------------------------------------------------------------------------------


def test_redis_refuses_no_credentials_a_wrong_password_and_the_default_user(
    local_stack: LocalStack,
) -> None:
    doc = local_stack.document
    assert doc.redis is not None and doc.redis.password is not None
    # NOAUTH, or (redis-py's RESP3 handshake) "HELLO must be called ... authenticated".
    with pytest.raises(redis.AuthenticationError, match=r"(?i)auth"):
        _redis(local_stack, None, None).ping()
    with pytest.raises(redis.AuthenticationError, match="invalid username-password pair"):
        _redis(local_stack, doc.redis.username, "not-the-password").ping()
    # ``default`` is disabled: not even the application's own password opens it.
    with pytest.raises(redis.AuthenticationError, match="invalid username-password pair"):
        _redis(local_stack, "default", doc.redis.password.get_secret_value()).ping()


@pytest.mark.parametrize(
    "command",
    [
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("CONFIG", "SET", "maxmemory", "1mb"),
        ("ACL", "SETUSER", "intruder", "on", ">pw", "~*", "+@all"),
        ("SHUTDOWN", "NOSAVE"),
        ("SAVE",),
        ("KEYS", "*"),
        ("REPLICAOF", "127.0.0.1", "1"),
        ("SCRIPT", "FLUSH"),
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_the_application_user_cannot_administer_redis(
    app_redis: redis.Redis, command: tuple[str, ...]
) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        app_redis.execute_command(*command)


def test_the_application_user_touches_only_its_own_namespace(app_redis: redis.Redis) -> None:
    mine = f"backbone-sec-{uuid.uuid4().hex[:8]}:k"
    assert app_redis.set(mine, b"v", px=60_000)
    assert app_redis.get(mine) == b"v"
    assert app_redis.delete(mine) == 1
    for outside in ("other:k", "backbonex:k", "k"):
        with pytest.raises(redis.exceptions.NoPermissionError):
            app_redis.set(outside, b"v")
        with pytest.raises(redis.exceptions.NoPermissionError):
            app_redis.get(outside)


def test_the_cache_works_under_its_acl_including_the_namespace_flush(
    local_stack: LocalStack,
) -> None:
    """Every command the cache runs (its Lua scripts, SCAN + DEL of a degraded-mode
    re-attach) is within the application user's ACL."""
    settings = load_settings(local_stack.document)
    assert settings.redis is not None
    namespace = f"backbone-sec-{uuid.uuid4().hex[:8]}"
    with RedisCache(settings.redis, namespace=namespace) as cache:
        when = datetime(2024, 1, 2, tzinfo=UTC)
        got = cache.get_latest("EURUSD", "1m", lambda: _bar(when))
        assert cache.get_latest("EURUSD", "1m", lambda: None) == got  # a hit
        assert cache.on_new_bars([_bar(when)]) == 1  # the invalidation script
        cache.get_latest("EURUSD", "1m", lambda: _bar(when))
        assert cache.flush_namespace() >= 2  # entry, tag and LRU index
        assert cache.available and cache.stats().fallbacks == 0


def _bar(ts: datetime) -> Bar:
    return Bar(symbol="EURUSD", timeframe="1m", ts=ts, open=1.0, high=1.0, low=1.0, close=1.0,
               volume=1.0)  # fmt: skip


def test_the_exporter_user_reads_metrics_and_nothing_else(local_stack: LocalStack) -> None:
    client = _redis(local_stack, EXPORTER_USER, _secrets(local_stack).redis_exporter_password)
    try:
        assert "redis_version" in client.info("server")
        assert client.config_get("maxmemory")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.get("backbone:anything")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.config_set("maxmemory", "1mb")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.flushall()
    finally:
        client.close()


def test_redis_configs_hold_acl_passwords_hashed(local_stack: LocalStack) -> None:
    secrets = _secrets(local_stack)
    conf = (local_stack.dir / "redis" / "redis-1" / "redis.conf").read_text()
    for password in (secrets.redis_password, secrets.redis_exporter_password):
        assert password not in conf
    # Redis itself reports the hashed form it loaded.
    admin = _redis(local_stack, ADMIN_USER, secrets.redis_admin_password)
    try:
        rules = " ".join(str(r) for r in admin.acl_list())
    finally:
        admin.close()
    assert secrets.redis_password not in rules and "#" in rules


# -- Kafka --------------------------------------------------------------------------------


def test_kafka_refuses_no_credentials_and_a_wrong_password(local_stack: LocalStack) -> None:
    # kafka-python retries a failed bootstrap until its deadline, then gives up.
    plaintext = _kafka_config(local_stack, security_protocol="PLAINTEXT")
    for key in ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password"):
        plaintext.pop(key)
    with pytest.raises(kafka_errors.KafkaTimeoutError):
        KafkaAdminClient(**plaintext, bootstrap_timeout_ms=3000)
    wrong = _kafka_config(local_stack, sasl_plain_password="not-the-password")
    with pytest.raises(kafka_errors.KafkaTimeoutError):
        KafkaAdminClient(**wrong, bootstrap_timeout_ms=3000)


def test_the_application_principal_cannot_delete_or_create_topics(
    local_stack: LocalStack,
) -> None:
    k = local_stack.document.kafka
    assert k is not None
    topic = k.topic("daily_bars")
    admin = KafkaAdminClient(**_kafka_config(local_stack))
    try:
        with pytest.raises(kafka_errors.TopicAuthorizationFailedError):
            admin.delete_topics([topic])
        with pytest.raises(kafka_errors.TopicAuthorizationFailedError):
            admin.create_topics([NewTopic(f"intruder-{uuid.uuid4().hex[:6]}", 1, 1)])
        # Its own topics are still there and described to it.
        assert topic in admin.list_topics()
    finally:
        admin.close()


def test_the_kafka_monitoring_principal_describes_and_touches_no_record(
    local_stack: LocalStack,
) -> None:
    k = local_stack.document.kafka
    assert k is not None
    topic = k.topic("daily_bars")
    config = _kafka_config(
        local_stack,
        sasl_plain_username=local_stack.spec.kafka.monitor_username,
        sasl_plain_password=_secrets(local_stack).kafka_monitor_password,
    )
    admin = KafkaAdminClient(**config)
    try:
        assert topic in admin.list_topics()  # what the lag exporter needs ...
        admin.list_groups()
    finally:
        admin.close()
    consumer = KafkaConsumer(**config, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    try:
        assert consumer.end_offsets([tp])[tp] >= 0  # ... offsets, never a record
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        with pytest.raises(kafka_errors.TopicAuthorizationFailedError):
            for _ in range(20):
                consumer.poll(timeout_ms=500)
    finally:
        consumer.close()
    # Not idempotent: an idempotent producer is refused even earlier (InitProducerId
    # needs WRITE on some topic); this one reaches the topic's own check.
    producer = KafkaProducer(**config, max_block_ms=10_000, enable_idempotence=False, acks=1)
    try:
        with pytest.raises(kafka_errors.TopicAuthorizationFailedError):
            producer.send(topic, b"intruder").get(timeout=10)
    finally:
        producer.close(timeout=5)


# -- PostgreSQL ----------------------------------------------------------------------------


def test_postgres_refuses_no_password_and_a_wrong_one(local_stack: LocalStack) -> None:
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        _pg(local_stack, password=None, passfile=os.devnull)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _pg(local_stack, password="not-the-password")


def test_the_application_role_has_no_administrative_attribute(local_stack: LocalStack) -> None:
    with _pg(local_stack) as conn:
        row = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
            "FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        owner = conn.execute(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'bars'"
        ).fetchone()
        assert conn.execute("SELECT count(*) FROM bars").fetchone() is not None
    assert row == (False, False, False, False, False)
    assert owner is not None and owner[0] != local_stack.spec.postgres.user


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE ROLE intruder LOGIN SUPERUSER",
        "DROP TABLE bars",
        "TRUNCATE bars",
        "ALTER TABLE bars ADD COLUMN intruder int",
        "CREATE TABLE intruder (a int)",
        "CREATE DATABASE intruder",
    ],
    ids=lambda s: " ".join(s.split()[:2]),
)
def test_the_application_role_cannot_run_ddl(local_stack: LocalStack, statement: str) -> None:
    with _pg(local_stack) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)


def test_the_reader_role_selects_and_cannot_write(local_stack: LocalStack) -> None:
    secrets = _secrets(local_stack)
    reader = reader_role(local_stack.spec.postgres)
    with _pg(local_stack, user=reader, password=secrets.postgres_reader_password) as conn:
        assert conn.execute("SELECT count(*) FROM bars").fetchone() is not None
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM bars")


def test_the_monitor_role_reads_statistics_and_no_table(local_stack: LocalStack) -> None:
    secrets = _secrets(local_stack)
    monitor = monitor_role(local_stack.spec.postgres)
    with _pg(
        local_stack, user=monitor, password=secrets.postgres_monitor_password, dbname="postgres"
    ) as conn:
        # pg_monitor: other sessions' activity is visible (query text included).
        assert conn.execute("SELECT count(*) FROM pg_stat_activity").fetchone() is not None
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        _pg(local_stack, user=monitor, password=secrets.postgres_monitor_password)


# -- one principal per job: each is refused one thing outside its job -------------------------


def _login(stack: LocalStack, job: Job, service: str) -> tuple[str, str]:
    """``job``'s user and password for ``service``, as its own document hands them."""
    section: Any = getattr(job_document(stack.document, job), service)
    assert section is not None and section.password is not None, (job, service)
    user = section.user if service == "timescale" else section.username
    return user, section.password.get_secret_value()


def _kafka_as(stack: LocalStack, job: Job, **override: Any) -> dict[str, Any]:
    user, password = _login(stack, job, "kafka")
    return _kafka_config(stack, sasl_plain_username=user, sasl_plain_password=password, **override)


def test_the_kafka_writer_produces_and_cannot_consume_or_commit(local_stack: LocalStack) -> None:
    k = local_stack.document.kafka
    assert k is not None
    topic = k.topic("daily_bars")
    producer = KafkaProducer(**_kafka_as(local_stack, "writer"), max_block_ms=10_000)
    try:  # idempotent (kafka-python's default): WRITE on the topic is enough
        assert producer.send(topic, b"writer-ok").get(timeout=10).offset >= 0
    finally:
        producer.close(timeout=5)
    tp = TopicPartition(topic, 0)
    consumer = KafkaConsumer(**_kafka_as(local_stack, "writer"), enable_auto_commit=False)
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        with pytest.raises(kafka_errors.TopicAuthorizationFailedError):
            for _ in range(20):
                consumer.poll(timeout_ms=500)
    finally:
        consumer.close()
    group = KafkaConsumer(
        **_kafka_as(local_stack, "writer"),
        group_id=f"backbone-sec-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
    )
    try:
        with pytest.raises(kafka_errors.GroupAuthorizationFailedError):
            group.commit({tp: OffsetAndMetadata(0, "", -1)})
    finally:
        group.close()


def test_the_kafka_consumer_commits_its_group_and_cannot_produce_bars(
    local_stack: LocalStack,
) -> None:
    k = local_stack.document.kafka
    assert k is not None
    tp = TopicPartition(k.topic("daily_bars"), 0)
    consumer = KafkaConsumer(
        **_kafka_as(local_stack, "consumer"),
        group_id=f"backbone-sec-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
    )
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        consumer.poll(timeout_ms=1000)
        consumer.commit({tp: OffsetAndMetadata(0, "", -1)})
        assert consumer.committed(tp) == 0
    finally:
        consumer.close()
    producer = KafkaProducer(**_kafka_as(local_stack, "consumer"), max_block_ms=10_000)
    try:
        # Its dead letters go out; a bar does not.
        assert producer.send(k.topic("dead_letter"), b"dead").get(timeout=10).offset >= 0
        with pytest.raises(kafka_errors.TopicAuthorizationFailedError):
            producer.send(tp.topic, b"intruder").get(timeout=10)
    finally:
        producer.close(timeout=5)


def test_kafka_principals_may_use_only_the_stacks_consumer_groups(local_stack: LocalStack) -> None:
    k = local_stack.document.kafka
    assert k is not None
    tp = TopicPartition(k.topic("daily_bars"), 0)
    # the consumer job's principal, and the application's
    for config in (_kafka_as(local_stack, "consumer"), _kafka_config(local_stack)):
        outsider = KafkaConsumer(
            **config, group_id=f"other-app-{uuid.uuid4().hex[:6]}", enable_auto_commit=False
        )
        try:  # another application's group on the same cluster: refused
            with pytest.raises(kafka_errors.GroupAuthorizationFailedError):
                outsider.commit({tp: OffsetAndMetadata(0, "", -1)})
        finally:
            outsider.close()
    # The client names the rule before the broker is asked.
    settings = load_settings(local_stack.document)
    assert settings.kafka is not None
    with pytest.raises(ConnectionsError, match=f"does not start with '{k.group_prefix}'"):
        settings.kafka.check_group("other-app")
    assert settings.kafka.check_group(f"{k.group_prefix}x") == f"{k.group_prefix}x"


def test_the_kafka_job_principals_cannot_delete_topics(local_stack: LocalStack) -> None:
    k = local_stack.document.kafka
    assert k is not None
    for job in ("writer", "consumer"):
        admin = KafkaAdminClient(**_kafka_as(local_stack, job))
        try:
            with pytest.raises(kafka_errors.TopicAuthorizationFailedError):
                admin.delete_topics([k.topic("daily_bars")])
        finally:
            admin.close()


def test_the_redis_reader_reads_and_cannot_write_an_entry(local_stack: LocalStack) -> None:
    ns = local_stack.spec.redis.namespace
    key = f"{ns}:sec-{uuid.uuid4().hex[:8]}"
    consumer = _redis(local_stack, *_login(local_stack, "consumer", "redis"))
    reader = _redis(local_stack, *_login(local_stack, "reader", "redis"))
    try:
        assert consumer.set(key, b"v", px=60_000)  # the consumer fills ...
        assert reader.get(key) == b"v"  # ... the reader reads,
        assert reader.zadd(f"{ns}:lru", {key: 1}, xx=True) == 0  # touches the LRU index,
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.set(key, b"intruder")  # and writes no entry
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.delete(key)
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.evalsha("0" * 40, 0)
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.get("elsewhere:key")
        with pytest.raises(redis.exceptions.NoPermissionError):
            consumer.flushall()
        with pytest.raises(redis.exceptions.NoPermissionError):
            consumer.get("elsewhere:key")
    finally:
        consumer.delete(key)
        consumer.close()
        reader.close()


def test_the_cache_serves_a_reader_from_its_document_without_filling(
    local_stack: LocalStack,
) -> None:
    """The cache client, given only the reader's document, reads; its refused fill
    falls back (the entry stays unwritten). Given the consumer's, it fills."""
    namespace = f"{local_stack.spec.redis.namespace}-sec-{uuid.uuid4().hex[:8]}"
    when = datetime(2024, 1, 2, tzinfo=UTC)
    docs = {job: job_document(local_stack.document, job) for job in ("reader", "consumer")}
    reader_settings = load_settings(docs["reader"]).redis
    consumer_settings = load_settings(docs["consumer"]).redis
    assert reader_settings is not None and consumer_settings is not None
    with RedisCache(reader_settings, namespace=namespace) as cache:
        assert cache.get_latest("EURUSD", "1m", lambda: _bar(when)) == _bar(when)
        assert cache.stats().hits == 0
    with RedisCache(consumer_settings, namespace=namespace) as cache:
        cache.get_latest("EURUSD", "1m", lambda: _bar(when))  # fills
    with RedisCache(reader_settings, namespace=namespace) as cache:
        assert cache.get_latest("EURUSD", "1m", lambda: None) == _bar(when)
        assert cache.stats().hits == 1
    with RedisCache(consumer_settings, namespace=namespace) as cache:
        assert cache.flush_namespace() >= 2


def test_the_monitor_job_reads_no_data(local_stack: LocalStack) -> None:
    ns = local_stack.spec.redis.namespace
    exporter = _redis(local_stack, *_login(local_stack, "monitor", "redis"))
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            exporter.get(f"{ns}:anything")
    finally:
        exporter.close()
    user, password = _login(local_stack, "monitor", "timescale")
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        _pg(local_stack, user=user, password=password)
    k = local_stack.document.kafka
    assert k is not None
    tp = TopicPartition(k.topic("daily_bars"), 0)
    consumer = KafkaConsumer(**_kafka_as(local_stack, "monitor"), enable_auto_commit=False)
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        with pytest.raises(kafka_errors.TopicAuthorizationFailedError):
            for _ in range(20):
                consumer.poll(timeout_ms=500)
    finally:
        consumer.close()


@pytest.mark.parametrize("job", ["writer", "consumer"])
def test_the_postgres_writer_and_consumer_write_bars_and_run_no_ddl_or_delete(
    local_stack: LocalStack, job: Job
) -> None:
    user, password = _login(local_stack, job, "timescale")
    symbol = f"SEC{uuid.uuid4().hex[:6].upper()}"
    with _pg(local_stack, user=user, password=password) as conn:
        # Rolled back: the session's shared stack keeps its bars as the other tests left them.
        with conn.transaction(force_rollback=True):
            conn.execute(
                "INSERT INTO bars (symbol, timeframe, ts, open, high, low, close, volume, source) "
                "VALUES (%s, '1m', now(), 1, 1, 1, 1, 1, 'security-test')",
                (symbol,),
            )
            row = conn.execute("SELECT count(*) FROM bars WHERE symbol = %s", (symbol,)).fetchone()
            assert row == (1,)
        for statement in ("DELETE FROM bars", "TRUNCATE bars", "DROP TABLE bars",
                          "CREATE TABLE intruder (x int)"):  # fmt: skip
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_the_postgres_reader_job_cannot_insert(local_stack: LocalStack) -> None:
    user, password = _login(local_stack, "reader", "timescale")
    with _pg(local_stack, user=user, password=password) as conn:
        assert conn.execute("SELECT count(*) FROM bars").fetchone() is not None
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO bars (symbol, timeframe, ts, open, high, low, close, volume, source) "
                "VALUES ('X', '1m', now(), 1, 1, 1, 1, 1, 'intruder')"
            )


# -- listeners --------------------------------------------------------------------------------


def _ipv4(address: str) -> str:
    """``::ffff:127.0.0.1`` (a JVM's dual-stack socket bound to 127.0.0.1) as ``127.0.0.1``."""
    ip = ipaddress.ip_address(address)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return str(mapped or ip)


def _listening(pid: int) -> set[tuple[str, int]]:
    """Listening TCP addresses of ``pid`` and its children (a wrapper that
    drops privileges runs the server as its child)."""
    found: set[tuple[str, int]] = set()
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for proc in procs:
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        found |= {
            (_ipv4(c.laddr.ip), c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN
        }
    return found


def test_every_stack_process_listens_on_loopback_only(local_stack: LocalStack) -> None:
    records = [r for s in local_stack.services.values() for r in s.records if r.pid]
    assert records, "the stack has no running process to check"
    for rec in records:
        assert rec.pid is not None
        sockets = _listening(rec.pid)
        # The node listens where the stack put it (so this check sees its sockets;
        # some records also carry a port for another process, e.g. Prometheus's
        # scrape target of the application's metrics) ...
        assert {p for _, p in sockets} & set(rec.ports.values()), (rec.name, sockets)
        # ... and nothing listens anywhere but loopback.
        assert {ip for ip, _ in sockets} <= {"127.0.0.1"}, (rec.name, sockets)


# -- secrets hygiene ----------------------------------------------------------------------------

#: The files of a local stack that must hold a credential, as globs under the
#: stack directory, each with why.
SECRET_FILES = {
    "secrets.json": "every generated password (the stack's key store)",
    "outputs.json": "the application's credentials (the clients' document)",
    "redis/*/redis.conf": "masterauth: the admin password replicas present",
    "redis/*/sentinel.conf": "requirepass and auth-pass (Sentinel has no hashed form)",
    "kafka-*/server.properties": "the JAAS logins of the broker listeners",
    "monitoring/*.redis-password.json": "redis_exporter's password file",
    "monitoring/*.pg-password": "postgres_exporter's password file",
    "monitoring/lag-exporter.yaml": "the lag exporter's Kafka login",
    "postgres/replication.pgpass": "pg_basebackup's passfile (ha)",
}
#: Directories that hold a secret file: owner only.
PRIVATE_DIRS = ("redis", "redis/*", "kafka-*", "monitoring", "postgres")
_MAX_SCAN_BYTES = 64 * 1024 * 1024


def _designated(stack_dir: Path) -> set[Path]:
    return {p for pattern in SECRET_FILES for p in stack_dir.glob(pattern)}


def _is_private_outputs_document(path: Path, data: bytes) -> bool:
    """A copy of an outputs document (``write_document``, e.g. a test handing one
    to a child process) is a secret file by design, wherever it lies: allowed
    only when owner-only (0600)."""
    return (
        data.lstrip().startswith(b"{")
        and b'"schema": "backbone.connections/v1"' in data
        and stat.S_IMODE(path.stat().st_mode) == 0o600
    )


def _files_under(root: Path) -> Iterator[Path]:
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                yield path


def test_secret_files_are_0600_and_their_directories_0700(local_stack: LocalStack) -> None:
    designated = _designated(local_stack.dir)
    assert local_stack.dir / "secrets.json" in designated
    for path in designated:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    dirs = [d for pattern in PRIVATE_DIRS for d in local_stack.dir.glob(pattern) if d.is_dir()]
    assert dirs
    for directory in dirs:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    # The stack directory itself: the PostgreSQL service user must traverse it
    # (0711), so nobody else may list or write it.
    assert stat.S_IMODE(local_stack.dir.stat().st_mode) & 0o066 == 0


def test_no_generated_password_appears_outside_the_designated_files(
    local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    passwords = {name: value.encode() for name, value in _secrets(local_stack).generated().items()}
    designated = _designated(local_stack.dir)
    # The stack (configs, data directories, logs, state) and this run's reports.
    roots = [local_stack.dir, tmp_path_factory.getbasetemp(), REPO / "docs" / "status"]
    hits: list[str] = []
    scanned = 0
    for root in roots:
        for path in _files_under(root):
            if path in designated:
                continue
            try:
                if path.stat().st_size > _MAX_SCAN_BYTES:
                    continue
                data = path.read_bytes()
            except (FileNotFoundError, PermissionError):
                continue  # removed while scanning (a rotated log, a WAL segment)
            if _is_private_outputs_document(path, data):
                continue
            scanned += 1
            hits += [f"{path}: {name}" for name, value in passwords.items() if value in data]
    assert scanned > 10, "the scan found almost no files; it would prove nothing"
    assert hits == [], "generated passwords found outside the designated secret files"


def test_status_output_and_reprs_name_no_secret(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an operator sees (``harness status``, text and JSON) and what a log line
    would print (``repr`` of the secrets, the document and the settings)."""
    from typer.testing import CliRunner

    from backbone_harness.cli import app

    monkeypatch.setenv("HARNESS_STACKS_DIR", str(local_stack.dir.parent))
    passwords = _secrets(local_stack).generated().values()
    runner = CliRunner()
    shown = []
    for args in (["status", "--name", local_stack.name], ["status", "--name",
                 local_stack.name, "--json"]):  # fmt: skip
        done = runner.invoke(app, args)
        assert done.exit_code == 0, done.output
        shown.append(done.output)
    doc = local_stack.document
    shown += [repr(_secrets(local_stack)), repr(doc), str(doc), repr(load_settings(doc))]
    assert local_stack.name in shown[0]
    leaked = [i for i, text in enumerate(shown) for pw in passwords if pw in text]
    assert leaked == [], "a generated password appears in status output or a repr"
