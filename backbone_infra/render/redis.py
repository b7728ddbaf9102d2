"""``redis.conf`` and ``sentinel.conf``, with their ACL users. Pure functions, no I/O.

One rendering for every target: the local provisioner writes these files for
its processes, the Docker and Kubernetes components mount them into their
containers. What differs between targets comes in as arguments (where a node
listens and how the others reach it, its data directory); everything else
(users, persistence, memory policy, Sentinel timings) is the same text
everywhere, which ``tests/infra/test_environment_parity.py`` checks.

Every server knows these ACL users, one per job (least privilege):

``default``
    Disabled, without a password.
``spec.username`` (the application)
    Only the commands the cache runs (:data:`APP_COMMANDS`), only on keys of
    its namespaces (:func:`app_key_patterns`), no Pub/Sub channels: it cannot
    ``FLUSHALL``, ``CONFIG SET``, ``ACL SETUSER`` or read another tenant's keys.
:data:`EXPORTER_USER` (``redis_exporter``)
    Read-only monitoring commands (:data:`EXPORTER_COMMANDS`), no keys.
:data:`ADMIN_USER`
    Everything: replication (``masteruser``), Sentinel (``auth-user``) and
    provisioning only.

Passwords are stored as SHA-256 hashes (``#<hex>``), so ``redis.conf`` holds no
application or exporter password in clear; it still holds the admin password
as ``masterauth`` (replication must present it), and ``sentinel.conf`` holds
the Sentinel password and the admin password: write both 0600 (or mount them
as a secret). Sentinels require a password of their own on every target
(clients get it as ``sentinel_password``; every job document with a ``redis``
section carries it, so it is no principal's password).

With ``tls`` (:class:`~backbone_infra.render.certificates.TLSFiles`, the
default of every stack) the node's port is a TLS port and the plain-text port
is closed (``port 0``); replication, Sentinel's links to the nodes and to the
other Sentinels use TLS too. Clients need no certificate of their own
(``tls-auth-clients no``): they authenticate with their ACL password over the
verified, encrypted connection.
"""

from __future__ import annotations

import hashlib

from backbone.connections import HostPort
from backbone_infra.render.certificates import TLSFiles
from backbone_infra.spec import RedisSpec

__all__ = [
    "ADMIN_USER",
    "APP_COMMANDS",
    "EXPORTER_COMMANDS",
    "EXPORTER_USER",
    "READER_COMMANDS",
    "acl_users",
    "app_key_patterns",
    "listener_lines",
    "password_hash",
    "reader_key_patterns",
    "redis_conf",
    "sentinel_conf",
]

#: The ACL user replication, Sentinel and provisioning use; clients get ``spec.username``.
ADMIN_USER = "admin"
#: The read-only user of ``redis_exporter``.
EXPORTER_USER = "exporter"

#: What ``backbone.cache.redis.RedisCache`` runs, and nothing else: reads and
#: writes of its entries, the LRU index and pair tags (also inside its Lua
#: scripts, which Redis checks against the same ACL), loading its scripts, and
#: ``SCAN`` + ``DEL`` for the namespace flush of a degraded-mode re-attach.
#: (redis-py's ``CLIENT SETINFO`` after ``AUTH`` is not granted: Redis 7.0 has
#: no such command, and redis-py ignores its refusal.)
APP_COMMANDS = (
    "+ping",
    "+auth",
    "+hello",
    "+get",
    "+mget",
    "+set",
    "+exists",
    "+pttl",
    "+del",
    "+unlink",
    "+pexpire",
    "+sadd",
    "+smembers",
    "+zadd",
    "+zcard",
    "+zrem",
    "+zremrangebyscore",
    "+zpopmin",
    "+scan",
    "+evalsha",
    "+script|load",
    "+script|exists",
)

#: What a cache *read* runs (``RedisCache._read`` and ``stats``): ``GET`` of an
#: entry, ``ZADD XX`` of its LRU score, ``ZCARD`` of the index. The reader user
#: may read keys of its namespaces and write only the LRU index (Redis 7 key
#: selectors ``%R~``/``%W~``): it cannot set, delete or invalidate an entry, so a
#: miss it serves from the store leaves the cache unfilled (the refused fill is
#: logged and falls back, as any refused cache command does).
READER_COMMANDS = (
    "+ping",
    "+auth",
    "+hello",
    "+get",
    "+mget",
    "+exists",
    "+pttl",
    "+zadd",
    "+zcard",
)

#: What ``redis_exporter`` needs for its default metrics, all read-only (the
#: exporter's README lists a wider set, for key checks this stack does not use).
EXPORTER_COMMANDS = (
    "+ping",
    "+auth",
    "+hello",
    "+client|setname",
    "+client|list",
    "+info",
    "+config|get",
    "+cluster|info",
    "+slowlog|get",
    "+slowlog|len",
    "+latency|latest",
    "+select",
)


def app_key_patterns(spec: RedisSpec) -> list[str]:
    """The application's key patterns: ``NS:*`` and ``NS-*`` (a sub-namespace
    such as ``backbone-drill-1a2b3c:``, for tests and drills sharing a stack)."""
    ns = spec.namespace
    return [f"~{ns}:*", f"~{ns}-*"]


def reader_key_patterns(spec: RedisSpec) -> list[str]:
    """The reader's key permissions: read every key of the namespaces, write
    only their LRU index (``NS:lru``, ``NS-*:lru``; see :data:`READER_COMMANDS`)."""
    ns = spec.namespace
    return [f"%R~{ns}:*", f"%R~{ns}-*", f"%W~{ns}:lru", f"%W~{ns}-*:lru"]


def password_hash(password: str) -> str:
    """The ACL form of ``password`` Redis stores: ``#`` and its SHA-256 in hex."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def acl_users(
    spec: RedisSpec,
    *,
    password: str,
    admin_password: str,
    exporter_password: str | None = None,
    consumer_password: str | None = None,
    reader_password: str | None = None,
) -> list[str]:
    """The ``user`` lines of every server, passwords hashed (:func:`password_hash`).

    ``default`` is off and keeps no password (``resetpass``): nobody can log in
    as it, and Redis's protected mode (which guards a password-less default
    user) never refuses a network client of a server bound to all interfaces.
    It keeps ``+@all`` on every key because Redis replays its AOF as
    ``default``: with ``-@all`` the replay refuses every ``MULTI``/``EXEC``
    block (how a Lua script's writes are logged) with ``NOPERM``, and the
    cache's script writes are lost on restart (checked on Redis 7.0.15). A
    client cannot use those rights: it starts unauthenticated and cannot
    authenticate as a disabled user.
    ``exporter_password``: ``None`` renders no exporter user (a target without
    a Redis exporter); likewise ``consumer_password`` (``spec.consumer_username``:
    the application's commands and keys, for a consumer that fills and
    invalidates the cache) and ``reader_password`` (``spec.reader_username``:
    :data:`READER_COMMANDS` on :func:`reader_key_patterns`).
    """
    users = [
        "user default off resetpass ~* &* +@all",
        f"user {ADMIN_USER} on {password_hash(admin_password)} ~* &* +@all",
        " ".join(
            [
                f"user {spec.username} on {password_hash(password)} resetchannels",
                *app_key_patterns(spec),
                "-@all",
                *APP_COMMANDS,
            ]
        ),
    ]
    if consumer_password is not None:
        users.append(
            " ".join(
                [
                    f"user {spec.consumer_username} on {password_hash(consumer_password)}",
                    "resetchannels",
                    *app_key_patterns(spec),
                    "-@all",
                    *APP_COMMANDS,
                ]
            )
        )
    if reader_password is not None:
        users.append(
            " ".join(
                [
                    f"user {spec.reader_username} on {password_hash(reader_password)}",
                    "resetchannels",
                    *reader_key_patterns(spec),
                    "-@all",
                    *READER_COMMANDS,
                ]
            )
        )
    if exporter_password is not None:
        users.append(
            " ".join(
                [
                    f"user {EXPORTER_USER} on {password_hash(exporter_password)}",
                    "resetkeys resetchannels -@all",
                    *EXPORTER_COMMANDS,
                ]
            )
        )
    return users


def listener_lines(port: int, tls: TLSFiles | None) -> list[str]:
    """Where a server or Sentinel listens: ``port`` in plain text, or with
    ``tls`` as its TLS port with plain text closed, and TLS for the links it
    opens itself (replication, Sentinel to nodes and Sentinels)."""
    if tls is None:
        return [f"port {port}"]
    return [
        "port 0",
        f"tls-port {port}",
        f"tls-cert-file {tls.cert}",
        f"tls-key-file {tls.key}",
        f"tls-ca-cert-file {tls.ca}",
        # Clients authenticate by ACL password; no client certificates.
        "tls-auth-clients no",
        "tls-replication yes",
        "tls-cluster yes",
        'tls-protocols "TLSv1.2 TLSv1.3"',
    ]


def redis_conf(
    spec: RedisSpec,
    *,
    bind: str,
    port: int,
    announce_host: str,
    data_dir: str,
    primary: HostPort | None,
    password: str,
    admin_password: str,
    exporter_password: str | None = None,
    tls: TLSFiles | None = None,
    consumer_password: str | None = None,
    reader_password: str | None = None,
) -> str:
    """``redis.conf`` of one server.

    ``bind``: the addresses it listens on (``127.0.0.1`` locally, ``* -::*`` in
    a container). ``announce_host``: how replicas and Sentinels reach it.
    ``primary``: the server it replicates from at first start, ``None`` for the
    first primary. Sentinel rewrites ``replicaof`` on failover.
    ``tls``: serve ``port`` with TLS only (:func:`listener_lines`).
    """
    lines = [
        f"bind {bind}",
        *listener_lines(port, tls),
        "protected-mode yes",
        "daemonize no",
        'logfile ""',
        f"dir {data_dir}",
        f"appendonly {'yes' if spec.appendonly else 'no'}",
        "appendfsync everysec",
        f"maxmemory {spec.maxmemory_mb}mb",
        f"maxmemory-policy {spec.maxmemory_policy}",
        *acl_users(
            spec,
            password=password,
            admin_password=admin_password,
            exporter_password=exporter_password,
            consumer_password=consumer_password,
            reader_password=reader_password,
        ),
        # Sentinel's failover reconfigures nodes and rewrites this file;
        # replicas authenticate to whichever node is primary.
        f"masteruser {ADMIN_USER}",
        f"masterauth {admin_password}",
        f"replica-announce-ip {announce_host}",
        # Diskless full sync waits 5 s by default for more replicas to join;
        # the replicas of a stack attach at once.
        "repl-diskless-sync-delay 0",
    ]
    if primary is not None:
        lines.append(f"replicaof {primary.host} {primary.port}")
    return "\n".join(lines) + "\n"


def sentinel_conf(
    spec: RedisSpec,
    *,
    bind: str,
    port: int,
    announce_host: str,
    data_dir: str,
    primary: HostPort,
    password: str,
    admin_password: str,
    tls: TLSFiles | None = None,
) -> str:
    """``sentinel.conf`` of one Sentinel watching ``primary`` under ``spec.master_name``.

    Sentinel rewrites this file as it learns the topology: give it a writable
    copy, written once.
    """
    m = spec.master_name
    lines = [
        f"bind {bind}",
        *listener_lines(port, tls),
        "daemonize no",
        'logfile ""',
        f"dir {data_dir}",
        # Host names (container targets) as well as addresses work.
        "sentinel resolve-hostnames yes",
        "sentinel announce-hostnames yes",
        f"sentinel announce-ip {announce_host}",
        # Clients (and the other Sentinels) authenticate to a Sentinel too.
        f"requirepass {password}",
        f"sentinel sentinel-pass {password}",
        f"sentinel monitor {m} {primary.host} {primary.port} {spec.quorum}",
        f"sentinel auth-user {m} {ADMIN_USER}",
        f"sentinel auth-pass {m} {admin_password}",
        # Tuned far down from the defaults (30 s / 180 s) so a failover
        # completes in seconds; see RedisSpec.
        f"sentinel down-after-milliseconds {m} {spec.down_after_ms}",
        f"sentinel failover-timeout {m} {spec.failover_timeout_ms}",
        f"sentinel parallel-syncs {m} 1",
    ]
    return "\n".join(lines) + "\n"
