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

Under Patroni (``spec.postgres.patroni``, the ``ha`` size) every replica runs
``patroni patroni-<ordinal>.yml`` instead, rendered by
:mod:`backbone_infra.render.patroni` as for the local processes, with an etcd
beside it (:mod:`backbone_infra.components.etcd_store`): Patroni bootstraps
the first node that wins the leader key, runs the roles/schema SQL there once
(``post_bootstrap``), clones the others, keeps commits waiting for any
``synchronous_node_count`` standbys (quorum) and promotes one when the primary
is lost. Which replica is primary then changes, so clients list every replica
(``target_session_attrs=read-write``), and the Kubernetes client Service
selects every replica ready by Patroni's ``/readiness``, not the primary.

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
from backbone_infra.components.etcd_store import etcd_hosts, etcd_service
from backbone_infra.render.certificates import TLSFiles
from backbone_infra.render.exporters import postgres_exporter_args, postgres_exporter_env
from backbone_infra.render.patroni import PatroniMember, patroni_config, patroni_yaml
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
#: Where Patroni writes the replication password for pg_basebackup/pg_rewind.
PATRONI_PGPASS = f"{HOME}/.pgpass.patroni"


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
    """The roles and database; under Patroni without the replication role,
    which Patroni creates (with its password) while bootstrapping."""
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
    if p.patroni is not None:
        ours = f"CREATE ROLE {p.replication_user} "
        statements = [s for s in statements if not s.startswith(ours)]
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


#: Patroni's liveness: its REST API answers (the HA loop runs). Asked with the
#: image's Python (Patroni's), so Docker's health check needs no HTTP tool.
_PATRONI_ALIVE = (
    "import sys, urllib.request as u; "
    "sys.exit(u.urlopen('http://127.0.0.1:{port}/liveness', timeout=4).status != 200)"
)


def _patroni_probe(rest_port: int) -> Probe:
    """Alive while Patroni answers; ready (Kubernetes) once Patroni says the
    node may take traffic (``/readiness``: the leader, or a streaming standby).
    Not PostgreSQL's ``pg_isready``: Patroni stops and restarts postgres itself
    (a clone, a rewind), and a container restart then would only interrupt it."""
    return Probe(
        command=("python3", "-c", _PATRONI_ALIVE.format(port=rest_port)),
        initial_delay_s=30,
        readiness=Probe(http_port=rest_port, http_path="/readiness"),
    )


def _patroni_start_script(tls: TLSFiles | None) -> str:
    """Copy the server key 0600 and the bootstrap ``.pgpass``, then run
    Patroni on this replica's ``patroni.yml`` (chosen by the ordinal)."""
    key = f"install -D -m 0600 {service_tls_files(SERVICE).key} {tls.key}\n" if tls else ""
    return f"""#!/bin/sh
set -eu
umask 077
ORD="${{HOSTNAME##*-}}"
cat {SECRET_DIR}/pgpass > "$HOME/.pgpass"
{key}exec patroni {SECRET_DIR}/patroni-"$ORD".yml
"""


def _post_bootstrap_script(spec: StackSpec) -> str:
    """Run by Patroni once, on the node that bootstrapped the cluster: the
    roles, the database, the extension and the bars schema, as replica 1 of a
    plain stack creates them. Patroni passes a connection string; the
    script connects to its own postgres on loopback as the superuser instead,
    with the bootstrap ``.pgpass``."""
    p = spec.postgres
    psql = f'"$PGBIN/psql" -h 127.0.0.1 -p {p.port} -v ON_ERROR_STOP=1 -X -q -U {SUPERUSER}'
    return f"""#!/bin/sh
set -eu
PGBIN={_bin_dir(spec)}
export PGPASSFILE="$HOME/.pgpass"
{psql} -d postgres -f {SECRET_DIR}/bootstrap.sql
{psql} -d {p.dbname} -f {CONF_DIR}/extension.sql
{psql} -d {p.dbname} -f {CONF_DIR}/schema.sql
"""


def _bin_dir(spec: StackSpec) -> str:
    # Where the image's PostgreSQL packages put the server programs.
    return f"/usr/lib/postgresql/{spec.postgres.version}/bin"


def _patroni_member(spec: StackSpec, backend: Backend, ordinal: int) -> PatroniMember:
    """Replica ``ordinal`` as Patroni names it: the replica's own name and address."""
    p, patroni = spec.postgres, spec.postgres.patroni
    assert patroni is not None  # only called for a spec under Patroni
    host = backend.replica_host(SERVICE, ordinal)
    return PatroniMember(
        name=f"{SERVICE}-{ordinal}",
        listen=f"0.0.0.0:{p.port}",
        connect_address=f"{host}:{p.port}",
        rest_listen=f"0.0.0.0:{patroni.rest_port}",
        rest_connect_address=f"{host}:{patroni.rest_port}",
        data_dir=PGDATA,
        bin_dir=_bin_dir(spec),
        pgpass=PATRONI_PGPASS,
    )


def _patroni_yml(
    spec: StackSpec, backend: Backend, ordinal: int, tls: TLSFiles | None, pw: list[str]
) -> str:
    """``patroni-<ordinal>.yml``: the shared rendering, with this target's places."""
    config = patroni_config(
        spec.postgres,
        _patroni_member(spec, backend, ordinal),
        etcd_hosts=etcd_hosts(spec, backend),
        network="all",
        superuser_password=pw[2],
        replication_password=pw[1],
        timescaledb=True,
        tls=tls,
        # Patroni's own connections (superuser, replication, pg_rewind) verify
        # the server's certificate and name with the stack's CA.
        client_ssl={"sslmode": "verify-full", "sslrootcert": tls.ca} if tls else None,
        post_bootstrap=f"sh {CONF_DIR}/post-bootstrap.sh",
    )
    return patroni_yaml(config)


class TimescaleDatabase(pulumi.ComponentResource):
    """TimescaleDB with the bars schema: a primary plus ``spec.postgres.standbys``,
    under Patroni with an etcd when ``spec.postgres.patroni`` is set."""

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
                self._server(spec, backend, certs, tls, secrets, superuser, job_roles=bool(jobs)),
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
        # Prometheus scrapes the database's exporters; etcd is Patroni's, not
        # a monitored service (as locally).
        self.services = [database]
        self.resources = []
        if p.patroni is not None:
            store = etcd_service(spec, backend, client=SERVICE)
            self.resources += backend.stateful_service(store, self).resources
        self.resources += backend.stateful_service(database, self).resources
        # Every replica, in ordinal order: the primary is whichever one
        # answers read-write (Patroni may have promoted any).
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

    @staticmethod
    def _server(
        spec: StackSpec,
        backend: Backend,
        certs: StackCertificates | None,
        tls: TLSFiles | None,
        secrets: pulumi.Output[list[str]],
        superuser: pulumi.Output[str],
        *,
        job_roles: bool,
    ) -> Container:
        """The replica's main container: plain PostgreSQL, or Patroni running it.
        ``job_roles``: the writer's and the consumer's roles exist and get their grants."""
        p = spec.postgres
        extension, *schema = schema_statements(
            timescaledb=True,
            chunk_interval_days=p.chunk_interval_days,
            compress_after_days=p.compress_after_days,
            retention_days=p.retention_days,
        )
        certificates = certs.files(SERVICE) if certs is not None else ()
        sql = (
            File(CONF_DIR, "extension.sql", f"{extension};\n"),
            File(
                CONF_DIR,
                "schema.sql",
                # As the owner role; then the application's and the jobs' DML grants.
                "".join(
                    f"{s};\n"
                    for s in [
                        *as_owner(schema, p),
                        *grant_statements(p, with_job_roles=job_roles),
                    ]
                ),
            ),
        )
        bootstrap_secrets = (
            secret_file(
                SECRET_DIR, "bootstrap.sql", secrets.apply(lambda pw: _bootstrap_sql(spec, pw))
            ),
            secret_file(
                SECRET_DIR, "pgpass", secrets.apply(lambda pw: _bootstrap_pgpass(spec, pw))
            ),
        )
        if p.patroni is not None:
            return Container(
                name="timescaledb",
                image=spec.images.timescale,
                ports={"postgres": p.port, "patroni": p.patroni.rest_port},
                command=("sh", f"{CONF_DIR}/start.sh"),
                probe=_patroni_probe(p.patroni.rest_port),
                resources=spec.resources,
                data_dir=f"{HOME}/pgdata",
                uid=POSTGRES_UID,
                files=(
                    File(CONF_DIR, "start.sh", _patroni_start_script(tls)),
                    File(CONF_DIR, "post-bootstrap.sh", _post_bootstrap_script(spec)),
                    *certificates,
                    *sql,
                    *bootstrap_secrets,
                    # One file per replica (they hold the superuser and
                    # replication passwords); each replica reads its own.
                    *(
                        secret_file(
                            SECRET_DIR,
                            f"patroni-{i}.yml",
                            secrets.apply(
                                lambda pw, i=i: _patroni_yml(spec, backend, i, tls, pw)  # type: ignore[misc]
                            ),
                        )
                        for i in ordinals(p.nodes)
                    ),
                ),
            )
        return Container(
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
                File(CONF_DIR, "pg_hba.conf", pg_hba_conf(p, network="all", tls=certs is not None)),
                *certificates,
                *sql,
                secret_file(SECRET_DIR, "superuser-password", superuser),
                *bootstrap_secrets,
            ),
        )
