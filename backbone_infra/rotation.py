"""Rotating passwords on a running stack, with no window of refusal.

``harness rotate-credentials`` and the ``credential-rotation`` drill call
:func:`rotate_credentials` on a local process stack or a compose stack of
containers: one implementation, talking to each service as its administrator
through the ports the stack publishes on loopback (:class:`RotatableStack`).
The environments differ only in how a node keeps what it was told across a
restart (:meth:`RotatableStack.keep_redis_acl`,
:meth:`RotatableStack.keep_credentials`). A principal (:data:`PRINCIPALS`) is the
application's login to one service (``redis``, ``kafka``, ``postgres``) or a
job's logins to every service it uses (``writer``: Kafka and PostgreSQL;
``consumer``: Kafka, Redis and PostgreSQL; ``reader``: Redis and PostgreSQL),
or the exporters' (``monitor``). Per login, in this order:

1. **The services accept the new password.** Redis: ``ACL SETUSER user >NEW``
   on every server, so the user holds *both* passwords during the switch
   (``ACL SETUSER`` is per node; replicas do not replicate it). Kafka: the
   SCRAM credential is replaced through the Admin API
   (``AlterUserScramCredentials``, the call behind ``kafka-configs.sh
   --alter --add-config SCRAM-SHA-512=[...]``); PostgreSQL: ``ALTER ROLE ...
   PASSWORD`` with a SCRAM verifier, so the clear text never reaches the
   server's log (standbys replay the catalog change). Kafka and PostgreSQL
   keep one password per principal, but an established connection or session
   stays authenticated: running clients are not interrupted.
2. **Publish.** ``secrets.json`` then ``outputs.json`` are rewritten (0600,
   atomically). Clients that open a connection after this point read the new
   document. Then the stack brings the files its nodes read at start up to
   date (:meth:`RotatableStack.keep_credentials`: the exporters' password
   files, restarting those exporters, when ``monitor`` rotates; a compose
   stack's mounted files).
3. **Retire the old password** (Redis only, after ``grace_s``):
   ``ACL SETUSER user !<hash of OLD>``; after every ACL change the stack
   persists the node's users (locally ``CONFIG REWRITE``, the file put back
   to 0600; a container's read-only mounted ``redis.conf`` is rewritten by
   the harness), so a restarted node keeps what the running one has.

A failure before step 2 rolls back what step 1 changed, so the stack keeps
working with its old document. Sentinels cannot hold two passwords: their
``requirepass`` is not rotated here (it is pinned in ``secrets.json`` as
``redis_sentinel_password``).
"""

from __future__ import annotations

import os
import secrets as pysecrets
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import psycopg
import redis
from kafka import KafkaAdminClient
from kafka.admin import UserScramCredentialUpsertion
from pydantic import SecretStr

from backbone.connections import ConnectionsDocument, write_document
from backbone.settings import KafkaConnectionSettings, RedisConnectionSettings
from backbone.stream.producer import kafka_client_config
from backbone_infra.errors import InfraError
from backbone_infra.render.postgres import (
    SUPERUSER,
    job_roles,
    monitor_role,
    password_statement,
    reader_role,
    scram_verifier,
)
from backbone_infra.render.redis import ADMIN_USER, EXPORTER_USER, password_hash
from backbone_infra.spec import StackSpec
from backbone_infra.targets.job_principals import job_principals
from backbone_infra.targets.local.ports import LOOPBACK
from backbone_infra.targets.local.secrets import StackSecrets

__all__ = [
    "APPLICATION",
    "CLIENTS",
    "PRINCIPALS",
    "Login",
    "Principal",
    "RotatableStack",
    "RotationError",
    "RotationResult",
    "logins",
    "new_password",
    "rewrite_passwords",
    "rotate_credentials",
    "write_in_place",
]

Principal = Literal["redis", "kafka", "postgres", "writer", "consumer", "reader", "monitor"]
#: The application principal of each service, each job's, then the exporters' (``--principal``).
PRINCIPALS: tuple[Principal, ...] = get_args(Principal)
#: The application's logins (what the drill rotates).
APPLICATION: tuple[Principal, ...] = ("redis", "kafka", "postgres")
#: What ``harness rotate-credentials`` rotates when no ``--principal`` is given:
#: every client's logins. ``monitor`` only when asked: it restarts the exporters.
CLIENTS: tuple[Principal, ...] = (*APPLICATION, "writer", "consumer", "reader")
Service = Literal["redis", "kafka", "postgres"]


@dataclass(frozen=True)
class Login:
    """One user of one service and the ``StackSecrets`` field its password lives in."""

    service: Service
    user: str
    field: str


def logins(spec: StackSpec, principal: Principal) -> list[Login]:
    """The logins a principal stands for (the names the renderers give them)."""
    k, r, p = spec.kafka, spec.redis, spec.postgres
    writer_role, consumer_role = job_roles(p)
    table: dict[Principal, list[Login]] = {
        "redis": [Login("redis", r.username, "redis_password")],
        "kafka": [Login("kafka", k.username, "kafka_password")],
        "postgres": [Login("postgres", p.user, "postgres_password")],
        "writer": [
            Login("kafka", k.writer_username, "kafka_writer_password"),
            Login("postgres", writer_role, "postgres_writer_password"),
        ],
        "consumer": [
            Login("kafka", k.consumer_username, "kafka_consumer_password"),
            Login("redis", r.consumer_username, "redis_consumer_password"),
            Login("postgres", consumer_role, "postgres_consumer_password"),
        ],
        "reader": [
            Login("redis", r.reader_username, "redis_reader_password"),
            Login("postgres", reader_role(p), "postgres_reader_password"),
        ],
        # The exporters' read-only logins (redis_exporter, the lag exporter,
        # postgres_exporter): the stack hands them the new ones (keep_credentials).
        "monitor": [
            Login("redis", EXPORTER_USER, "redis_exporter_password"),
            Login("kafka", k.monitor_username, "kafka_monitor_password"),
            Login("postgres", monitor_role(p), "postgres_monitor_password"),
        ],
    }
    return table[principal]


#: How long a service may take to accept a new credential everywhere (seconds).
ACCEPT_TIMEOUT_S = 30.0
Echo = Callable[[str], None]


class RotationError(InfraError):
    """A rotation could not complete; the message says what was rolled back."""


@dataclass(frozen=True)
class RotationResult:
    """What a rotation changed (never the passwords)."""

    principals: tuple[Principal, ...]
    #: The users whose passwords changed, as ``service:user``.
    users: tuple[str, ...]
    #: Seconds from the first change to the published document.
    seconds_to_publish: float
    #: Seconds the old Redis password was still accepted after publishing.
    grace_s: float


class RotatableStack(Protocol):
    """What a rotation needs of a running stack, whichever environment runs it
    (the local process stack and the compose stack both are one)."""

    @property
    def spec(self) -> StackSpec: ...

    @property
    def dir(self) -> Path:
        """Where ``secrets.json`` lives."""
        ...

    @property
    def outputs_path(self) -> Path: ...

    @property
    def document(self) -> ConnectionsDocument: ...

    def node_names(self) -> list[str]: ...

    def node_running(self, name: str) -> bool: ...

    def node_ports(self, name: str) -> dict[str, int]:
        """Loopback ports by purpose; ``client`` is where the host dials the node."""
        ...

    def postgres_primary(self) -> str: ...

    def keep_redis_acl(self, node: str, admin: redis.Redis) -> None:
        """Make the ACL the Redis server ``node`` runs with now (``admin`` is
        connected to it as the admin user) what it loads when restarted."""
        ...

    def keep_credentials(self, old: StackSecrets, new: StackSecrets) -> None:
        """After ``new`` is published: bring any file a node reads at start
        (besides the Redis users) from ``old`` up to ``new``."""
        ...


def new_password() -> str:
    """A fresh password in the form the provisioner generates (URL-safe, 32 chars)."""
    return pysecrets.token_urlsafe(24)


# -- Redis ---------------------------------------------------------------------------------


def _redis_admin(stack: RotatableStack, node: str, secrets: StackSecrets) -> redis.Redis:
    section = stack.document.redis
    assert section is not None
    # Over the same verified TLS as the application (the document's CA).
    tls = RedisConnectionSettings.from_section(section).tls_kwargs()
    return redis.Redis(
        host=LOOPBACK,
        port=stack.node_ports(node)["client"],
        username=ADMIN_USER,
        password=secrets.redis_admin_password,
        socket_timeout=5,
        **tls,
    )


def _server_names(stack: RotatableStack) -> list[str]:
    """The Redis servers (not the Sentinels) of the stack."""
    return [n for n in stack.node_names() if n.startswith("redis-")]


def _redis_servers(stack: RotatableStack) -> list[str]:
    servers = _server_names(stack)
    down = [n for n in servers if not stack.node_running(n)]
    if down:
        raise RotationError(
            f"Redis node(s) {', '.join(down)} are not running: a stopped node would come back "
            "without the new password; start them (`harness node restart NODE`) and rotate again"
        )
    return servers


def _redis_acl(stack: RotatableStack, secrets: StackSecrets, user: str, rule: str) -> None:
    for node in _server_names(stack):
        with _redis_admin(stack, node, secrets) as client:
            client.execute_command("ACL", "SETUSER", user, rule)
            stack.keep_redis_acl(node, client)


def _redis_add(stack: RotatableStack, secrets: StackSecrets, user: str, new: str) -> None:
    _redis_acl(stack, secrets, user, password_hash(new))


def _redis_remove(stack: RotatableStack, secrets: StackSecrets, user: str, old: str) -> None:
    _redis_acl(stack, secrets, user, "!" + password_hash(old)[1:])


# -- Kafka -----------------------------------------------------------------------------------


def _kafka_admin(doc: ConnectionsDocument, stack: RotatableStack, secrets: StackSecrets) -> Any:
    assert doc.kafka is not None
    section = doc.kafka.model_copy(
        update={
            "username": stack.spec.kafka.admin_username,
            "password": SecretStr(secrets.kafka_admin_password),
        }
    )
    return KafkaAdminClient(
        **kafka_client_config(
            KafkaConnectionSettings.from_section(section), client_id="rotate-credentials"
        )
    )


def _kafka_set(
    stack: RotatableStack, doc: ConnectionsDocument, secrets: StackSecrets, user: str, pw: str
) -> None:
    mechanism = stack.spec.kafka.sasl_mechanism
    admin = _kafka_admin(doc, stack, secrets)
    try:
        errors = admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion(user, mechanism, pw)]
        )
    finally:
        admin.close()
    if errors.get(user):
        raise RotationError(f"Kafka refused the new SCRAM credential of {user}: {errors[user]}")
    _wait_kafka_accepts(doc, user, pw)


def _wait_kafka_accepts(doc: ConnectionsDocument, user: str, pw: str) -> None:
    """Every broker learns the credential from the metadata log: log in to each."""
    assert doc.kafka is not None
    deadline = time.monotonic() + ACCEPT_TIMEOUT_S
    for server in doc.kafka.bootstrap_servers:
        section = doc.kafka.model_copy(
            update={"bootstrap_servers": [server], "username": user, "password": SecretStr(pw)}
        )
        config = kafka_client_config(
            KafkaConnectionSettings.from_section(section), client_id="rotate-check"
        )
        while True:
            try:
                KafkaAdminClient(**config, bootstrap_timeout_ms=3000).close()
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise RotationError(
                        f"broker {server} did not accept the new credential within "
                        f"{ACCEPT_TIMEOUT_S:.0f}s ({type(exc).__name__})"
                    ) from None
                time.sleep(0.5)


# -- PostgreSQL ----------------------------------------------------------------------------------


def _pg_ssl(stack: RotatableStack) -> dict[str, Any]:
    """The document's TLS settings for the superuser's session (verified like the
    application's)."""
    section = stack.document.timescale
    assert section is not None
    if section.sslrootcert is None:
        return {"sslmode": section.sslmode}
    return {"sslmode": section.sslmode, "sslrootcert": section.sslrootcert}


def _postgres_set(stack: RotatableStack, secrets: StackSecrets, role: str, pw: str) -> None:
    primary = stack.postgres_primary()
    with psycopg.connect(
        host=LOOPBACK,
        port=stack.node_ports(primary)["client"],
        dbname="postgres",
        user=SUPERUSER,
        password=secrets.postgres_superuser_password,
        **_pg_ssl(stack),
        autocommit=True,
        connect_timeout=10,
    ) as conn:
        conn.execute(password_statement(role, scram_verifier(pw)))


# -- the rotation ----------------------------------------------------------------------------------


def _document(
    doc: ConnectionsDocument, spec: StackSpec, updated: StackSecrets
) -> ConnectionsDocument:
    """``doc`` with the application passwords and every job's logins of ``updated``."""
    change: dict[str, Any] = {}
    if doc.principals is not None:
        change["principals"] = job_principals(spec, updated)
    if doc.redis is not None:
        change["redis"] = doc.redis.model_copy(
            update={"password": SecretStr(updated.redis_password)}
        )
    if doc.kafka is not None:
        change["kafka"] = doc.kafka.model_copy(
            update={"password": SecretStr(updated.kafka_password)}
        )
    if doc.timescale is not None:
        change["timescale"] = doc.timescale.model_copy(
            update={"password": SecretStr(updated.postgres_password)}
        )
    return doc.model_copy(update=change)


def rotate_credentials(
    stack: RotatableStack,
    principals: Sequence[Principal] = APPLICATION,
    *,
    grace_s: float = 5.0,
    echo: Echo = lambda _m: None,
) -> RotationResult:
    """Rotate the passwords of ``principals`` on the running ``stack`` (see the
    module docstring for the order). Returns what changed."""
    unknown = sorted(set(principals) - set(PRINCIPALS))
    if unknown:
        raise RotationError(
            f"unknown principal(s) {', '.join(unknown)}; choose from {', '.join(PRINCIPALS)}"
        )
    chosen = tuple(p for p in PRINCIPALS if p in principals)
    todo = [login for p in chosen for login in logins(stack.spec, p)]
    old = StackSecrets.load(stack.dir)
    doc = stack.document
    fresh = {login.field: new_password() for login in todo}
    updated = replace(old, **fresh)
    if "redis" in chosen and old.redis_sentinel_password is None:
        # Sentinels keep the password they have (one per Sentinel, no switch).
        updated = replace(updated, redis_sentinel_password=old.redis_password)
    if any(login.service == "redis" for login in todo):
        _redis_servers(stack)
    began = time.monotonic()
    done: list[Login] = []
    try:
        for login in todo:
            said = _accept(stack, doc, old, login, fresh[login.field])
            done.append(login)
            echo(f"{login.service} ({login.user}): {said}")
    except Exception as exc:
        _roll_back(stack, doc, old, fresh, done)
        names = ", ".join(f"{d.service}:{d.user}" for d in done) or "nothing"
        raise RotationError(
            f"rotation failed ({type(exc).__name__}: {_scrub(str(exc), fresh)}); rolled back "
            f"{names}: the stack keeps its old credentials"
        ) from None
    updated.save(stack.dir)
    write_document(_document(doc, stack.spec, updated), stack.outputs_path)
    published = time.monotonic() - began
    echo(f"published {stack.outputs_path.name} and secrets.json")
    stack.keep_credentials(old, updated)
    redis_logins = [login for login in todo if login.service == "redis"]
    if redis_logins:
        time.sleep(grace_s)
        for login in redis_logins:
            _redis_remove(stack, old, login.user, getattr(old, login.field))
        echo(f"redis: the old passwords are refused after a {grace_s:g}s grace")
    return RotationResult(
        principals=chosen,
        users=tuple(f"{login.service}:{login.user}" for login in todo),
        seconds_to_publish=published,
        grace_s=grace_s,
    )


def _accept(
    stack: RotatableStack, doc: ConnectionsDocument, old: StackSecrets, login: Login, pw: str
) -> str:
    """Step 1 for one login: its service accepts ``pw`` (Redis: besides the old
    one). Returns what now holds, for the progress line."""
    if login.service == "redis":
        _redis_add(stack, old, login.user, pw)
        return "every server accepts the old and the new password"
    if login.service == "kafka":
        _kafka_set(stack, doc, old, login.user, pw)
        return "every broker accepts the new SCRAM credential"
    _postgres_set(stack, old, login.user, pw)
    return "the role has its new password (SCRAM verifier)"


def _roll_back(
    stack: RotatableStack,
    doc: ConnectionsDocument,
    old: StackSecrets,
    fresh: dict[str, str],
    done: list[Login],
) -> None:
    """Undo step 1 for the logins already changed (best effort, newest first)."""
    for login in reversed(done):
        if login.service == "redis":
            _redis_remove(stack, old, login.user, fresh[login.field])
        elif login.service == "kafka":
            _kafka_set(stack, doc, old, login.user, getattr(old, login.field))
        else:
            _postgres_set(stack, old, login.user, getattr(old, login.field))


def rewrite_passwords(files: Iterable[Path], old: StackSecrets, new: StackSecrets) -> list[Path]:
    """Replace every password ``new`` changed in each of ``files`` that holds it
    in clear (an exporter's password file, a container's mounted config);
    returns the files rewritten.

    In place: the same inode, its mode kept (a file bind-mounted into a
    container pins its inode; a rename would leave the container the old file).
    A value still in use under another field (a pinned Sentinel password) stays.
    """
    current = new.generated()
    changed = {
        was.encode(): current[field].encode()
        for field, was in old.generated().items()
        if current.get(field, was) != was and was not in current.values()
    }
    rewritten: list[Path] = []
    for path in files:
        content = path.read_bytes()
        updated = content
        for was, now in changed.items():
            updated = updated.replace(was, now)
        if updated != content:
            write_in_place(path, updated)
            rewritten.append(path)
    return rewritten


def write_in_place(path: Path, content: bytes) -> None:
    """Overwrite ``path`` keeping its inode and mode (see :func:`rewrite_passwords`)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    os.chmod(path, mode | stat.S_IWUSR)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
    finally:
        os.chmod(path, mode)


def _scrub(text: str, fresh: dict[str, str]) -> str:
    for pw in fresh.values():
        text = text.replace(pw, "***")
    return text
