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

import pytest
from pulumi_rendering import Rendering, Renderings, file_named

from backbone_infra.render.kafka import KafkaNodePorts
from backbone_infra.render.redis import password_hash
from backbone_infra.spec import StackSpec
from backbone_infra.targets.local.kafka import LocalKafka
from backbone_infra.targets.local.postgres import LocalPostgres
from backbone_infra.targets.local.redis import LocalRedis
from backbone_infra.targets.local.secrets import StackSecrets

DOC = Path(__file__).resolve().parents[2] / "docs" / "environments.md"
CONTAINER_IDS = ("docker-institutional-ha", "kubernetes-institutional-ha")

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


def local_files(spec: StackSpec, secrets: StackSecrets, tmp: Path) -> dict[str, str]:
    """``file -> text`` of node 2 (a replica / standby / follower) and Sentinel 1."""
    redis = LocalRedis(spec, tmp, secrets)
    kafka = LocalKafka(spec, tmp, secrets)
    postgres = LocalPostgres(spec, tmp, secrets)
    # The plain PostgreSQL the local stack runs here (see the table).
    postgres.timescaledb = False
    return {
        "redis.conf": redis._server_conf(tmp / "redis-2", 40002, 40001),
        "sentinel.conf": redis._sentinel_conf(tmp / "sentinel-1", 40101, 40001),
        "server.properties": kafka.render_node_config(2, _kafka_ports(spec.kafka.brokers)),
        "postgresql.conf": postgres._config(),
        "pg_hba.conf": postgres._hba(),
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


def container_files(rendering: Rendering) -> dict[str, str]:
    return {
        "redis.conf": file_named(rendering, "redis/redis-2.conf", secret=True),
        "sentinel.conf": file_named(rendering, "redis/sentinel-1.conf", secret=True),
        "server.properties": file_named(rendering, "kafka/server-2.properties", secret=True),
        "postgresql.conf": file_named(rendering, "timescale/postgresql.conf"),
        "pg_hba.conf": file_named(rendering, "timescale/pg_hba.conf"),
    }


PARSERS: dict[str, Callable[[str], Parsed]] = {
    "redis.conf": redis_directives,
    "sentinel.conf": redis_directives,
    "server.properties": properties,
    "postgresql.conf": pg_settings,
    "pg_hba.conf": hba,
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
        rendering = renderings.by_id[combo]
        by_target[combo.split("-")[0]] = masked(container_files(rendering), rendering.credentials)
    first = renderings.by_id[CONTAINER_IDS[0]]
    # Same spec and passwords for local as for the containers.
    assert first.result.spec.redis == renderings.by_id[CONTAINER_IDS[1]].result.spec.redis
    by_target["local"] = masked(
        local_files(first.result.spec, _secrets(first), tmp_path_factory.mktemp("local")),
        first.credentials,
    )
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


def test_the_comparison_sees_a_divergence() -> None:
    """The check can fail: a setting one target renders differently shows up."""
    a = redis_directives("maxmemory 256mb\nuser admin on >x ~* +@all\n")
    b = redis_directives("maxmemory 512mb\nuser admin on >x ~* +@all\n")
    assert list(differences(a, b)) == ["maxmemory"]
