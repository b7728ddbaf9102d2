"""What a credential rotation must leave behind in a compose stack's mounted files.

The rotation itself is the one every environment runs
(:func:`backbone_infra.rotation.rotate_credentials`, through the published
ports). What differs for containers is persistence: each container reads
configs the harness rendered into ``.stacks/NAME/files/<node>/`` and mounted
read-only (:func:`backbone_harness.containers.services.materialise`), so a
Redis server cannot ``CONFIG REWRITE`` its ``redis.conf`` as a local one does,
and a restarted container would come back with the passwords of ``up``.

- :func:`keep_redis_acl` writes the users the running server reports
  (``ACL LIST``, the lines ``CONFIG REWRITE`` would write) into the host file
  behind the node's ``redis.conf`` mount, after every ACL change: during the
  grace both passwords, afterwards only the new one.
- :func:`rewrite_mounted_passwords` replaces each rotated clear-text password
  in the stack's mounted files (a Kafka broker's ``format.args``, read when its
  storage is empty).

A file mounted into a container pins its inode: it is rewritten in place (the
same inode, its mode kept), not replaced by a rename, or the container would
keep seeing the old file. Kafka's SCRAM credentials (metadata log) and
PostgreSQL's roles (catalog) live in the services' data, which a restart keeps.
"""

from __future__ import annotations

from pathlib import Path

import redis

from backbone_harness.containers.engine import EngineError, podman
from backbone_infra.rotation import rewrite_passwords, write_in_place
from backbone_infra.targets.local.secrets import StackSecrets

__all__ = [
    "REDIS_CONF",
    "keep_redis_acl",
    "mounted_source",
    "rewrite_mounted_passwords",
    "with_users",
]

#: Where a Redis server's container reads its config (``services.redis_server``).
REDIS_CONF = "/etc/redis/redis.conf"


def mounted_source(container: str, target: str) -> Path:
    """The host file mounted at ``target`` in ``container``."""
    done = podman(
        "inspect", "--format", "{{range .Mounts}}{{.Destination}}={{.Source}}\n{{end}}", container
    )
    for line in done.stdout.splitlines():
        destination, _, source = line.partition("=")
        if destination == target:
            return Path(source)
    raise EngineError(
        f"container {container} mounts nothing at {target}; it was not started by "
        "`harness up --env compose` (recreate the stack)"
    )


def with_users(conf: str, users: list[str]) -> str:
    """``conf`` with its ``user`` lines replaced by ``users`` (at the first one's place)."""
    out: list[str] = []
    placed = False
    for line in conf.splitlines():
        if line.startswith("user "):
            if not placed:
                out.extend(users)
                placed = True
            continue
        out.append(line)
    if not placed:
        out.extend(users)
    return "\n".join(out) + "\n"


def keep_redis_acl(container: str, admin: redis.Redis) -> None:
    """Write the users the server in ``container`` runs with (``admin`` is
    connected to it as the admin user) into its mounted ``redis.conf``, in
    place (see :func:`backbone_infra.rotation.rewrite_passwords`)."""
    users = [u.decode() if isinstance(u, bytes) else str(u) for u in admin.acl_list()]
    path = mounted_source(container, REDIS_CONF)
    write_in_place(path, with_users(path.read_text(), users).encode())


def rewrite_mounted_passwords(files: Path, old: StackSecrets, new: StackSecrets) -> list[Path]:
    """Replace every password ``new`` changed in the stack's mounted files under
    ``files`` that hold it in clear; returns the files rewritten."""
    return rewrite_passwords(sorted(p for p in files.rglob("*") if p.is_file()), old, new)
