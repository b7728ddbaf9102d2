"""``patroni.yml`` and the etcd command line: PostgreSQL with automatic failover. Pure functions.

Rendered once for every target that runs Patroni: the local provisioner
writes :func:`patroni_yaml` per node and starts ``patroni patroni.yml``, and
starts etcd with :func:`etcd_args`. What PostgreSQL itself is told is not
repeated here: the parameters, ``pg_hba`` lines and ``initdb`` options come
from :mod:`backbone_infra.render.postgres`, so a node under Patroni and a plain
node run the same server settings. What differs:

- ``synchronous_standby_names`` is Patroni's to set. Quorum mode
  (``synchronous_mode: quorum``) keeps it at ``ANY n (standbys)``, so a commit
  waits for any ``n`` standbys and one lost standby blocks nothing, and Patroni
  promotes only a standby the quorum guarantees to hold every acknowledged
  commit.
- ``use_pg_rewind`` with ``wal_log_hints = on``: a killed primary that comes
  back is rewound to the new timeline and rejoins as a standby.
- ``ttl`` / ``loop_wait`` / ``retry_timeout`` come from
  :class:`~backbone_infra.spec.PatroniSpec` (which checks Patroni's rule).

Per-target facts come in as arguments: the addresses, directories and etcd
hosts. Passwords go into the file (Patroni has no other way to get them than
the file or its environment), so the caller writes it 0600.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from backbone_infra.render.certificates import TLSFiles
from backbone_infra.render.postgres import INITDB_ARGS, SUPERUSER, pg_hba_conf, postgresql_conf
from backbone_infra.spec import PatroniSpec, PostgresSpec

__all__ = [
    "PatroniMember",
    "dcs_settings",
    "etcd_args",
    "initdb_options",
    "patroni_config",
    "patroni_yaml",
    "postgres_parameters",
]

#: Parameters Patroni sets itself from ``listen`` / ``synchronous_mode``.
_OWNED_BY_PATRONI = frozenset({"listen_addresses", "port", "synchronous_standby_names"})
#: ``initdb`` options Patroni passes itself (from ``authentication.superuser``).
_PASSED_BY_PATRONI = ("username", "pwfile")
#: A standby more than this many bytes behind is not promoted (the quorum
#: already guarantees the acknowledged commits; this bounds async catch-up).
MAXIMUM_LAG_ON_FAILOVER = 16 * 1024 * 1024


@dataclass(frozen=True)
class PatroniMember:
    """Where one Patroni node lives: the per-target facts of its ``patroni.yml``."""

    name: str
    #: ``host:port`` PostgreSQL listens on and the one others connect to.
    listen: str
    connect_address: str
    #: ``host:port`` of the REST API, listening and as others reach it.
    rest_listen: str
    rest_connect_address: str
    data_dir: str
    bin_dir: str
    #: Patroni writes the replication password here for pg_basebackup/pg_rewind.
    pgpass: str


def postgres_parameters(
    spec: PostgresSpec, *, timescaledb: bool, tls: TLSFiles | None = None
) -> dict[str, str]:
    """:func:`~backbone_infra.render.postgres.postgresql_conf` as Patroni parameters,
    plus ``wal_log_hints`` for pg_rewind; without what Patroni sets itself.
    ``tls``: the node's server files (``ssl = on``), as the plain server takes them."""
    params: dict[str, str] = {}
    text = postgresql_conf(spec, listen="*", timescaledb=timescaledb, synchronous=False, tls=tls)
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key in _OWNED_BY_PATRONI:
            continue
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        params[key] = value
    params["wal_log_hints"] = "on"
    return params


def dcs_settings(patroni: PatroniSpec) -> dict[str, Any]:
    """The cluster-wide settings Patroni keeps in etcd (``bootstrap.dcs``) besides parameters."""
    return {
        "ttl": patroni.ttl_s,
        "loop_wait": patroni.loop_wait_s,
        "retry_timeout": patroni.retry_timeout_s,
        "primary_start_timeout": patroni.primary_start_timeout_s,
        "maximum_lag_on_failover": MAXIMUM_LAG_ON_FAILOVER,
        "synchronous_mode": "quorum",
        "synchronous_node_count": patroni.synchronous_node_count,
        # With every standby gone the primary keeps committing (unprotected);
        # Patroni then promotes no one, since no standby is in the quorum.
        "synchronous_mode_strict": False,
    }


def initdb_options() -> list[str | dict[str, str]]:
    """:data:`~backbone_infra.render.postgres.INITDB_ARGS` in Patroni's list form."""
    out: list[str | dict[str, str]] = []
    for arg in INITDB_ARGS:
        key, sep, value = arg.removeprefix("--").partition("=")
        if key in _PASSED_BY_PATRONI:
            continue
        out.append({key: value} if sep else key)
    return out


def patroni_config(
    spec: PostgresSpec,
    node: PatroniMember,
    *,
    etcd_hosts: Sequence[str],
    network: str,
    superuser_password: str,
    replication_password: str,
    timescaledb: bool,
    tls: TLSFiles | None = None,
    client_ssl: Mapping[str, str] | None = None,
    post_bootstrap: str | None = None,
) -> dict[str, Any]:
    """``patroni.yml`` of one node as a mapping.

    ``network``: where clients and standbys connect from (``pg_hba``), as
    :func:`~backbone_infra.render.postgres.pg_hba_conf` takes it. ``tls``: the
    node serves TLS with these files and ``pg_hba`` admits TLS only;
    ``client_ssl``: the libpq settings Patroni's own superuser and replication
    connections use then (``sslmode=verify-full`` with the stack's CA).
    ``post_bootstrap``: a command Patroni runs once, on the node that
    bootstrapped the cluster, before it serves (a container target creates the
    application roles and schema there; the local target does it from outside).
    """
    patroni = spec.patroni
    if patroni is None:
        raise ValueError("this PostgreSQL spec runs no Patroni (spec.postgres.patroni is None)")
    if not etcd_hosts:
        raise ValueError("Patroni needs at least one etcd host")
    return {
        "scope": patroni.scope,
        "name": node.name,
        "log": {"level": "INFO", "format": "%(asctime)s %(levelname)s: %(message)s"},
        "restapi": {"listen": node.rest_listen, "connect_address": node.rest_connect_address},
        "etcd3": {"hosts": list(etcd_hosts), "protocol": "http"},
        "bootstrap": {
            "dcs": {
                **dcs_settings(patroni),
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": postgres_parameters(spec, timescaledb=timescaledb, tls=tls),
                },
            },
            "initdb": initdb_options(),
            **({"post_bootstrap": post_bootstrap} if post_bootstrap else {}),
        },
        "postgresql": {
            "listen": node.listen,
            "connect_address": node.connect_address,
            "data_dir": node.data_dir,
            "bin_dir": node.bin_dir,
            "pgpass": node.pgpass,
            "authentication": {
                "superuser": {
                    "username": SUPERUSER,
                    "password": superuser_password,
                    **(client_ssl or {}),
                },
                "replication": {
                    "username": spec.replication_user,
                    "password": replication_password,
                    **(client_ssl or {}),
                },
                # pg_rewind runs as the superuser (no separate rewind role).
            },
            "pg_hba": pg_hba_conf(spec, network=network, tls=tls is not None).splitlines(),
            "basebackup": [{"checkpoint": "fast"}],
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
    }


def patroni_yaml(config: dict[str, Any]) -> str:
    """A :func:`patroni_config` mapping as the YAML text Patroni reads."""
    return yaml.safe_dump(config, sort_keys=False)


def etcd_args(
    name: str,
    *,
    data_dir: str,
    client_url: str,
    peer_url: str,
    listen_client_url: str | None = None,
    listen_peer_url: str | None = None,
) -> list[str]:
    """Arguments (after the ``etcd`` binary) of a one-member etcd for Patroni.

    One member: on one machine three members add elections under load and no
    safety (they share the machine's fate). A multi-machine target lists every
    member in ``--initial-cluster`` instead.

    ``client_url`` / ``peer_url`` are advertised; etcd binds only IP addresses,
    so a target whose members are reached by name (a container) passes the
    ``listen_*`` URLs (``http://0.0.0.0:2379``) separately; by default it
    listens where it advertises (loopback, locally).
    """
    return [
        f"--name={name}",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={listen_client_url or client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={listen_peer_url or peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster={name}={peer_url}",
        "--initial-cluster-state=new",
        # No metrics or debug listeners beyond the client port.
        "--log-level=warn",
    ]
