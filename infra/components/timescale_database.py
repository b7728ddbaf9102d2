"""``TimescaleDatabase``: TimescaleDB primary and streaming standbys, with an exporter.

Replica 0 initialises the cluster: the image's entrypoint creates the
database, runs the init scripts (roles, ``pg_hba`` for replication, the bars
schema from :func:`backbone.store.schema.schema_sql` as the application role)
and starts PostgreSQL. Every other replica starts as a ``pg_basebackup`` copy
of replica 0 and streams from it; with ``spec.postgres.synchronous`` commits
wait for one standby. Telemetry is off (``timescaledb.telemetry_level=off``).

Passwords reach PostgreSQL only as files: ``POSTGRES_PASSWORD_FILE`` for the
superuser, psql's ``\\set x `cat file` `` for the roles (never a command line),
a ``.pgpass`` for the standby and ``DATA_SOURCE_PASS_FILE`` for the exporter.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from backbone.connections import HostPort
from backbone.store.schema import schema_sql
from infra.monitoring.prometheus import JOB_POSTGRES
from infra.spec import StackSpec
from infra.targets.workload import (
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

__all__ = ["TimescaleDatabase", "TimescaleDatabaseArgs", "server_settings"]

SERVICE = "timescale"
SUPERUSER = "postgres"
POSTGRES_UID = 1000
EXPORTER_UID = 65534
HOME = "/home/postgres"
PGDATA = f"{HOME}/pgdata/data"
CONF_DIR = "/opt/backbone/timescale"
INITDB_DIR = "/docker-entrypoint-initdb.d"
SECRET_DIR = "/run/secrets/timescale"
EXPORTER_SECRET_DIR = "/run/secrets/timescale-exporter"


@dataclass(frozen=True)
class TimescaleDatabaseArgs:
    spec: StackSpec
    backend: Backend
    password: pulumi.Input[str]
    superuser_password: pulumi.Input[str]
    replication_password: pulumi.Input[str]


def server_settings(spec: StackSpec) -> dict[str, str]:
    """The ``postgres -c`` settings of every node (standbys ignore primary-only ones)."""
    p = spec.postgres
    settings = {
        "shared_preload_libraries": "timescaledb",
        "timescaledb.telemetry_level": "off",
        "listen_addresses": "*",
        "port": str(p.port),
        "wal_level": "replica",
        "max_wal_senders": "10",
        "max_replication_slots": "10",
        "hot_standby": "on",
        "wal_keep_size": "512MB",
    }
    if p.standbys and p.synchronous:
        settings |= {"synchronous_standby_names": "ANY 1 (*)", "synchronous_commit": "on"}
    return settings


def _roles_script(spec: StackSpec) -> str:
    p = spec.postgres
    return f"""#!/bin/sh
# Roles and replication access (runs once, when replica 0 initialises).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
\\set app_pw `cat {SECRET_DIR}/app-password`
\\set repl_pw `cat {SECRET_DIR}/replication-password`
CREATE ROLE {p.user} LOGIN PASSWORD :'app_pw';
CREATE ROLE {p.replication_user} REPLICATION LOGIN PASSWORD :'repl_pw';
ALTER DATABASE {p.dbname} OWNER TO {p.user};
GRANT ALL ON SCHEMA public TO {p.user};
CREATE EXTENSION IF NOT EXISTS timescaledb;
SQL
echo "host replication {p.replication_user} all scram-sha-256" >> "$PGDATA/pg_hba.conf"
"""


def _schema_script(spec: StackSpec) -> str:
    return f"""#!/bin/sh
# The bars schema, owned by the application role.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
SET ROLE {spec.postgres.user};
\\i {CONF_DIR}/schema.sql
SQL
"""


def _start_script(spec: StackSpec, backend: Backend) -> str:
    p = spec.postgres
    args = " ".join(f"-c '{k}={v}'" for k, v in server_settings(spec).items())
    primary = backend.replica_host(SERVICE, FIRST_ORDINAL)
    return f"""#!/bin/sh
# Replica 0 is the primary; any other replica starts as a streaming copy of it.
set -eu
ORD="${{HOSTNAME##*-}}"
export PGDATA={PGDATA}
if [ "$ORD" != "{FIRST_ORDINAL}" ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  install -m 0600 {SECRET_DIR}/pgpass "$HOME/.pgpass"
  mkdir -p "$PGDATA"
  until pg_basebackup -h {primary} -p {p.port} -U {p.replication_user} -D "$PGDATA" \\
      -R -X stream --no-password; do
    echo "waiting for the primary {primary}" >&2; rm -rf "$PGDATA"/*; sleep 3
  done
fi
# The image's entrypoint (initdb, init scripts, POSTGRES_PASSWORD_FILE) runs postgres.
ENTRY=$(command -v docker-entrypoint.sh || echo /docker-entrypoint.sh)
exec "$ENTRY" postgres {args}
"""


class TimescaleDatabase(pulumi.ComponentResource):
    """TimescaleDB with the bars schema: a primary plus ``spec.postgres.standbys``."""

    hosts: list[HostPort]
    dbname: str
    user: str
    password: pulumi.Output[str]
    services: list[StatefulService]

    def __init__(
        self, name: str, args: TimescaleDatabaseArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("backbone:infra:TimescaleDatabase", name, None, opts)
        spec, backend, p = args.spec, args.backend, args.spec.postgres
        password = pulumi.Output.secret(args.password)
        superuser = pulumi.Output.secret(args.superuser_password)
        replication = pulumi.Output.secret(args.replication_password)
        schema = schema_sql(
            timescaledb=True,
            chunk_interval_days=p.chunk_interval_days,
            compress_after_days=p.compress_after_days,
            retention_days=p.retention_days,
        )
        database = StatefulService(
            name=SERVICE,
            replicas=p.nodes,
            client_ports={"postgres": p.port},
            metrics_port=p.exporter_port,
            metrics_job=JOB_POSTGRES,
            storage=spec.resources.storage,
            fs_group=POSTGRES_UID,
            published={"postgres": p.port},
            containers=(
                Container(
                    name="timescaledb",
                    image=spec.images.timescale,
                    ports={"postgres": p.port},
                    command=("sh", f"{CONF_DIR}/start.sh"),
                    env={
                        "POSTGRES_USER": SUPERUSER,
                        "POSTGRES_DB": p.dbname,
                        "POSTGRES_PASSWORD_FILE": f"{SECRET_DIR}/superuser-password",
                        "PGDATA": PGDATA,
                    },
                    probe=Probe(
                        command=("pg_isready", "-h", "127.0.0.1", "-p", str(p.port)),
                        initial_delay_s=20,
                    ),
                    resources=spec.resources,
                    data_dir=f"{HOME}/pgdata",
                    uid=POSTGRES_UID,
                    files=(
                        File(CONF_DIR, "start.sh", _start_script(spec, backend)),
                        File(CONF_DIR, "schema.sql", schema),
                        File(INITDB_DIR, "010-roles.sh", _roles_script(spec)),
                        File(INITDB_DIR, "020-schema.sh", _schema_script(spec)),
                        secret_file(SECRET_DIR, "superuser-password", superuser),
                        secret_file(SECRET_DIR, "app-password", password),
                        secret_file(SECRET_DIR, "replication-password", replication),
                        secret_file(
                            SECRET_DIR,
                            "pgpass",
                            replication.apply(
                                lambda r: f"*:{p.port}:replication:{p.replication_user}:{r}\n"
                            ),
                        ),
                    ),
                ),
                Container(
                    name="exporter",
                    image=spec.images.postgres_exporter,
                    ports={"metrics": p.exporter_port},
                    args=(f"--web.listen-address=:{p.exporter_port}",),
                    env={
                        "DATA_SOURCE_URI": f"localhost:{p.port}/{p.dbname}?sslmode=disable",
                        "DATA_SOURCE_USER": SUPERUSER,
                        "DATA_SOURCE_PASS_FILE": f"{EXPORTER_SECRET_DIR}/superuser-password",
                    },
                    probe=Probe(http_port=p.exporter_port, http_path="/metrics"),
                    resources=SIDECAR_RESOURCES,
                    uid=EXPORTER_UID,
                    files=(secret_file(EXPORTER_SECRET_DIR, "superuser-password", superuser),),
                ),
            ),
        )
        self.services = [database]
        self.resources = backend.stateful_service(database, self).resources
        self.hosts = [backend.client_endpoint(SERVICE, i, p.port) for i in ordinals(p.nodes)]
        self.dbname = p.dbname
        self.user = p.user
        self.password = password
        self.register_outputs(
            {
                "hosts": [str(h) for h in self.hosts],
                "dbname": self.dbname,
                "user": self.user,
                "password": self.password,
            }
        )
