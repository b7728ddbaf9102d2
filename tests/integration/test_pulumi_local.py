"""A real ``pulumi up`` / ``pulumi destroy`` of the local target.

The CLI is the one ``scripts/build-pulumi.sh`` built; the program is the
Automation API inline program of :mod:`backbone_harness.pulumi_stacks`, whose dynamic
provider calls the local provisioner. These tests skip only when the CLI is
not there, with the reason the build recorded.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from backbone.connections import ConnectionsDocument, dump_document, parse_document
from backbone_harness.errors import USER_ERRORS, StackExistsError
from backbone_harness.pulumi_cli import (
    PulumiCLIError,
    cli_dir,
    marked_processes,
    pulumi_bin,
    pulumi_env,
)
from backbone_harness.pulumi_stacks import down_via_pulumi, pulumi_stack_exists, up_via_pulumi
from backbone_infra.spec import build_spec
from backbone_infra.targets.local.process import ProcessNode, ProcessRecord
from backbone_infra.targets.local.state import load_state, stack_dir

pytestmark = [pytest.mark.pulumi_cli, pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def _cli() -> None:
    try:
        pulumi_bin()
    except PulumiCLIError as exc:
        pytest.skip(str(exc))
    try:
        import backbone_infra.targets.local.provisioner  # noqa: F401
    except ImportError as exc:  # only while the provisioner lands
        pytest.skip(f"the local provisioner is not importable: {exc}")


def _records(name: str, root: Path) -> list[ProcessRecord]:
    state = load_state(stack_dir(name, root))
    return [r for recs in state.records.values() for r in recs]


def _alive(records: list[ProcessRecord]) -> list[str]:
    return [r.name for r in records if ProcessNode(r).running()]


def _services_answer(doc: ConnectionsDocument) -> None:
    """Redis PING, Kafka metadata and a PostgreSQL SELECT through the document."""
    import psycopg
    import redis
    from kafka import KafkaAdminClient

    from backbone.settings import RedisConnectionSettings

    assert doc.redis is not None and doc.kafka is not None and doc.timescale is not None
    r = redis.Redis(
        host=doc.redis.host,
        port=doc.redis.port,
        username=doc.redis.username,
        password=doc.redis.password.get_secret_value(),
        socket_timeout=5,
        # TLS by default: the stack's CA, host names verified.
        **RedisConnectionSettings.from_section(doc.redis).tls_kwargs(),
    )
    assert r.ping() is True
    r.close()

    admin = KafkaAdminClient(**_kafka_kwargs(doc))
    try:
        topics = set(admin.list_topics())
    finally:
        admin.close()
    assert {t.name for t in doc.kafka.topics.values()} <= topics

    with psycopg.connect(
        doc.timescale.conninfo(), password=doc.timescale.password.get_secret_value()
    ) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def _kafka_kwargs(doc: ConnectionsDocument) -> dict[str, Any]:
    k = doc.kafka
    assert k is not None
    kwargs: dict[str, Any] = {
        "bootstrap_servers": k.bootstrap_servers,
        "security_protocol": k.security_protocol,
        "ssl_cafile": k.ssl_cafile,
        "request_timeout_ms": 30_000,
    }
    if k.security_protocol.startswith("SASL"):
        assert k.password is not None
        kwargs.update(
            sasl_mechanism=k.sasl_mechanism,
            sasl_plain_username=k.username,
            sasl_plain_password=k.password.get_secret_value(),
        )
    return kwargs


def _ingest_through_backbone(doc: ConnectionsDocument, tmp_path: Path) -> None:
    """A few bars through the public runtime: produced, consumed, stored, read back."""
    from backbone.bars import Bar
    from backbone.connections import write_document
    from backbone.runtime import Backbone

    outputs = write_document(doc, tmp_path / "outputs.json")
    start = datetime(2024, 1, 1, tzinfo=UTC)
    bars = [
        Bar("EURUSD", "1d", start + timedelta(days=i), 1.1, 1.2, 1.0, 1.15, 1000.0 + i)
        for i in range(5)
    ]
    with Backbone.open(
        "institutional", outputs=outputs, group_id="backbone-pulumi-local-test"
    ) as bb:
        result = bb.ingest(bars)
        assert result.reconciles and result.stored == len(bars)
        assert bb.read("EURUSD", "1d", start, start + timedelta(days=5)) == bars


def _stack_output(name: str, root: Path) -> dict[str, Any]:
    """``pulumi stack output --json connections --show-secrets``, as a user runs it."""
    argv = ["stack", "output", "--json", "connections", "--show-secrets", "--stack", name]
    out = subprocess.run(
        [str(pulumi_bin()), *argv],
        cwd=root / "pulumi-backend" / "workspaces" / name,
        env={**os.environ, **pulumi_env(name, root)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_pulumi_up_brings_up_a_stack_that_ingests_and_destroy_stops_every_process(
    stacks_root: Path, tmp_path: Path
) -> None:
    root = stacks_root
    began = time.monotonic()
    name, doc = up_via_pulumi(build_spec("unused", size="minimal"), root=root)
    up_seconds = time.monotonic() - began
    try:
        assert name.startswith("ci-")
        assert doc.stack == name and doc.environment == "local"
        records = _records(name, root)
        assert records and not set(r.name for r in records) - set(_alive(records))

        _services_answer(doc)
        _ingest_through_backbone(doc, tmp_path)

        shown = parse_document(_stack_output(name, root))
        assert dump_document(shown, reveal_secrets=True) == dump_document(doc, reveal_secrets=True)

        with pytest.raises(StackExistsError, match=name):
            up_via_pulumi(build_spec(name), name=name, root=root)
    finally:
        began = time.monotonic()
        down_via_pulumi(name, root=root)
        down_seconds = time.monotonic() - began
    assert _alive(records) == []
    assert not pulumi_stack_exists(name, root=root)
    print(f"\npulumi up {up_seconds:.1f}s, destroy {down_seconds:.1f}s (stack {name})")


_UP_SCRIPT = """
import sys
from pathlib import Path
from backbone_harness.pulumi_stacks import up_via_pulumi
from backbone_infra.spec import build_spec
up_via_pulumi(build_spec(sys.argv[1]), name=sys.argv[1], root=Path(sys.argv[2]))
"""


def test_down_cleans_up_after_an_up_that_was_killed_midway(stacks_root: Path) -> None:
    root = stacks_root
    name = f"ci-kill{os.getpid() % 10000}"
    proc = subprocess.Popen(
        [sys.executable, "-c", _UP_SCRIPT, name, str(root)],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    records: list[ProcessRecord] = []
    try:
        # Kill `up` (the driver, the CLI and the provider) as soon as the first
        # service process of the stack is running.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                records = [r for r in _records(name, root) if r.pid]
            except (FileNotFoundError, ValueError, KeyError):
                records = []
            if _alive(records):
                break
            time.sleep(0.2)
        assert _alive(records), "the stack never started a process before the deadline"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    records = _records(name, root)  # everything started by the time of the kill
    down_via_pulumi(name, root=root)
    assert _alive(records) == []
    # The dynamic provider ran in a session of its own and outlived the kill.
    assert marked_processes(name) == [], "a process of the interrupted run survived down"
    assert not pulumi_stack_exists(name, root=root)
    assert not (root / "pulumi-backend" / "workspaces" / name).exists()


def test_the_name_of_a_running_local_stack_is_refused_before_pulumi_runs(
    local_stack: Any, stacks_root: Path
) -> None:
    name = local_stack.name
    with pytest.raises(StackExistsError, match="--via pulumi"):
        up_via_pulumi(build_spec(name), name=name, root=stacks_root)
    assert not pulumi_stack_exists(name, root=stacks_root)
    assert _alive(_records(name, stacks_root)) != []


def test_down_of_an_unknown_stack_says_so(stacks_root: Path) -> None:
    with pytest.raises(USER_ERRORS, match="no stack named 'ci-nothing'"):
        down_via_pulumi("ci-nothing", root=stacks_root)


def test_pulumi_up_dash_s_at_the_command_line_runs_the_project_program(
    stacks_root: Path, tmp_path: Path
) -> None:
    """`pulumi up -s NAME` as a user types it: Pulumi.yaml → backbone_infra/ through the
    Python language host, then `stack output`, then `destroy`."""
    host = cli_dir() / "bin" / "pulumi-language-python"
    if not host.exists():
        info = cli_dir() / "BUILD_INFO"
        pytest.skip(f"no Python language host was built ({info}: language_python=...)")
    project = tmp_path / "project"
    project.mkdir()
    settings = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    # The dynamic-provider launcher resolves a relative `virtualenv` against the
    # program directory (backbone_infra/), not the project root: give it the running one.
    settings["runtime"]["options"]["virtualenv"] = sys.prefix
    (project / "Pulumi.yaml").write_text(yaml.safe_dump(settings))
    (project / "backbone_infra").symlink_to(REPO / "backbone_infra")
    name = f"cli-{secrets.token_hex(3)}"
    (project / f"Pulumi.{name}.yaml").write_text("config:\n  market-data-backbone:target: local\n")
    env = {**os.environ, **pulumi_env(name, stacks_root), "HARNESS_STACKS_DIR": str(stacks_root)}

    def pulumi(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(pulumi_bin()), "--non-interactive", *args],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    assert pulumi("stack", "init", name, "--secrets-provider", "passphrase").returncode == 0
    records: list[ProcessRecord] = []
    try:
        up = pulumi("up", "-s", name, "--yes", "--skip-preview")
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        records = _records(name, stacks_root)
        assert records and _alive(records) == [r.name for r in records]
        shown = pulumi("stack", "output", "--json", "connections", "--show-secrets", "-s", name)
        doc = parse_document(shown.stdout)
        assert doc.stack == name
        _services_answer(doc)
    finally:
        destroy = pulumi("destroy", "-s", name, "--yes", "--skip-preview")
        if destroy.returncode != 0:
            from backbone_infra.targets.local import provisioner

            provisioner.down(name, root=stacks_root)
        pulumi("stack", "rm", name, "--yes", "--force")
    assert destroy.returncode == 0, destroy.stdout[-2000:] + destroy.stderr[-2000:]
    assert _alive(records) == []
