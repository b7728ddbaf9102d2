"""``TimescaleDatabase``: TimescaleDB primary and streaming standbys, with an exporter.

``postgresql.conf``, ``pg_hba.conf``, the roles and the schema come from
:mod:`backbone_infra.render.postgres` and :mod:`backbone.store.schema`, as for the local
processes. The container runs PostgreSQL's own programs on them (no image
entrypoint): on its first start replica 1 runs ``initdb``, starts on loopback,
creates the roles, the database, the extension and the bars schema (as the
application role), and restarts as the primary; every other replica starts as
a ``pg_basebackup`` copy of replica 1 and streams from it. With
``spec.postgres.synchronous`` commits wait for one standby (``ANY 1 (*)``).
Telemetry is off (``timescaledb.telemetry_level=off``).

Passwords reach PostgreSQL only as files: ``initdb --pwfile`` for the
superuser, SCRAM verifiers in a secret SQL file for the roles, a ``.pgpass``
for the bootstrap and the standby, ``DATA_SOURCE_PASS_FILE`` for the exporter.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi

from backbone.connections import HostPort
from backbone.store.schema import schema_statements
from backbone_infra.components.certificates import StackCertificates, service_tls_files
from backbone_infra.render.certificates import TLSFiles
from backbone_infra.render.exporters import postgres_exporter_args, postgres_exporter_env
from backbone_infra.render.postgres import (
    INITDB_ARGS,
    SUPERUSER,
    as_owner,
    bootstrap_statements,
    grant_statements,
    job_roles,
    monitor_role,
    pg_hba_conf,
    postgresql_conf,
    reader_role,
    scram_verifier,
)
from backbone_infra.render.prometheus import JOB_POSTGRES
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

__all__ = ["TimescaleDatabase", "TimescaleDatabaseArgs"]

SERVICE = "timescale"
POSTGRES_UID = 1000
EXPORTER_UID = 65534
HOME = "/home/postgres"
PGDATA = f"{HOME}/pgdata/data"
CONF_DIR = "/opt/backbone/timescale"
SECRET_DIR = "/run/secrets/timescale"
EXPORTER_SECRET_DIR = "/run/secrets/timescale-exporter"


@dataclass(frozen=True)
class TimescaleDatabaseArgs:
    spec: StackSpec
    backend: Backend
    password: pulumi.Input[str]
    superuser_password: pulumi.Input[str]
    replication_password: pulumi.Input[str]
    reader_password: pulumi.Input[str]
    monitor_password: pulumi.Input[str]
    #: The stack's certificates: ``ssl=on``, ``hostssl`` only (``None`` only with ``--no-tls``).
    certificates: StackCertificates | None = None
    #: The writer's and the consumer's role passwords (``render.postgres.job_roles``);
    #: ``None`` creates no such roles.
    job_passwords: tuple[pulumi.Input[str], pulumi.Input[str]] | None = None


#: PostgreSQL refuses a key others can read: the start script copies the
#: mounted key here, 0600 and its own (outside PGDATA, which initdb wants empty).
SERVER_KEY = f"{HOME}/tls/server.key"


def _server_tls(certs: StackCertificates | None) -> TLSFiles | None:
    if certs is None:
        return None
    mounted = service_tls_files(SERVICE)
    return TLSFiles(ca=mounted.ca, cert=mounted.cert, key=SERVER_KEY, keystore=mounted.keystore)


def _salt(spec: StackSpec, role: str) -> bytes:
    # A stable salt per stack and role: an unchanged password renders an
    # unchanged file, so Pulumi shows no diff on every preview.
    return hashlib.sha256(f"{spec.name}/{role}/scram".encode()).digest()[:16]


def _bootstrap_sql(spec: StackSpec, pw: list[str]) -> str:
    p = spec.postgres
    statements = bootstrap_statements(
        p,
        password_verifier=scram_verifier(pw[0], salt=_salt(spec, p.user)),
        replication_verifier=scram_verifier(pw[1], salt=_salt(spec, p.replication_user)),
        reader_verifier=scram_verifier(pw[3], salt=_salt(spec, reader_role(p))),
        monitor_verifier=scram_verifier(pw[4], salt=_salt(spec, monitor_role(p))),
        job_verifiers={
            role: scram_verifier(secret, salt=_salt(spec, role))
            for role, secret in zip(job_roles(p), pw[5:7], strict=False)
        },
    )
    return "".join(f"{s};\n" for s in statements)


def _bootstrap_pgpass(spec: StackSpec, pw: list[str]) -> str:
    p = spec.postgres
    return (
        f"127.0.0.1:{p.port}:*:{SUPERUSER}:{pw[2]}\n"
        f"127.0.0.1:{p.port}:*:{p.user}:{pw[0]}\n"
        f"*:{p.port}:replication:{p.replication_user}:{pw[1]}\n"
    )


def _start_script(spec: StackSpec, backend: Backend, tls: TLSFiles | None) -> str:
    """initdb and bootstrap replica 1 once (as the local provisioner does), clone
    any other replica from it, then run ``postgres`` on the rendered files."""
    p = spec.postgres
    primary = backend.replica_host(SERVICE, FIRST_ORDINAL)
    psql = f'"$PGBIN/psql" -h 127.0.0.1 -p {p.port} -v ON_ERROR_STOP=1 -X -q'
    key = f"install -D -m 0600 {service_tls_files(SERVICE).key} {tls.key}\n" if tls else ""
    # A standby clones over TLS, verifying the primary's certificate and name.
    clone_ssl = f' -d "sslmode=verify-full sslrootcert={tls.ca}"' if tls else ""
    return f"""#!/bin/sh
set -eu
umask 077
ORD="${{HOSTNAME##*-}}"
PGDATA={PGDATA}
PGBIN=$(dirname "$(command -v postgres || echo /usr/lib/postgresql/{p.version}/bin/postgres)")
export PGPASSFILE="$HOME/.pgpass"
cat {SECRET_DIR}/pgpass > "$PGPASSFILE"
{key}if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA"
  if [ "$ORD" = "{FIRST_ORDINAL}" ]; then
    "$PGBIN/initdb" -D "$PGDATA" {" ".join(INITDB_ARGS)} --pwfile={SECRET_DIR}/superuser-password
    cat {CONF_DIR}/postgresql.conf >> "$PGDATA/postgresql.conf"
    cat {CONF_DIR}/pg_hba.conf > "$PGDATA/pg_hba.conf"
    # Bootstrap on loopback, before any standby exists to wait for.
    "$PGBIN/pg_ctl" -D "$PGDATA" -w -o "-p {p.port} -c listen_addresses=127.0.0.1 \
        -c synchronous_standby_names=" start
    {psql} -U {SUPERUSER} -d postgres -f {SECRET_DIR}/bootstrap.sql
    {psql} -U {SUPERUSER} -d {p.dbname} -f {CONF_DIR}/extension.sql
    {psql} -U {SUPERUSER} -d {p.dbname} -f {CONF_DIR}/schema.sql
    "$PGBIN/pg_ctl" -D "$PGDATA" -w stop
  else
    until "$PGBIN/pg_basebackup" -h {primary} -p {p.port} -U {p.replication_user} \
        -D "$PGDATA" -R -X stream --checkpoint=fast --no-password{clone_ssl}; do
      echo "waiting for the primary {primary}" >&2; rm -rf "$PGDATA"/*; sleep 3
    done
  fi
fi
exec "$PGBIN/postgres" -D "$PGDATA" -p {p.port}
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
        extension, *schema = schema_statements(
            timescaledb=True,
            chunk_interval_days=p.chunk_interval_days,
            compress_after_days=p.compress_after_days,
            retention_days=p.retention_days,
        )
        reader = pulumi.Output.secret(args.reader_password)
        monitor = pulumi.Output.secret(args.monitor_password)
        jobs = [pulumi.Output.secret(j) for j in args.job_passwords or ()]
        secrets = pulumi.Output.all(password, replication, superuser, reader, monitor, *jobs)
        certs = args.certificates
        tls = _server_tls(certs)
        ca = service_tls_files(SERVICE).ca if certs is not None else None
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
                    probe=Probe(
                        command=("pg_isready", "-h", "127.0.0.1", "-p", str(p.port)),
                        initial_delay_s=20,
                    ),
                    resources=spec.resources,
                    data_dir=f"{HOME}/pgdata",
                    uid=POSTGRES_UID,
                    files=(
                        File(CONF_DIR, "start.sh", _start_script(spec, backend, tls)),
                        File(
                            CONF_DIR,
                            "postgresql.conf",
                            postgresql_conf(p, listen="*", timescaledb=True, tls=tls),
                        ),
                        File(
                            CONF_DIR,
                            "pg_hba.conf",
                            pg_hba_conf(p, network="all", tls=certs is not None),
                        ),
                        *(certs.files(SERVICE) if certs is not None else ()),
                        File(CONF_DIR, "extension.sql", f"{extension};\n"),
                        File(
                            CONF_DIR,
                            "schema.sql",
                            # As the owner role; then the application's DML grants.
                            "".join(
                                f"{s};\n"
                                for s in [
                                    *as_owner(schema, p),
                                    *grant_statements(p, with_job_roles=bool(jobs)),
                                ]
                            ),
                        ),
                        secret_file(SECRET_DIR, "superuser-password", superuser),
                        secret_file(
                            SECRET_DIR,
                            "bootstrap.sql",
                            secrets.apply(lambda pw: _bootstrap_sql(spec, pw)),
                        ),
                        secret_file(
                            SECRET_DIR,
                            "pgpass",
                            secrets.apply(lambda pw: _bootstrap_pgpass(spec, pw)),
                        ),
                    ),
                ),
                Container(
                    name="exporter",
                    image=spec.images.postgres_exporter,
                    ports={"metrics": p.exporter_port},
                    args=tuple(postgres_exporter_args(listen=f":{p.exporter_port}")),
                    env=postgres_exporter_env(
                        p,
                        server=f"localhost:{p.port}",
                        password_file=f"{EXPORTER_SECRET_DIR}/monitor-password",
                        sslrootcert=ca,
                    ),
                    probe=Probe(http_port=p.exporter_port, http_path="/metrics"),
                    resources=SIDECAR_RESOURCES,
                    uid=EXPORTER_UID,
                    files=(
                        secret_file(EXPORTER_SECRET_DIR, "monitor-password", monitor),
                        *([certs.ca_file()] if certs is not None else []),
                    ),
                ),
            ),
        )
        self.services = [database]
        self.resources = backend.stateful_service(database, self).resources
        self.hosts = [backend.client_endpoint(SERVICE, i, p.port) for i in ordinals(p.nodes)]
        self.tls = certs is not None
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
