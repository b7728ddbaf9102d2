"""How a rotation rewrites a compose stack's mounted files (no engine needed).

The containers see a host file through a bind mount of its inode, so every
rewrite must keep the inode and the mode; ``with_users`` must replace the
``user`` lines and nothing else; only the passwords that changed (and are no
longer used under another field) are replaced.
"""

from __future__ import annotations

import os
import random
import stat
from dataclasses import replace
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from backbone_harness.containers.rotation import rewrite_mounted_passwords, with_users
from backbone_infra.targets.local.secrets import StackSecrets

_line = st.text(alphabet="abcdefghij #=-_>~*&+@.0123456789", max_size=30)


@given(
    other=st.lists(_line.filter(lambda s: not s.startswith("user ")), max_size=8),
    old_users=st.lists(_line.map(lambda s: "user " + s), max_size=5),
    new_users=st.lists(_line.map(lambda s: "user " + s), min_size=1, max_size=5),
    seed=st.randoms(use_true_random=False),
)
def test_with_users_replaces_the_user_lines_and_keeps_every_other(
    other: list[str], old_users: list[str], new_users: list[str], seed: random.Random
) -> None:
    lines = other + old_users
    seed.shuffle(lines)
    out = with_users("".join(line + "\n" for line in lines), new_users).splitlines()
    assert [line for line in out if line.startswith("user ")] == new_users
    assert [line for line in out if not line.startswith("user ")] == [
        line for line in lines if not line.startswith("user ")
    ]


def test_rotated_passwords_are_replaced_in_place(tmp_path: Path) -> None:
    old = StackSecrets()
    new = replace(old, kafka_password="K" * 32, redis_password="R" * 32)
    node = tmp_path / "kafka-1"
    node.mkdir(mode=0o700)
    args = node / "00-format.args"
    args.write_text(
        f'"--add-scram"\n"SCRAM-SHA-512=[name=backbone,password={old.kafka_password}]"\n'
    )
    untouched = node / "01-server.properties"
    untouched.write_text(f"password={old.kafka_admin_password}\n")
    for path in (args, untouched):
        os.chmod(path, 0o444)
    inode = args.stat().st_ino

    rewritten = rewrite_mounted_passwords(tmp_path, old, new)

    assert rewritten == [args]
    assert args.stat().st_ino == inode  # the mount still shows this file
    assert stat.S_IMODE(args.stat().st_mode) == 0o444
    assert new.kafka_password in args.read_text() and old.kafka_password not in args.read_text()
    assert untouched.read_text() == f"password={old.kafka_admin_password}\n"


def test_a_password_still_in_use_under_another_field_stays(tmp_path: Path) -> None:
    """A stack from before the Sentinel's own password: the rotation pins the old
    Redis password as the Sentinel's, and the Sentinel's config keeps it."""
    old = replace(StackSecrets(), redis_sentinel_password=None)
    new = replace(old, redis_password="N" * 32, redis_sentinel_password=old.redis_password)
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"requirepass {old.redis_password}\n")

    assert rewrite_mounted_passwords(tmp_path, old, new) == []
    assert conf.read_text() == f"requirepass {old.redis_password}\n"
