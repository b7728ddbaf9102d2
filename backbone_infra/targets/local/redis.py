"""Redis on loopback: one server, or a primary, replicas and Sentinels.

``minimal``: ``redis-1`` alone. ``ha``: primary ``redis-1``, replicas
``redis-2..``, Sentinels ``sentinel-1..`` watching them under
``spec.redis.master_name``.

Authentication is always on. Each server knows three ACL users: ``default``
(disabled), the application user ``spec.redis.username`` and ``admin``, which
replicas (``masteruser``) and Sentinels (``auth-user``) use. Sentinels require
their own password (``StackSecrets.sentinel_password``; clients get it as
``sentinel_password``), which is no principal's.
Secrets are written only to the 0600 config files inside 0700 node directories
(a ``CONFIG REWRITE`` by Sentinel may recreate a file, the directory still
keeps it private); they are never on a command line.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from backbone.connections import HostPort, RedisConnection
from backbone_infra.render.redis import ADMIN_USER, redis_conf, sentinel_conf
from backbone_infra.spec import StackSpec
from backbone_infra.targets.local.base import LocalService
from backbone_infra.targets.local.files import find_binary, write_private
from backbone_infra.targets.local.ports import LOOPBACK, PortAllocator
from backbone_infra.targets.local.process import ProcessNode, ProcessRecord
from backbone_infra.targets.local.service import LocalNodes, start_together, wait_until

__all__ = ["ADMIN_USER", "LocalRedis"]

_PROBE_TIMEOUT_S = 1.0


def _no_retry() -> Retry:
    # A probe asks once: redis-py's default retries would turn one unanswered
    # probe (a paused node, a squatter on the port) into many seconds.
    return Retry(NoBackoff(), 0)


_START_TIMEOUT_S = 30.0


class LocalRedis(LocalNodes):
    """Renders ``spec.redis`` as ``redis-server`` / ``redis-sentinel`` processes."""

    service = "redis"

    @staticmethod
    def check_installed(spec: StackSpec) -> None:
        """Raise :class:`MissingBinaryError` unless the Redis programs are installed."""
        find_binary("redis-server")
        if spec.redis.sentinels:
            find_binary("redis-sentinel")

    # -- layout -------------------------------------------------------------

    @property
    def server_names(self) -> list[str]:
        return [f"redis-{i}" for i in range(1, self.spec.redis.nodes + 1)]

    @property
    def sentinel_names(self) -> list[str]:
        return [f"sentinel-{i}" for i in range(1, self.spec.redis.sentinels + 1)]

    @property
    def sentinel_mode(self) -> bool:
        return self.spec.redis.sentinels > 0

    # -- prepare --------------------------------------------------------------

    def prepare(self, ports: PortAllocator, peers: Mapping[str, LocalService]) -> None:
        """Choose ports and write one config file per node (0600, 0700 dirs)."""
        self._ensure_certificates()
        server_bin = find_binary("redis-server")
        sentinel_bin = find_binary("redis-sentinel") if self.sentinel_mode else ""
        root = self.dir / "redis"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True, mode=0o700)
        os.chmod(root, 0o700)
        self.records = []
        server_ports = {name: ports.allocate() for name in self.server_names}
        primary_port = server_ports[self.server_names[0]]
        for name, port in server_ports.items():
            conf = root / name / "redis.conf"
            replica_of = None if name == self.server_names[0] else primary_port
            write_private(conf, self._server_conf(conf.parent, port, replica_of))
            self.records.append(
                self._new_record(
                    name, [server_bin, str(conf)], cwd=conf.parent, ports={"client": port}
                )
            )
        for name in self.sentinel_names:
            port = ports.allocate()
            conf = root / name / "sentinel.conf"
            write_private(conf, self._sentinel_conf(conf.parent, port, primary_port))
            self.records.append(
                self._new_record(
                    name, [sentinel_bin, str(conf)], cwd=conf.parent, ports={"client": port}
                )
            )

    def _server_conf(self, data_dir: Path, port: int, replica_of: int | None) -> str:
        return redis_conf(
            self.spec.redis,
            bind=LOOPBACK,
            port=port,
            announce_host=LOOPBACK,
            data_dir=str(data_dir),
            primary=None if replica_of is None else HostPort(host=LOOPBACK, port=replica_of),
            password=self.secrets.redis_password,
            admin_password=self.secrets.redis_admin_password,
            exporter_password=self.secrets.redis_exporter_password,
            tls=self.tls,
            consumer_password=self.secrets.redis_consumer_password,
            reader_password=self.secrets.redis_reader_password,
        )

    def _sentinel_conf(self, data_dir: Path, port: int, primary_port: int) -> str:
        return sentinel_conf(
            self.spec.redis,
            bind=LOOPBACK,
            port=port,
            announce_host=LOOPBACK,
            data_dir=str(data_dir),
            primary=HostPort(host=LOOPBACK, port=primary_port),
            password=self.secrets.sentinel_password,
            admin_password=self.secrets.redis_admin_password,
            tls=self.tls,
        )

    # -- clients ----------------------------------------------------------------

    def _tls_kwargs(self) -> dict[str, Any]:
        # Verified like any client: the stack's CA, host names checked.
        ca = self.ca_file
        if ca is None:
            return {}
        return {"ssl": True, "ssl_ca_certs": ca, "ssl_check_hostname": True}

    def _client(self, name: str, *, admin: bool = False) -> redis.Redis:
        if name.startswith("sentinel-"):
            return redis.Redis(
                host=LOOPBACK,
                port=self._port(name),
                password=self.secrets.sentinel_password,
                socket_timeout=_PROBE_TIMEOUT_S,
                socket_connect_timeout=_PROBE_TIMEOUT_S,
                retry=_no_retry(),
                **self._tls_kwargs(),
            )
        user = ADMIN_USER if admin else self.spec.redis.username
        password = self.secrets.redis_admin_password if admin else self.secrets.redis_password
        return redis.Redis(
            host=LOOPBACK,
            port=self._port(name),
            username=user,
            password=password,
            socket_timeout=_PROBE_TIMEOUT_S,
            socket_connect_timeout=_PROBE_TIMEOUT_S,
            retry=_no_retry(),
            **self._tls_kwargs(),
        )

    def _sentinel(self) -> Sentinel:
        return Sentinel(
            [(LOOPBACK, self._port(n)) for n in self.sentinel_names],
            socket_timeout=_PROBE_TIMEOUT_S,
            sentinel_kwargs={
                "password": self.secrets.sentinel_password,
                "socket_timeout": _PROBE_TIMEOUT_S,
                "retry": _no_retry(),
                **self._tls_kwargs(),
            },
            retry=_no_retry(),
            username=self.spec.redis.username,
            password=self.secrets.redis_password,
            **self._tls_kwargs(),
        )

    def _ping(self, name: str) -> bool:
        with self._client(name) as client:
            return bool(client.ping())

    # -- start --------------------------------------------------------------------

    def node(self, name: str) -> ProcessNode:
        return ProcessNode(self._record(name), ready=lambda: self._ping(name))

    def start(self) -> dict[str, float]:
        """Primary, then replicas, then Sentinels; ready when the replicas'
        links are up, every Sentinel knows the others and the replicas, and the
        application user's PING works through Sentinel."""
        began = time.monotonic()
        first = self.server_names[0]
        timings = {first: self.node(first).start(timeout=_START_TIMEOUT_S)}
        timings |= self._start_together(self.server_names[1:])
        if self.sentinel_mode:
            # Sentinels learn replicas from the primary's INFO, which they poll
            # every 10 s: start them once the replicas are attached, so the
            # first INFO already lists them.
            self._wait_until(self._replicas_linked, "replication links")
            timings |= self._start_together(self.sentinel_names)
            self._wait_until(self._sentinels_converged, "Sentinel topology")
        timings[self.service] = time.monotonic() - began
        return timings

    def _start_together(self, names: list[str]) -> dict[str, float]:
        timings, errors = start_together([self.node(n) for n in names], timeout=_START_TIMEOUT_S)
        if errors:
            raise errors[0]
        return timings

    def _replicas_linked(self) -> bool:
        for name in self.server_names[1:]:
            with self._client(name, admin=True) as c:
                if c.info("replication").get("master_link_status") != "up":
                    raise RuntimeError(f"{name}: replication link not up")
        return True

    def _sentinels_converged(self) -> bool:
        m = self.spec.redis.master_name
        for name in self.sentinel_names:
            with self._client(name) as c:
                state = c.sentinel_master(m)
            if int(state.get("num-slaves", 0)) < self.spec.redis.replicas:
                raise RuntimeError(f"{name}: sees {state.get('num-slaves')} replicas")
            if int(state.get("num-other-sentinels", 0)) < self.spec.redis.sentinels - 1:
                raise RuntimeError(
                    f"{name}: sees {state.get('num-other-sentinels')} other Sentinels"
                )
        if not self._sentinel().master_for(m, socket_timeout=_PROBE_TIMEOUT_S).ping():
            raise RuntimeError("PING through Sentinel failed")
        return True

    def _wait_until(self, check: Callable[[], bool], what: str) -> None:
        wait_until(
            check,
            what,
            _START_TIMEOUT_S,
            node=self.service,
            log=Path(self.records[-1].log),
            hint="each node's log is in the stack's logs/ directory",
        )

    # -- outputs and roles ----------------------------------------------------------

    def connection(self) -> RedisConnection:
        r = self.spec.redis
        password: Any = self.secrets.redis_password
        if self.sentinel_mode:
            return RedisConnection(
                mode="sentinel",
                sentinels=[
                    HostPort(host=LOOPBACK, port=self._port(n)) for n in self.sentinel_names
                ],
                master_name=r.master_name,
                username=r.username,
                password=password,
                sentinel_password=self.secrets.sentinel_password,
                tls=self.ca_file is not None,
                ssl_cafile=self.ca_file,
            )
        return RedisConnection(
            mode="standalone",
            host=LOOPBACK,
            port=self._port(self.server_names[0]),
            username=r.username,
            password=password,
            tls=self.ca_file is not None,
            ssl_cafile=self.ca_file,
        )

    def roles(self) -> dict[str, str]:
        """``primary`` / ``replica`` per server as INFO reports it, ``sentinel``
        per Sentinel; ``down`` or ``paused`` for nodes that do not answer."""

        def ask(rec: ProcessRecord) -> str:
            if rec.name.startswith("sentinel-"):
                return "sentinel"
            with self._client(rec.name, admin=True) as c:
                role = c.info("replication").get("role")
            return "primary" if role == "master" else "replica"

        return self._roles(ask, unreachable=(redis.RedisError,))

    def primary(self) -> str:
        """The node the Sentinels name as primary (the only server when standalone)."""
        if not self.sentinel_mode:
            return self.server_names[0]
        by_port = {self._port(n): n for n in self.server_names}
        errors = []
        for name in self.sentinel_names:
            node = ProcessNode(self._record(name))
            if not node.running() or node.paused():
                continue
            try:
                with self._client(name) as c:
                    addr = c.sentinel_get_master_addr_by_name(self.spec.redis.master_name)
                if addr:
                    return by_port[int(addr[1])]
            except (redis.RedisError, KeyError) as exc:
                errors.append(f"{name}: {exc}")
        raise RuntimeError(f"no Sentinel names a Redis primary ({'; '.join(errors) or 'none up'})")
