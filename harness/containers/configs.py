"""Service configs for containers: the local environment's renderings, re-bound.

A container runs the same binaries as the local processes (the images pin the
same Debian packages), so it takes the same rendered config files: redis.conf,
server.properties, postgresql.conf and pg_hba.conf come from the local
renderers, with the port the host publishes the service on. Only what
differs between a host process and a container changes here:

- a service listens on every interface of its container (published ports are
  forwarded to the container's address, not to its loopback), while what it
  *advertises* to clients stays the host's loopback and published port;
- paths point into the image (data under ``/data``);
- PostgreSQL admits password logins from the container network (the host's
  forwarded connections arrive from the network's gateway).

The renderers are reached through the four functions below only, so they can
be re-pointed when the renderings move into ``infra/`` as pure functions.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from infra.spec import StackSpec
from infra.targets.local.kafka_config import KafkaNodePorts, render_server_properties
from infra.targets.local.postgres import LocalPostgres
from infra.targets.local.redis import LocalRedis
from infra.targets.local.secrets import StackSecrets

__all__ = [
    "KAFKA_DATA",
    "REDIS_DATA",
    "kafka_server_properties",
    "postgres_hba",
    "postgresql_conf",
    "redis_conf",
]

REDIS_DATA = "/data"
KAFKA_DATA = "/var/lib/kafka/data"
_LOOPBACK = "127.0.0.1"


def _replace_line(text: str, pattern: str, repl: str) -> str:
    new, count = re.subn(pattern, repl, text, count=1, flags=re.MULTILINE)
    if count != 1:
        raise ValueError(f"the rendered config has no line matching {pattern!r}")
    return new


def redis_conf(spec: StackSpec, secrets: StackSecrets, *, port: int) -> str:
    """redis.conf of a standalone server in a container, reached on host port ``port``."""
    with tempfile.TemporaryDirectory() as scratch:
        local = LocalRedis(spec, Path(scratch), secrets)
        text = local._server_conf(Path(REDIS_DATA), port, None)
    text = _replace_line(text, rf"^bind {re.escape(_LOOPBACK)}$", "bind 0.0.0.0")
    # Protected mode refuses non-loopback clients while `default` has no
    # password; `default` is off and every user has one, so it only gets in the way.
    return _replace_line(text, r"^protected-mode yes$", "protected-mode no")


def kafka_server_properties(
    spec: StackSpec, secrets: StackSecrets, *, ports: KafkaNodePorts
) -> str:
    """server.properties of a one-node KRaft cluster in a container.

    Listeners bind every interface at the same port numbers the host publishes,
    so the advertised ``127.0.0.1:<client>`` is right for clients on the host.
    """
    text = render_server_properties(
        spec.kafka,
        node=1,
        ports={1: ports},
        data_dir=Path(KAFKA_DATA),
        client_password=secrets.kafka_password,
        admin_password=secrets.kafka_admin_password,
    )
    listeners = re.search(r"^listeners=(.*)$", text, flags=re.MULTILINE)
    if listeners is None:
        raise ValueError("the rendered server.properties has no listeners= line")
    rebound = listeners.group(1).replace(f"//{_LOOPBACK}:", "//0.0.0.0:")
    return text.replace(listeners.group(0), f"listeners={rebound}", 1)


def _local_postgres(spec: StackSpec, secrets: StackSecrets, scratch: str) -> LocalPostgres:
    local = LocalPostgres(spec, Path(scratch), secrets)
    local.timescaledb = False  # the image's PostgreSQL is Debian's, without TimescaleDB
    return local


def postgresql_conf(spec: StackSpec, secrets: StackSecrets, *, port: int) -> str:
    """The settings appended to ``postgresql.conf`` of a container's cluster."""
    with tempfile.TemporaryDirectory() as scratch:
        text = _local_postgres(spec, secrets, scratch)._config()
    text = _replace_line(text, r"^listen_addresses = .*$", "listen_addresses = '*'")
    return text + f"port = {port}\n"


def postgres_hba(spec: StackSpec, secrets: StackSecrets) -> str:
    """pg_hba.conf of a container's cluster: SCRAM logins from any address it is reached on."""
    with tempfile.TemporaryDirectory() as scratch:
        text = _local_postgres(spec, secrets, scratch)._hba()
    return text.replace(f"{_LOOPBACK}/32", "0.0.0.0/0")
