"""The Redis renderer: the same users, replication and Sentinel settings for every target."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from backbone.connections import HostPort
from backbone_infra.render.redis import (
    ADMIN_USER,
    READER_COMMANDS,
    acl_users,
    password_hash,
    reader_key_patterns,
    redis_conf,
    sentinel_conf,
)
from backbone_infra.spec import RedisSpec

PASSWORDS = st.text(alphabet=string.ascii_letters + string.digits, min_size=8, max_size=40)


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        out.setdefault(key, []).append(value)
    return out


@given(password=PASSWORDS, admin=PASSWORDS)
def test_server_users_hold_their_own_passwords(password: str, admin: str) -> None:
    spec = RedisSpec()
    text = redis_conf(
        spec,
        bind="127.0.0.1",
        port=7000,
        announce_host="127.0.0.1",
        data_dir="/data",
        primary=None,
        password=password,
        admin_password=admin,
    )
    users = {v.split()[0]: v for v in directives(text)["user"]}
    assert set(users) == {"default", ADMIN_USER, spec.username}
    assert users["default"].split()[1] == "off"
    assert ">" not in users["default"]
    # Hashed, never in clear (the admin password stays only as masterauth).
    assert f" {password_hash(password)} " in users[spec.username]
    assert f" {password_hash(admin)} " in users[ADMIN_USER]
    assert f">{password}" not in text
    assert directives(text)["masterauth"] == [admin]
    assert "replicaof" not in directives(text)


def test_replica_follows_the_given_primary() -> None:
    text = redis_conf(
        RedisSpec(),
        bind="* -::*",
        port=6379,
        announce_host="redis-2",
        data_dir="/data",
        primary=HostPort(host="redis-1", port=6379),
        password="p" * 10,
        admin_password="a" * 10,
    )
    assert directives(text)["replicaof"] == ["redis-1 6379"]
    assert directives(text)["replica-announce-ip"] == ["redis-2"]


def test_sentinel_watches_the_primary_with_the_spec_timings() -> None:
    spec = RedisSpec(sentinels=3, replicas=1)
    text = sentinel_conf(
        spec,
        bind="127.0.0.1",
        port=26000,
        announce_host="127.0.0.1",
        data_dir="/tmp/s",
        primary=HostPort(host="127.0.0.1", port=7001),
        password="app-password",
        admin_password="admin-password",
    )
    sentinel = directives(text)["sentinel"]
    m = spec.master_name
    assert f"monitor {m} 127.0.0.1 7001 {spec.quorum}" in sentinel
    assert f"down-after-milliseconds {m} {spec.down_after_ms}" in sentinel
    assert f"auth-pass {m} admin-password" in sentinel
    assert directives(text)["requirepass"] == ["app-password"]


@given(consumer=PASSWORDS, reader=PASSWORDS)
def test_the_job_users_get_the_cache_commands_or_only_a_reads_commands(
    consumer: str, reader: str
) -> None:
    spec = RedisSpec()
    users = {
        line.split()[1]: line.split()
        for line in acl_users(
            spec, password="app-pw", admin_password="adm-pw",
            consumer_password=consumer, reader_password=reader,
        )
    }  # fmt: skip
    fill = users[spec.consumer_username]
    # The hash, never the password itself (as a word: a password may be "on").
    assert password_hash(consumer) in fill and f">{consumer}" not in fill
    assert {"+set", "+evalsha", "+del"} <= set(fill) and "-@all" in fill
    read = users[spec.reader_username]
    assert password_hash(reader) in read and f">{reader}" not in read
    assert set(read) >= set(READER_COMMANDS) and "-@all" in read
    assert not {"+set", "+del", "+unlink", "+evalsha", "+script|load", "+scan"} & set(read)
    # Reads every key of the namespaces, writes only their LRU index; nothing else.
    assert [w for w in read if "~" in w] == reader_key_patterns(spec)
    assert all(p.startswith("%R~") or p.endswith(":lru") for p in reader_key_patterns(spec))
    assert not any(w in ("~*", "allkeys", "+@all", "+@dangerous", "+@admin") for w in read)
