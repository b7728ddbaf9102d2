"""``RedisDeployment``: a Redis primary, its replicas and Sentinels, with exporters.

``redis.conf`` and ``sentinel.conf`` come from :mod:`backbone_infra.render.redis`, the
renderer the local processes use too; each node gets its own file, mounted
as a secret, and the containers run ``redis-server`` / ``redis-sentinel`` on
it (no image entrypoint). The primary is replica 1 when a stack first comes
up; after a Sentinel failover any replica may be primary, so a restarting
node asks the Sentinels for the current primary before choosing to replicate.
Clients authenticate as
the ACL user ``spec.redis.username``; the ``default`` user is disabled. The
``admin`` user serves replication and Sentinel; the exporter logs in as the
read-only ``exporter`` user (see :mod:`backbone_infra.render.redis`).
Sentinels require their own password (``sentinel_password``, as on local and
podman stacks): every job document with a ``redis`` section carries it, so it
is no principal's password; the nodes' start script and the Sentinels' probe
and exporter read it from the secret file ``sentinel-password``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import pulumi

from backbone.connections import HostPort
from backbone_infra.components.certificates import StackCertificates, service_tls_files
from backbone_infra.render.certificates import TLSFiles
from backbone_infra.render.exporters import (
    redis_exporter_args,
    redis_exporter_passwords,
    redis_exporter_uri,
)
from backbone_infra.render.prometheus import JOB_REDIS, JOB_REDIS_SENTINEL
from backbone_infra.render.redis import ADMIN_USER, redis_conf, sentinel_conf
from backbone_infra.spec import StackSpec
from backbone_infra.targets.workload import (
    FIRST_ORDINAL,
    SIDECAR_RESOURCES,
    Backend,
    Container,
    File,
    Probe,
    StatefulService,
    ordinals,
    secret_file,
)

__all__ = ["ADMIN_USER", "RedisDeployment", "RedisDeploymentArgs"]

SERVICE = "redis"
SENTINEL_SERVICE = "redis-sentinel"
REDIS_UID = 999
EXPORTER_UID = 59000
SENTINEL_STORAGE = "1Gi"
DATA_DIR = "/data"
#: Containers listen on every interface of their network namespace.
BIND_ALL = "* -::*"
CONF_DIR = "/opt/backbone/redis"
SECRET_DIR = "/run/secrets/redis"
EXPORTER_SECRET_DIR = "/run/secrets/redis-exporter"
#: The secret file (in ``SECRET_DIR``) holding the Sentinels' password.
SENTINEL_PASSWORD_FILE = "sentinel-password"


@dataclass(frozen=True)
class RedisDeploymentArgs:
    spec: StackSpec
    backend: Backend
    password: pulumi.Input[str]
    admin_password: pulumi.Input[str]
    #: The read-only ``exporter`` ACL user's password (backbone_infra.render.redis).
    exporter_password: pulumi.Input[str]
    #: The stack's certificates: TLS on every port (``None`` only with ``--no-tls``).
    certificates: StackCertificates | None = None
    #: The per-job users' passwords (consumer, reader: backbone_infra.render.redis);
    #: ``None`` renders no such users.
    job_passwords: tuple[pulumi.Input[str], pulumi.Input[str]] | None = None
    #: Every Sentinel's ``requirepass`` (clients get it as ``sentinel_password``);
    #: ``None``: the Sentinels require ``password``, the application's (as before
    #: the Sentinel had a secret of its own).
    sentinel_password: pulumi.Input[str] | None = None


def _tls(args: RedisDeploymentArgs) -> TLSFiles | None:
    return service_tls_files(SERVICE) if args.certificates is not None else None


def _cli_tls(tls: TLSFiles | None) -> str:
    """redis-cli's TLS options: the stack's CA, host names as dialled."""
    return f"--tls --cacert {tls.ca} " if tls is not None else ""


def _primary(backend: Backend, spec: StackSpec) -> HostPort:
    """The first primary: replica 1, as locally."""
    return HostPort(host=backend.replica_host(SERVICE, FIRST_ORDINAL), port=spec.redis.port)


def _server_conf(
    spec: StackSpec, backend: Backend, tls: TLSFiles | None, ordinal: int, pw: list[str]
) -> str:
    return redis_conf(
        spec.redis,
        bind=BIND_ALL,
        port=spec.redis.port,
        announce_host=backend.replica_host(SERVICE, ordinal),
        data_dir=DATA_DIR,
        primary=None if ordinal == FIRST_ORDINAL else _primary(backend, spec),
        password=pw[0],
        admin_password=pw[1],
        exporter_password=pw[2],
        tls=tls,
        consumer_password=pw[3] if len(pw) > 3 else None,
        reader_password=pw[4] if len(pw) > 4 else None,
    )


def _sentinel_conf(
    spec: StackSpec, backend: Backend, tls: TLSFiles | None, ordinal: int, pw: list[str]
) -> str:
    """``pw``: the Sentinels' own password, then the admin's (``auth-pass``)."""
    return sentinel_conf(
        spec.redis,
        bind=BIND_ALL,
        port=spec.redis.sentinel_port,
        announce_host=backend.replica_host(SENTINEL_SERVICE, ordinal),
        data_dir=DATA_DIR,
        primary=_primary(backend, spec),
        password=pw[0],
        admin_password=pw[1],
        tls=tls,
    )


def _start_script(spec: StackSpec, backend: Backend, tls: TLSFiles | None) -> str:
    r = spec.redis
    sentinels = " ".join(backend.replica_host(SENTINEL_SERVICE, i) for i in ordinals(r.sentinels))
    return f"""#!/bin/sh
# Start one Redis node from its rendered redis.conf. After a failover the
# Sentinels know which node is primary: ask them first and follow it.
set -eu
umask 077
ORD="${{HOSTNAME##*-}}"
SOURCE="{SECRET_DIR}/redis-$ORD.conf"
CONF={DATA_DIR}/redis-runtime.conf
PRIMARY=""
for s in {sentinels}; do
  PRIMARY=$(REDISCLI_AUTH="$(cat {SECRET_DIR}/{SENTINEL_PASSWORD_FILE})" \
    redis-cli {_cli_tls(tls)}-h "$s" -p {r.sentinel_port} \
    --raw sentinel get-master-addr-by-name {r.master_name} 2>/dev/null | head -n 1) || PRIMARY=""
  [ -n "$PRIMARY" ] && break
done
if [ -n "$PRIMARY" ]; then
  grep -v '^replicaof ' "$SOURCE" > "$CONF"
  SELF=$(sed -n 's/^replica-announce-ip //p' "$SOURCE")
  [ "$PRIMARY" = "$SELF" ] || echo "replicaof $PRIMARY {r.port}" >> "$CONF"
else
  cat "$SOURCE" > "$CONF"
fi
exec redis-server "$CONF"
"""


#: The ``sentinel.conf`` lines that hold a password, as rendered and as Sentinel
#: rewrites them (``user default`` is its rewrite of ``requirepass``).
_SENTINEL_AUTH_LINES = ("requirepass ", "sentinel sentinel-pass ", "sentinel auth-pass ")


def _sentinel_script(*, data_dir: str = DATA_DIR, secret_dir: str = SECRET_DIR) -> str:
    """Copy sentinel.conf once, since Sentinel rewrites it as it learns the
    topology; on a restart keep what it learned and take the passwords from
    the mounted file again, so a changed ``redisSentinelPassword`` (or admin
    password) reaches a Sentinel whose volume holds an older copy."""
    keep = " ".join(f"-e '^{line}'" for line in (*_SENTINEL_AUTH_LINES, "user default "))
    take = " ".join(f"-e '^{line}'" for line in _SENTINEL_AUTH_LINES)
    return f"""#!/bin/sh
set -eu
umask 077
ORD="${{HOSTNAME##*-}}"
SOURCE="{secret_dir}/sentinel-$ORD.conf"
CONF={data_dir}/sentinel.conf
if [ -s "$CONF" ]; then
  grep -v {keep} "$CONF" > "$CONF.new" || true
  grep {take} "$SOURCE" >> "$CONF.new"
  mv "$CONF.new" "$CONF"
else
  cat "$SOURCE" > "$CONF"
fi
exec redis-sentinel "$CONF"
"""


def _probe_script(port: int, tls: TLSFiles | None, *, admin: bool) -> str:
    # -h localhost: the name the certificate carries for a container's own probe.
    cli = f"redis-cli {_cli_tls(tls)}-h localhost -p {port}"
    if admin:
        return (
            f'#!/bin/sh\nREDISCLI_AUTH="$(cat {SECRET_DIR}/admin-password)" '
            f"{cli} --user {ADMIN_USER} ping | grep -q PONG\n"
        )
    return (
        f'#!/bin/sh\nREDISCLI_AUTH="$(cat {SECRET_DIR}/{SENTINEL_PASSWORD_FILE})" '
        f"{cli} ping | grep -q PONG\n"
    )


def _exporter(
    spec: StackSpec,
    port: int,
    password: pulumi.Output[str],
    sentinel: bool,
    certificates: StackCertificates | None,
) -> Container:
    """The exporter sidecar, with the arguments the local exporters run with."""
    tls = certificates is not None
    uri = redis_exporter_uri("localhost", port, tls=tls)
    password_file = secret_file(
        EXPORTER_SECRET_DIR,
        "passwords.json",
        password.apply(partial(redis_exporter_passwords, uri)),
    )
    return Container(
        name="exporter",
        image=spec.images.redis_exporter,
        ports={"metrics": spec.redis.exporter_port},
        args=tuple(
            redis_exporter_args(
                spec.redis,
                redis_uri=uri,
                listen=f":{spec.redis.exporter_port}",
                password_file=password_file.path,
                sentinel=sentinel,
                ca_file=service_tls_files(SERVICE).ca if tls else None,
            )
        ),
        probe=Probe(http_port=spec.redis.exporter_port, http_path="/health"),
        resources=SIDECAR_RESOURCES,
        files=(password_file, *([certificates.ca_file()] if certificates is not None else [])),
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
        exporter = pulumi.Output.secret(args.exporter_password)
        jobs = [pulumi.Output.secret(p) for p in args.job_passwords or ()]
        both = pulumi.Output.all(password, admin, exporter, *jobs)
        sentinel_pw = (
            password
            if args.sentinel_password is None
            else pulumi.Output.secret(args.sentinel_password)
        )
        sentinel_auth = pulumi.Output.all(sentinel_pw, admin)
        # Only the start script reads it: it asks the Sentinels for the primary.
        sentinel_pw_file = secret_file(SECRET_DIR, SENTINEL_PASSWORD_FILE, sentinel_pw)
        tls = _tls(args)
        certs = args.certificates
        tls_mounts = certs.files(SERVICE) if certs is not None else ()
        server_confs = tuple(
            secret_file(
                SECRET_DIR,
                f"redis-{i}.conf",
                both.apply(partial(_server_conf, spec, backend, tls, i)),
            )
            for i in ordinals(r.nodes)
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
                    data_dir=DATA_DIR,
                    uid=REDIS_UID,
                    run_as_uid=True,
                    files=(
                        File(CONF_DIR, "start.sh", _start_script(spec, backend, tls)),
                        File(CONF_DIR, "probe.sh", _probe_script(r.port, tls, admin=True)),
                        *server_confs,
                        *tls_mounts,
                        secret_file(SECRET_DIR, "admin-password", admin),
                        *([sentinel_pw_file] if r.sentinels else []),
                    ),
                ),
                _exporter(spec, r.port, exporter, sentinel=False, certificates=certs),
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
                        data_dir=DATA_DIR,
                        uid=REDIS_UID,
                        run_as_uid=True,
                        files=(
                            File(CONF_DIR, "sentinel.sh", _sentinel_script()),
                            File(
                                CONF_DIR,
                                "probe.sh",
                                _probe_script(r.sentinel_port, tls, admin=False),
                            ),
                            *tls_mounts,
                            *(
                                secret_file(
                                    SECRET_DIR,
                                    f"sentinel-{i}.conf",
                                    sentinel_auth.apply(
                                        partial(_sentinel_conf, spec, backend, tls, i)
                                    ),
                                )
                                for i in ordinals(r.sentinels)
                            ),
                            sentinel_pw_file,
                        ),
                    ),
                    _exporter(
                        spec, r.sentinel_port, sentinel_pw, sentinel=True, certificates=certs
                    ),
                ),
            )
            self.services.append(sentinel)
            made += backend.stateful_service(sentinel, self).resources

        self.tls = certs is not None
        self.mode = "sentinel" if r.sentinels else "standalone"
        self.master_name = r.master_name
        self.username = r.username
        self.password = password
        #: What clients present to a Sentinel (``None``: no Sentinels).
        self.sentinel_password: pulumi.Output[str] | None = sentinel_pw if r.sentinels else None
        self.endpoint = (
            None if r.sentinels else backend.client_endpoint(SERVICE, FIRST_ORDINAL, r.port)
        )
        self.sentinels = [
            backend.client_endpoint(SENTINEL_SERVICE, i, r.sentinel_port)
            for i in ordinals(r.sentinels)
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
