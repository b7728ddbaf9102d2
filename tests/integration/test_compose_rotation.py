"""Rotating credentials on a compose stack (containers on podman), as on local processes.

One minimal compose stack for the module. A ``Backbone`` opened on its outputs
document ingests (produce, consume, store) while the rotation runs beside it;
afterwards each service refuses the old passwords — Redis with
``AuthenticationError``, PostgreSQL with ``password authentication failed``,
Kafka's broker logging a failed SCRAM login (kafka-python only times out its
bootstrap) — and accepts the new document's. Containers restarted after a
rotation come back with the new passwords (the mounted ``redis.conf`` holds
what the running server had), no rotated password is left in any file of the
stack, and the secrets stay 0600; the exporters' logins (``monitor``) rotate
with them (a compose stack runs no exporter). Then the ``credential-rotation``
drill runs on the same stack. Skips with podman's own reason where no engine can run.
"""

from __future__ import annotations

import json
import secrets
import shutil
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from kafka import KafkaAdminClient
from kafka import errors as kafka_errors
from redis.backoff import NoBackoff
from redis.retry import Retry
from typer.testing import CliRunner, Result

from backbone.bars import Bar
from backbone.connections import ConnectionsDocument
from backbone.runtime import Backbone
from backbone.settings import KafkaConnectionSettings, RedisConnectionSettings
from backbone.stream.producer import kafka_client_config
from backbone_harness.cli import app as harness_app
from backbone_harness.containers.engine import no_engine_reason, podman
from backbone_harness.containers.rotation import REDIS_CONF, mounted_source
from backbone_harness.containers.stack import ContainerStack
from backbone_harness.drills.credential_rotation import refused_with_old_passwords, works_with
from backbone_infra.render.postgres import SUPERUSER
from backbone_infra.render.redis import password_hash
from backbone_infra.rotation import CLIENTS, RotationResult, rotate_credentials
from backbone_infra.targets.local.secrets import StackSecrets
from backbone_infra.targets.local.state import stacks_root

_REASON = no_engine_reason()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
]

#: What the broker logs for each refused SCRAM login.
SCRAM_REFUSED = "invalid credentials with SASL mechanism"


def _harness(*args: str) -> Result:
    return CliRunner().invoke(harness_app, list(args))


@pytest.fixture(scope="module")
def stack() -> Iterator[ContainerStack]:
    name = f"rotation-{secrets.token_hex(3)}"
    try:
        done = _harness("up", "--env", "compose", "--size", "minimal", "--name", name)
        assert done.exit_code == 0, done.output
        yield ContainerStack(name)
    finally:
        _harness("down", "--name", name)
        left = podman(
            "ps", "-a", "--filter", f"label=backbone.stack={name}", "--format", "{{.Names}}"
        )
        assert left.stdout.split() == [], "containers outlived `harness down`"
        shutil.rmtree(stacks_root() / name, ignore_errors=True)


def _bars(symbol: str, day: int, n: int) -> list[Bar]:
    start = datetime(2024, 8, day, tzinfo=UTC)
    return [
        Bar(symbol, "1m", start + timedelta(minutes=i), 10.0, 11.0 + i, 9.0, 10.5, 100.0)
        for i in range(n)
    ]


def _stored(stack: ContainerStack, symbol: str) -> list[datetime]:
    doc, admin = stack.document, stack.secrets
    assert doc.timescale is not None
    with psycopg.connect(
        doc.timescale.conninfo(), user=SUPERUSER, password=admin.postgres_superuser_password
    ) as pg:
        rows = pg.execute(
            "SELECT ts FROM bars WHERE symbol = %s AND timeframe = '1m' ORDER BY ts", (symbol,)
        ).fetchall()
    return [r[0].astimezone(UTC) for r in rows]


def _broker_refusals(stack: ContainerStack) -> int:
    done = podman("logs", stack.state.nodes["kafka-1"], check=False)
    return (done.stdout + done.stderr).count(SCRAM_REFUSED)


def _check_old_passwords_refused(stack: ContainerStack, old: ConnectionsDocument) -> None:
    """Each service turns a new client with ``old``'s password away, and says how."""
    doc = stack.document
    assert doc.redis and doc.kafka and doc.timescale
    assert old.redis and old.redis.password and old.kafka and old.kafka.password
    assert old.timescale and old.timescale.password
    assert doc.redis.host is not None and doc.redis.port is not None
    settings = RedisConnectionSettings.from_section(doc.redis)
    kwargs = {**settings.client_kwargs(), "retry": Retry(NoBackoff(), 0)}
    kwargs["password"] = old.redis.password.get_secret_value()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=doc.redis.host, port=doc.redis.port, **kwargs).ping()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            doc.timescale.conninfo(),
            password=old.timescale.password.get_secret_value(),
            connect_timeout=5,
        )
    section = doc.kafka.model_copy(update={"password": old.kafka.password})
    config = kafka_client_config(KafkaConnectionSettings.from_section(section), client_id="old")
    before = _broker_refusals(stack)
    with pytest.raises(kafka_errors.KafkaTimeoutError):
        KafkaAdminClient(**config, bootstrap_timeout_ms=3000)
    assert _broker_refusals(stack) > before, "the broker logged no refused SCRAM login"


def test_a_running_backbone_ingests_through_the_rotation(stack: ContainerStack) -> None:
    old_doc = stack.document
    symbol = f"CRB{secrets.token_hex(3).upper()}"
    sent: list[Bar] = []
    done: dict[str, Any] = {}
    with Backbone.open(
        tier="institutional",
        outputs=stack.outputs_path,
        group_id=f"backbone-compose-rotation-{symbol.lower()}",
        consumer_start="latest",
    ) as bb:
        first = _bars(symbol, 1, 60)
        assert bb.ingest(first).reconciles
        sent += first

        def rotate() -> None:
            # Every login the runtime holds: the application's and the jobs'
            # (the producer logs in as the writer, the rest as the consumer).
            done["result"] = rotate_credentials(stack, CLIENTS, grace_s=1.0)

        rotator = threading.Thread(target=rotate)
        rotator.start()
        day = 2
        while rotator.is_alive():  # ingest goes on while the services switch
            batch = _bars(symbol, day, 20)
            report = bb.ingest(batch)
            assert report.stored == len(batch) and report.duplicates == 0, report
            sent += batch
            day += 1
        rotator.join()
        assert isinstance(done.get("result"), RotationResult), "the rotation failed"
        assert day > 2, "nothing was ingested during the rotation"
        # Kafka's clients read their password when built: the reload takes the new one.
        assert bb.reload_credentials() is True
        last = _bars(symbol, 28, 40)
        report = bb.ingest(last)
        assert report.reconciles and report.duplicates == 0, report
        sent += last

    assert _stored(stack, symbol) == [b.ts for b in sent]  # each bar once
    assert works_with(stack.document) == []
    _check_old_passwords_refused(stack, old_doc)


def test_restarted_containers_come_back_with_the_new_passwords(stack: ContainerStack) -> None:
    old_doc, old = stack.document, stack.secrets
    done = _harness(
        "rotate-credentials", "--name", stack.name, "-p", "application", "-p", "reader",
        "-p", "monitor", "--grace", "0", "--json",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["principals"] == ["redis", "kafka", "postgres", "reader", "monitor"]
    new = stack.secrets
    changed = {f for f, v in new.generated().items() if old.generated()[f] != v}
    assert changed == {
        "redis_password", "kafka_password", "postgres_password",
        "redis_reader_password", "postgres_reader_password",
        "redis_exporter_password", "kafka_monitor_password", "postgres_monitor_password",
    }  # fmt: skip
    assert not any(pw in done.output for pw in new.generated().values())
    # The running server's users are in the file its container mounts.
    conf = mounted_source(stack.state.nodes["redis-1"], REDIS_CONF).read_text()
    for field in ("redis_password", "redis_reader_password", "redis_exporter_password"):
        assert password_hash(getattr(new, field))[1:] in conf, field
        assert password_hash(getattr(old, field))[1:] not in conf, field

    with ThreadPoolExecutor(3) as pool:  # each waits until its node answers (as the admins)
        list(pool.map(stack.restart_node, ("redis-1", "kafka-1", "postgres-1")))

    assert works_with(stack.document) == []
    assert refused_with_old_passwords(stack.document, old_doc) == []
    _check_old_passwords_refused(stack, old_doc)
    _check_files(stack, old, new)


def _check_files(stack: ContainerStack, old: StackSecrets, new: StackSecrets) -> None:
    """Secrets 0600; mounted files as ``up`` made them; no rotated password left anywhere."""
    for path in (stack.outputs_path, stack.dir / "secrets.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    files = [p for p in (stack.dir / "files").rglob("*") if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o444 for p in files)
    assert all(stat.S_IMODE(p.parent.stat().st_mode) == 0o700 for p in files)
    gone = [v for f, v in old.generated().items() if new.generated()[f] != v]
    every = [p for p in stack.dir.rglob("*") if p.is_file()]
    assert [str(p) for p in every if any(pw in p.read_text(errors="replace") for pw in gone)] == []


def test_the_rotation_drill_runs_on_compose(stack: ContainerStack, tmp_path: Path) -> None:
    done = _harness(
        "drill", "run", "credential-rotation", "--name", stack.name, "--hold", "3",
        "--out", str(tmp_path), "--json",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    (report,) = json.loads(done.stdout)["reports"]
    assert report["applicable"] is True and report["environment"] == "compose"
    assert report["lost_acknowledged"] == 0, report["lost_examples"]
    assert report["duplicates"] == 0
    assert report["acknowledged"] >= 200
    assert report["passed"] is True, report["reason"]
