"""What ships is what is tested: every service's config files, rendered for the
local, Docker and Kubernetes targets, are the same text except for the keys
``docs/environments.md`` lists as intended differences.

The local files come from the local services' own rendering methods (what
``prepare`` writes), the container files from the Pulumi renderings under
mocks; all three get the same spec and the same passwords, so any other
difference is a divergence.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi_rendering import Rendering, Renderings, file_named

from backbone_harness.containers import configs as compose_configs
from backbone_infra.render.kafka import KafkaNodePorts
from backbone_infra.render.patroni import dcs_settings
from backbone_infra.render.redis import password_hash
from backbone_infra.spec import StackSpec
from backbone_infra.targets.local.etcd import LocalEtcd
from backbone_infra.targets.local.kafka import LocalKafka
from backbone_infra.targets.local.ports import PortAllocator
from backbone_infra.targets.local.postgres import LocalPostgres
from backbone_infra.targets.local.redis import LocalRedis
from backbone_infra.targets.local.secrets import StackSecrets

DOC = Path(__file__).resolve().parents[2] / "docs" / "environments.md"
CONTAINER_IDS = ("docker-institutional-ha", "kubernetes-institutional-ha")
#: Plain PostgreSQL (no Patroni) is the ``minimal`` size's: its files are
#: compared from these renderings.
PLAIN_IDS = {
    "docker": "docker-institutional-minimal",
    "kubernetes": "kubernetes-institutional-minimal",
}

Parsed = dict[str, str]


def allowed_differences() -> set[tuple[str, str]]:
    """``(file, key)`` pairs of the intended-differences table."""
    text = DOC.read_text()
    section = text.split("## Intended differences between environments", 1)[1]
    table = section.split("\n\n", 3)[2]  # heading, intro paragraph, then the table
    allowed: set[tuple[str, str]] = set()
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        allowed |= {(cells[1], key) for key in re.findall(r"`([^`]+)`", cells[2])}
    return allowed


# -- parsing, one function per file syntax ---------------------------------------


def redis_directives(text: str) -> Parsed:
    out: Parsed = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        words = line.split()
        # Repeated directives are told apart by their subject.
        width = {"user": 2, "sentinel": 2}.get(words[0], 1)
        out[" ".join(words[:width])] = " ".join(words[width:])
    return out


def properties(text: str) -> Parsed:
    lines = (ln for ln in text.splitlines() if ln and not ln.startswith("#"))
    return dict(ln.split("=", 1) for ln in lines)


def pg_settings(text: str) -> Parsed:
    return {k.strip(): v.strip() for k, _, v in (ln.partition("=") for ln in text.splitlines())}


def hba(text: str) -> Parsed:
    rows = (ln.split() for ln in text.splitlines() if ln)
    return {" ".join(r[:3]): " ".join(r[3:]) for r in rows}


def flattened(value: Any, prefix: str = "") -> Parsed:
    """A YAML mapping as ``dotted.key -> value`` (lists kept whole, as text)."""
    if not isinstance(value, dict):
        return {prefix: str(value)}
    out: Parsed = {}
    for key, item in value.items():
        out.update(flattened(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def patroni_keys(text: str) -> Parsed:
    return flattened(yaml.safe_load(text))


# -- the local renderings ----------------------------------------------------------


def _secrets(rendering: Rendering) -> StackSecrets:
    creds = rendering.credentials
    # Fields the Pulumi program has no secret for (the pinned Sentinel password) keep defaults.
    return StackSecrets(**{f: creds[f] for f in StackSecrets.__dataclass_fields__ if f in creds})


def _kafka_ports(brokers: int) -> dict[int, KafkaNodePorts]:
    return {
        n: KafkaNodePorts(
            client=40200 + n, internal=40300 + n, controller=40400 + n, metrics=40500 + n
        )
        for n in range(1, brokers + 1)
    }


def local_patroni_yml(spec: StackSpec, secrets: StackSecrets, tmp: Path) -> str:
    """``postgres-2.yml`` as the local provisioner writes it (``prepare``:
    the stack's etcd, ports and certificates; nothing is started)."""
    ports = PortAllocator()
    etcd = LocalEtcd(spec, tmp, secrets)
    etcd.prepare(ports, {})
    patroni = LocalPostgres(spec, tmp, secrets)
    # The plain PostgreSQL the local stack runs here (see the table).
    patroni.timescaledb = False
    patroni._ensure_certificates()
    patroni.prepare(ports, {"etcd": etcd})
    return (patroni.root / "postgres-2.yml").read_text()


def local_files(
    spec: StackSpec, plain: StackSpec, secrets: StackSecrets, tmp: Path
) -> dict[str, str]:
    """``file -> text`` of node 2 (a replica / standby / follower) and Sentinel 1;
    PostgreSQL's plain files from the ``plain`` (minimal) spec."""
    redis = LocalRedis(spec, tmp, secrets)
    kafka = LocalKafka(spec, tmp, secrets)
    postgres = LocalPostgres(plain, tmp / "plain", secrets)
    postgres.timescaledb = False
    return {
        "redis.conf": redis._server_conf(tmp / "redis-2", 40002, 40001),
        "sentinel.conf": redis._sentinel_conf(tmp / "sentinel-1", 40101, 40001),
        "server.properties": kafka.render_node_config(2, _kafka_ports(spec.kafka.brokers)),
        "postgresql.conf": postgres._config(),
        "pg_hba.conf": postgres._hba(),
        "patroni.yml": local_patroni_yml(spec, secrets, tmp / "ha"),
    }


def masked(files: dict[str, str], credentials: dict[str, str]) -> dict[str, str]:
    """Each credential replaced by its name: stacks have their own passwords."""
    out = {}
    for name, text in files.items():
        for key, value in credentials.items():
            # Redis keeps ACL passwords hashed: mask the hash as well.
            text = text.replace(password_hash(value), f"<{key}-hash>").replace(value, f"<{key}>")
        out[name] = text
    return out


def container_files(rendering: Rendering, plain: Rendering) -> dict[str, str]:
    """The files of ``rendering`` (``ha``); PostgreSQL's plain files from ``plain``."""
    return {
        "redis.conf": file_named(rendering, "redis/redis-2.conf", secret=True),
        "sentinel.conf": file_named(rendering, "redis/sentinel-1.conf", secret=True),
        "server.properties": file_named(rendering, "kafka/server-2.properties", secret=True),
        "postgresql.conf": file_named(plain, "timescale/postgresql.conf"),
        "pg_hba.conf": file_named(plain, "timescale/pg_hba.conf"),
        "patroni.yml": file_named(rendering, "timescale/patroni-2.yml", secret=True),
    }


PARSERS: dict[str, Callable[[str], Parsed]] = {
    "redis.conf": redis_directives,
    "sentinel.conf": redis_directives,
    "server.properties": properties,
    "postgresql.conf": pg_settings,
    "pg_hba.conf": hba,
    "patroni.yml": patroni_keys,
}


def differences(a: Parsed, b: Parsed) -> Iterator[str]:
    for key in sorted(a.keys() | b.keys()):
        if a.get(key) != b.get(key):
            yield key


@pytest.fixture(scope="module")
def compared(renderings: Renderings, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``(file, key) -> [pairs of targets that differ there]`` over all pairs."""
    by_target: dict[str, dict[str, str]] = {}
    for combo in CONTAINER_IDS:
        target = combo.split("-")[0]
        rendering, plain = renderings.by_id[combo], renderings.by_id[PLAIN_IDS[target]]
        files = container_files(rendering, plain)
        # Each rendering's own passwords (the stacks differ in name).
        by_target[target] = {
            **masked(files, rendering.credentials),
            **masked({k: files[k] for k in ("postgresql.conf", "pg_hba.conf")}, plain.credentials),
        }
    first = renderings.by_id[CONTAINER_IDS[0]]
    first_plain = renderings.by_id[PLAIN_IDS["docker"]]
    # Same spec and passwords for local as for the containers.
    assert first.result.spec.redis == renderings.by_id[CONTAINER_IDS[1]].result.spec.redis
    local = local_files(
        first.result.spec,
        first_plain.result.spec,
        _secrets(first),
        tmp_path_factory.mktemp("local"),
    )
    by_target["local"] = masked(local, first.credentials)
    found: dict[tuple[str, str], list[str]] = {}
    targets = sorted(by_target)
    for i, left in enumerate(targets):
        for right in targets[i + 1 :]:
            for name, parse in PARSERS.items():
                a, b = parse(by_target[left][name]), parse(by_target[right][name])
                for key in differences(a, b):
                    found.setdefault((name, key), []).append(f"{left}/{right}")
    return found


def test_renderings_differ_only_where_the_table_says(compared: dict) -> None:
    allowed = allowed_differences()
    unlisted = {f"{name}: {key}": pairs for (name, key), pairs in compared.items()
                if (name, key) not in allowed}  # fmt: skip
    assert unlisted == {}, (
        "config differs between targets outside docs/environments.md's table: "
        "render it the same, or add a row with the reason"
    )


def test_every_row_of_the_table_is_a_real_difference(compared: dict) -> None:
    stale = allowed_differences() - set(compared)
    assert stale == set(), "rows in docs/environments.md that no longer differ: remove them"


@pytest.fixture(scope="module")
def patroni_ymls(renderings: Renderings, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``target -> patroni.yml of node 2`` (parsed): local, both Pulumi container
    targets, and the compose environment's podman containers."""
    first = renderings.by_id[CONTAINER_IDS[0]]
    found = {
        combo.split("-")[0]: yaml.safe_load(
            file_named(renderings.by_id[combo], "timescale/patroni-2.yml", secret=True)
        )
        for combo in CONTAINER_IDS
    }
    local = local_patroni_yml(first.result.spec, _secrets(first), tmp_path_factory.mktemp("pat"))
    found["local"] = yaml.safe_load(local)
    spec = first.result.spec
    assert spec.postgres.patroni is not None
    member = compose_configs.patroni_member("postgres-2", port=40602, rest_port=40612)
    etcd = [f"etcd-1:{spec.postgres.patroni.etcd_client_port}"]
    compose = compose_configs.patroni_yml(spec, _secrets(first), member, etcd_hosts=etcd)
    found["compose"] = yaml.safe_load(compose)
    return found


def test_patroni_runs_on_the_same_dcs_settings_everywhere(
    renderings: Renderings, patroni_ymls: dict
) -> None:
    """ttl, loop_wait, retry_timeout, the quorum mode (and whatever else
    ``dcs_settings`` holds, ``primary_start_timeout`` included) are one
    rendering's, in every environment."""
    patroni = renderings.by_id[CONTAINER_IDS[0]].result.spec.postgres.patroni
    assert patroni is not None
    expected = dcs_settings(patroni)
    assert expected["synchronous_mode"] == "quorum"
    assert sorted(patroni_ymls) == ["compose", "docker", "kubernetes", "local"]
    for target, config in patroni_ymls.items():
        dcs = {k: v for k, v in config["bootstrap"]["dcs"].items() if k != "postgresql"}
        assert dcs == expected, target
        assert config["bootstrap"]["dcs"]["postgresql"]["use_pg_rewind"] is True, target


def test_compose_patroni_runs_the_local_servers_settings(patroni_ymls: dict) -> None:
    """The compose nodes run the local nodes' PostgreSQL parameters (both plain
    PostgreSQL 15 without TimescaleDB), apart from where the TLS files live,
    and the same ``pg_hba`` rules but for the network they admit."""
    local, compose = patroni_ymls["local"], patroni_ymls["compose"]

    def params(config: dict) -> dict:
        found = config["bootstrap"]["dcs"]["postgresql"]["parameters"]
        return {k: v for k, v in found.items() if not k.endswith("_file")}

    assert params(compose) == params(local)
    assert compose["bootstrap"]["dcs"]["postgresql"]["parameters"]["ssl"] == "on"

    def hba(config: dict) -> list[list[str]]:
        return [line.split()[:3] for line in config["postgresql"]["pg_hba"]]

    assert hba(compose) == hba(local)
    assert {rule[0] for rule in hba(compose) if rule[0].startswith("host")} == {"hostssl"}


def test_the_comparison_sees_a_divergence() -> None:
    """The check can fail: a setting one target renders differently shows up."""
    a = redis_directives("maxmemory 256mb\nuser admin on >x ~* +@all\n")
    b = redis_directives("maxmemory 512mb\nuser admin on >x ~* +@all\n")
    assert list(differences(a, b)) == ["maxmemory"]
