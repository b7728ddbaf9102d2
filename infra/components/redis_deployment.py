"""``RedisDeployment``: a Redis primary, its replicas and Sentinels, with exporters.

The primary is replica 0 when a stack first comes up; after a Sentinel
failover any replica may be primary, so a restarting node asks the Sentinels
for the current primary before choosing to replicate. Clients authenticate as
the ACL user ``spec.redis.username``; the ``default`` user is disabled. The
``admin`` user serves replication, Sentinel and the exporter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi

from backbone.connections import HostPort
from infra.monitoring.prometheus import JOB_REDIS, JOB_REDIS_SENTINEL
from infra.spec import StackSpec
from infra.targets.workload import (
    SIDECAR_RESOURCES,
    Backend,
    Container,
    File,
    Probe,
    StatefulService,
    secret_file,
)

__all__ = ["ADMIN_USER", "RedisDeployment", "RedisDeploymentArgs"]

ADMIN_USER = "admin"
SERVICE = "redis"
SENTINEL_SERVICE = "redis-sentinel"
REDIS_UID = 999
EXPORTER_UID = 59000
SENTINEL_STORAGE = "1Gi"
CONF_DIR = "/opt/backbone/redis"
SECRET_DIR = "/run/secrets/redis"
EXPORTER_SECRET_DIR = "/run/secrets/redis-exporter"


@dataclass(frozen=True)
class RedisDeploymentArgs:
    spec: StackSpec
    backend: Backend
    password: pulumi.Input[str]
    admin_password: pulumi.Input[str]


def _redis_conf(spec: StackSpec) -> str:
    r = spec.redis
    return "\n".join(
        [
            f"port {r.port}",
            "bind * -::*",
            "dir /data",
            f"appendonly {'yes' if r.appendonly else 'no'}",
            f"maxmemory {r.maxmemory_mb}mb",
            f"maxmemory-policy {r.maxmemory_policy}",
            f"aclfile {SECRET_DIR}/users.acl",
            f"include {SECRET_DIR}/replication.conf",
            "",
        ]
    )


def _acl(spec: StackSpec, password: str, admin_password: str) -> str:
    return (
        "user default off\n"
        f"user {spec.redis.username} on >{password} ~* &* +@all\n"
        f"user {ADMIN_USER} on >{admin_password} ~* &* +@all\n"
    )


def _start_script(spec: StackSpec, backend: Backend) -> str:
    r = spec.redis
    sentinels = " ".join(backend.replica_host(SENTINEL_SERVICE, i) for i in range(r.sentinels))
    return f"""#!/bin/sh
# Start one Redis node: replica 0 is the first primary; afterwards the
# Sentinels know which node is primary, so ask them first.
set -eu
ORD="${{HOSTNAME##*-}}"
CONF=/data/redis-runtime.conf
cat {CONF_DIR}/redis.conf "{CONF_DIR}/node-$ORD.conf" > "$CONF"
PRIMARY=""
for s in {sentinels}; do
  PRIMARY=$(redis-cli -h "$s" -p {r.sentinel_port} --raw \\
    sentinel get-master-addr-by-name {r.master_name} 2>/dev/null | head -n 1) || PRIMARY=""
  [ -n "$PRIMARY" ] && break
done
[ -n "$PRIMARY" ] || PRIMARY={backend.replica_host(SERVICE, 0)}
SELF=$(sed -n 's/^replica-announce-ip //p' "{CONF_DIR}/node-$ORD.conf")
if [ "$PRIMARY" != "$SELF" ]; then
  echo "replicaof $PRIMARY {r.port}" >> "$CONF"
fi
exec docker-entrypoint.sh redis-server "$CONF"
"""


def _sentinel_script(spec: StackSpec, backend: Backend) -> str:
    r = spec.redis
    return f"""#!/bin/sh
# Write sentinel.conf once (Sentinel rewrites it as it learns the topology).
set -eu
ORD="${{HOSTNAME##*-}}"
CONF=/data/sentinel.conf
if [ ! -s "$CONF" ]; then
  {{
    echo "port {r.sentinel_port}"
    echo "dir /data"
    echo "sentinel resolve-hostnames yes"
    echo "sentinel announce-hostnames yes"
    cat "{CONF_DIR}/sentinel-$ORD.conf"
    echo "sentinel monitor {r.master_name} {backend.replica_host(SERVICE, 0)} {r.port} {r.quorum}"
    echo "sentinel down-after-milliseconds {r.master_name} {r.down_after_ms}"
    echo "sentinel failover-timeout {r.master_name} {r.failover_timeout_ms}"
    echo "sentinel parallel-syncs {r.master_name} 1"
    echo "sentinel auth-user {r.master_name} {ADMIN_USER}"
    printf 'sentinel auth-pass {r.master_name} %s\\n' "$(cat {SECRET_DIR}/admin-password)"
  }} > "$CONF"
fi
exec docker-entrypoint.sh redis-server "$CONF" --sentinel
"""


def _probe_script(port: int, auth: bool) -> str:
    login = f'REDISCLI_AUTH="$(cat {SECRET_DIR}/admin-password)" ' if auth else ""
    user = f"--user {ADMIN_USER} " if auth else ""
    return f"#!/bin/sh\n{login}redis-cli {user}-p {port} ping | grep -q PONG\n"


def _exporter(spec: StackSpec, port: int, password_file: File | None) -> Container:
    env = {
        "REDIS_ADDR": f"redis://localhost:{port}",
        "REDIS_EXPORTER_WEB_LISTEN_ADDRESS": f":{spec.redis.exporter_port}",
    }
    if password_file is not None:
        env |= {"REDIS_USER": ADMIN_USER, "REDIS_PASSWORD_FILE": password_file.path}
    return Container(
        name="exporter",
        image=spec.images.redis_exporter,
        ports={"metrics": spec.redis.exporter_port},
        probe=Probe(http_port=spec.redis.exporter_port, http_path="/health"),
        resources=SIDECAR_RESOURCES,
        env=env,
        files=(password_file,) if password_file is not None else (),
        uid=EXPORTER_UID,
    )


class RedisDeployment(pulumi.ComponentResource):
    """Redis for the cache tier: standalone (minimal) or primary + replicas + Sentinels."""

    mode: str
    endpoint: HostPort | None
    sentinels: list[HostPort]
    master_name: str
    username: str
    password: pulumi.Output[str]
    services: list[StatefulService]

    def __init__(
        self, name: str, args: RedisDeploymentArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        # Named RedisCache before 2026-12: the alias keeps existing stacks' URNs.
        alias = pulumi.ResourceOptions(aliases=[pulumi.Alias(type_="backbone:infra:RedisCache")])
        opts = pulumi.ResourceOptions.merge(alias, opts)
        super().__init__("backbone:infra:RedisDeployment", name, None, opts)
        spec, backend, r = args.spec, args.backend, args.spec.redis
        password = pulumi.Output.secret(args.password)
        admin = pulumi.Output.secret(args.admin_password)
        node_files = tuple(
            File(
                CONF_DIR,
                f"node-{i}.conf",
                f"replica-announce-ip {backend.replica_host(SERVICE, i)}\n",
            )
            for i in range(r.nodes)
        )
        redis = StatefulService(
            name=SERVICE,
            replicas=r.nodes,
            client_ports={"redis": r.port},
            metrics_port=r.exporter_port,
            metrics_job=JOB_REDIS,
            storage=spec.resources.storage,
            peers=(SENTINEL_SERVICE,) if r.sentinels else (),
            fs_group=REDIS_UID,
            published={"redis": r.port},
            containers=(
                Container(
                    name="redis",
                    image=spec.images.redis,
                    ports={"redis": r.port},
                    command=("sh", f"{CONF_DIR}/start.sh"),
                    probe=Probe(command=("sh", f"{CONF_DIR}/probe.sh")),
                    resources=spec.resources,
                    data_dir="/data",
                    uid=REDIS_UID,
                    files=(
                        File(CONF_DIR, "redis.conf", _redis_conf(spec)),
                        File(CONF_DIR, "start.sh", _start_script(spec, backend)),
                        File(CONF_DIR, "probe.sh", _probe_script(r.port, auth=True)),
                        *node_files,
                        secret_file(
                            SECRET_DIR,
                            "users.acl",
                            pulumi.Output.all(password, admin).apply(
                                lambda pw: _acl(spec, pw[0], pw[1])
                            ),
                        ),
                        secret_file(
                            SECRET_DIR,
                            "replication.conf",
                            admin.apply(lambda a: f"masteruser {ADMIN_USER}\nmasterauth {a}\n"),
                        ),
                        secret_file(SECRET_DIR, "admin-password", admin),
                    ),
                ),
                _exporter(
                    spec,
                    r.port,
                    secret_file(
                        EXPORTER_SECRET_DIR,
                        "passwords.json",
                        admin.apply(lambda a: json.dumps({f"redis://localhost:{r.port}": a})),
                    ),
                ),
            ),
        )
        self.services = [redis]
        made = backend.stateful_service(redis, self).resources
        if r.sentinels:
            sentinel = StatefulService(
                name=SENTINEL_SERVICE,
                replicas=r.sentinels,
                client_ports={"sentinel": r.sentinel_port},
                metrics_port=r.exporter_port,
                metrics_job=JOB_REDIS_SENTINEL,
                storage=SENTINEL_STORAGE,
                peers=(SERVICE,),
                fs_group=REDIS_UID,
                published={"sentinel": r.sentinel_port},
                containers=(
                    Container(
                        name="sentinel",
                        image=spec.images.redis,
                        ports={"sentinel": r.sentinel_port},
                        command=("sh", f"{CONF_DIR}/sentinel.sh"),
                        probe=Probe(command=("sh", f"{CONF_DIR}/probe.sh")),
                        resources=spec.resources,
                        data_dir="/data",
                        uid=REDIS_UID,
                        files=(
                            File(CONF_DIR, "sentinel.sh", _sentinel_script(spec, backend)),
                            File(CONF_DIR, "probe.sh", _probe_script(r.sentinel_port, auth=False)),
                            *(
                                File(
                                    CONF_DIR,
                                    f"sentinel-{i}.conf",
                                    "sentinel announce-ip "
                                    f"{backend.replica_host(SENTINEL_SERVICE, i)}\n",
                                )
                                for i in range(r.sentinels)
                            ),
                            secret_file(SECRET_DIR, "admin-password", admin),
                        ),
                    ),
                    _exporter(spec, r.sentinel_port, None),
                ),
            )
            self.services.append(sentinel)
            made += backend.stateful_service(sentinel, self).resources

        self.mode = "sentinel" if r.sentinels else "standalone"
        self.master_name = r.master_name
        self.username = r.username
        self.password = password
        self.endpoint = None if r.sentinels else backend.client_endpoint(SERVICE, 0, r.port)
        self.sentinels = [
            backend.client_endpoint(SENTINEL_SERVICE, i, r.sentinel_port)
            for i in range(r.sentinels)
        ]
        self.resources = made
        self.register_outputs(
            {
                "mode": self.mode,
                "endpoint": str(self.endpoint) if self.endpoint else None,
                "sentinels": [str(s) for s in self.sentinels],
                "master_name": self.master_name,
                "username": self.username,
                "password": self.password,
            }
        )
