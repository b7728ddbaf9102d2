"""Container configs are the local renderings, re-bound for a container's network.

What a service *listens* on moves to every interface of its container (the
engine forwards published ports to the container's address); what it
*advertises* to clients, its credentials and its settings stay as rendered.
TLS is on by default, with the stack's files mounted at ``configs.TLS_DIR``;
``--no-tls`` renders plain text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from backbone.connections import HostPort
from backbone_harness.containers import configs
from backbone_harness.containers.services import (
    ETCD,
    etcd_server,
    kafka_broker,
    postgres_server,
    postgres_standby,
    redis_server,
    sentinel,
    tls_volumes,
)
from backbone_infra.render.kafka import KafkaNodePorts
from backbone_infra.render.redis import password_hash
from backbone_infra.spec import build_spec
from backbone_infra.targets.local.secrets import StackSecrets

#: The podman stacks' spec: TLS, as every stack by default.
SPEC = build_spec("cfg", size="minimal")
PLAIN = build_spec("cfg", size="minimal", tls=False)
HA = build_spec("cfg", size="ha")
ports = st.integers(min_value=1024, max_value=65535)


@settings(max_examples=25, deadline=None)
@given(port=ports)
def test_redis_listens_everywhere_and_keeps_its_users(port: int) -> None:
    secrets = StackSecrets()
    text = configs.redis_conf(SPEC, secrets, port=port)
    assert re.search(r"^bind \* -::\*$", text, re.M)  # every IPv4 and (if any) IPv6 address
    # TLS only on the one port: plain text closed (port 0), replication over TLS.
    assert re.search(rf"^tls-port {port}$", text, re.M) and re.search(r"^port 0$", text, re.M)
    assert "tls-replication yes" in text
    assert re.search(rf"^tls-key-file {configs.TLS_DIR}/redis\.key$", text, re.M)
    plain = configs.redis_conf(PLAIN, secrets, port=port)
    assert re.search(rf"^port {port}$", plain, re.M) and "tls-port" not in plain
    assert "bind 127.0.0.1" not in text
    assert re.search(r"^user default off\b", text, re.M)
    assert f" {password_hash(secrets.redis_password)} " in text
    assert re.search(rf"^dir {configs.REDIS_DATA}$", text, re.M)


@settings(max_examples=25, deadline=None)
@given(client=ports, internal=ports, controller=ports, metrics=ports)
def test_kafka_binds_everywhere_but_advertises_the_hosts_loopback(
    client: int, internal: int, controller: int, metrics: int
) -> None:
    node = KafkaNodePorts(client=client, internal=internal, controller=controller, metrics=metrics)
    text = configs.kafka_server_properties(SPEC, StackSecrets(), ports=node)
    listeners = re.search(r"^listeners=(.*)$", text, re.M)
    advertised = re.search(r"^advertised\.listeners=(.*)$", text, re.M)
    assert listeners and advertised
    assert listeners.group(1) == (
        f"CLIENT://0.0.0.0:{client},INTERNAL://0.0.0.0:{internal},CONTROLLER://0.0.0.0:{controller}"
    )
    assert advertised.group(1) == f"CLIENT://127.0.0.1:{client},INTERNAL://127.0.0.1:{internal}"
    assert re.search(rf"^log\.dirs={configs.KAFKA_DATA}$", text, re.M)
    protocols = re.search(r"^listener\.security\.protocol\.map=(.*)$", text, re.M)
    assert protocols and protocols.group(1) == (
        "CLIENT:SASL_SSL,INTERNAL:SASL_SSL,CONTROLLER:SASL_SSL"
    )
    assert f"ssl.keystore.location={configs.TLS_DIR}/kafka-keystore.pem" in text


def test_postgres_listens_everywhere_and_keeps_scram_only() -> None:
    secrets = StackSecrets()
    conf = configs.postgresql_conf(SPEC, secrets, port=5433)
    assert "listen_addresses = '*'" in conf and "port = 5433" in conf
    assert "password_encryption = 'scram-sha-256'" in conf
    assert "timescaledb" not in conf  # Debian's PostgreSQL in the image has no TimescaleDB
    hba = configs.postgres_hba(SPEC, secrets)
    rules = [line.split() for line in hba.splitlines() if line.strip()]
    assert rules and all(rule[-1] == "scram-sha-256" for rule in rules)
    # pg_hba and postgresql.conf agree: hostssl rules only with ssl = on, the
    # key being the copy the postgres user owns.
    assert all(rule[0] == "hostssl" for rule in rules)
    assert "ssl = on" in conf and f"ssl_key_file = '{configs.POSTGRES_KEY}'" in conf
    plain = configs.postgresql_conf(PLAIN, secrets, port=5433)
    assert "ssl = off" in plain
    assert all(
        line.split()[0] == "host"
        for line in configs.postgres_hba(PLAIN, secrets).splitlines()
        if line.strip()
    )


def test_the_redis_exporter_container_logs_in_as_the_read_only_exporter_user() -> None:
    from backbone_harness.containers.services import redis_exporter
    from backbone_infra.render.redis import EXPORTER_USER

    secrets = StackSecrets()
    container = redis_exporter(SPEC, secrets, redis_port=6379, port=9121)
    assert f"--redis.user={EXPORTER_USER}" in container.command
    assert f"--redis.user={SPEC.redis.username}" not in container.command
    (content,) = container.files.values()
    # It scrapes over TLS, verifying the server with the stack's CA.
    assert json.loads(content) == {"rediss://127.0.0.1:6379": secrets.redis_exporter_password}
    assert f"--tls-ca-cert-file={configs.TLS_DIR}/ca.crt" in container.command
    assert secrets.redis_password not in content


def test_each_container_mounts_its_own_certificate_and_keys_go_to_its_user(tmp_path: Path) -> None:
    """Read-only mounts; a key (or Kafka's keystore) is handed to the image's user
    with podman's ``U``; no container mounts another service's key."""
    secrets = StackSecrets()
    first = HostPort(host="127.0.0.1", port=6379)
    node = KafkaNodePorts(client=1, internal=2, controller=3, metrics=4)
    containers = {
        "redis": [
            redis_server(SPEC, secrets, port=6379),
            sentinel(
                SPEC, secrets, name="sentinel-1", port=1, primary=first, shares_network_of="x"
            ),
        ],
        "kafka": [kafka_broker(SPEC, secrets, ports=node, cluster_id="c")],
        "postgres": [
            postgres_server(SPEC, secrets, port=5432),
            postgres_standby(
                SPEC,
                secrets,
                name="postgres-2",
                port=5433,
                primary=HostPort(host="postgres-1", port=5432),
            ),
        ],
    }
    for service, group in containers.items():
        for container in group:
            volumes = tls_volumes(container, tmp_path)
            assert (str(tmp_path / "ca.crt"), f"{configs.TLS_DIR}/ca.crt", "ro") in volumes
            private = [v for v in volumes if v[0].endswith((".key", "-keystore.pem"))]
            assert private and all(v[2] == "ro,U" for v in private)
            assert all(Path(v[0]).name.startswith((service, "ca.")) for v in volumes)
            assert all(v[2].startswith("ro") for v in volumes)
    standby = containers["postgres"][1]
    script = standby.command[-1]
    assert "sslmode=verify-full" in script and f"sslrootcert={configs.TLS_DIR}/ca.crt" in script
    for container in containers["postgres"]:
        assert (
            f"install -m 600 {configs.TLS_DIR}/postgres.key {configs.POSTGRES_KEY}"
            in container.command[-1]
        )
    # Without TLS nothing is mounted and the standby clones in plain text.
    assert tls_volumes(redis_server(PLAIN, secrets, port=6379), tmp_path) == []
    plain_standby = postgres_standby(
        PLAIN, secrets, name="postgres-2", port=5433, primary=HostPort(host="postgres-1", port=5432)
    )
    assert "sslmode=disable" in plain_standby.command[-1]


def test_certificates_name_what_the_host_and_the_peers_dial() -> None:
    """Clients on the host dial 127.0.0.1 (published ports); on ha the brokers
    dial each other as kafka-N (INTERNAL, CONTROLLER) and the standbys clone
    from postgres-1, so those names are in the certificates too."""
    from backbone_harness.containers.stack import certificate_hosts

    ha = certificate_hosts(build_spec("cfg", size="ha"))
    assert all(ha[s][:2] == ["127.0.0.1", "localhost"] for s in ("redis", "kafka", "postgres"))
    assert {"kafka-1", "kafka-2", "kafka-3"} <= set(ha["kafka"])
    assert {"postgres-1", "postgres-2"} <= set(ha["postgres"])
    assert {"redis-1", "redis-2", "sentinel-1"} <= set(ha["redis"])
    minimal = certificate_hosts(SPEC)
    assert minimal["kafka"] == ["127.0.0.1", "localhost", "kafka-1"]


@settings(max_examples=25, deadline=None)
@given(port=ports, rest=ports)
def test_compose_patroni_nodes_dial_each_other_by_name_over_verified_tls(
    port: int, rest: int
) -> None:
    """A node listens on every interface at the published port and is dialled by
    its container name (which its certificate carries); Patroni's own
    connections verify the peer; the server reads its 0600 key copy and admits
    TLS only; etcd is dialled by name too."""
    from backbone_harness.containers.stack import certificate_hosts

    secrets = StackSecrets()
    member = configs.patroni_member("postgres-3", port=port, rest_port=rest)
    config = yaml.safe_load(configs.patroni_yml(HA, secrets, member, etcd_hosts=["etcd-1:2379"]))
    pg = config["postgresql"]
    assert config["name"] == "postgres-3" and config["etcd3"]["hosts"] == ["etcd-1:2379"]
    assert (pg["listen"], pg["connect_address"]) == (f"0.0.0.0:{port}", f"postgres-3:{port}")
    assert config["restapi"] == {
        "listen": f"0.0.0.0:{rest}",
        "connect_address": f"postgres-3:{rest}",
    }
    assert pg["data_dir"] == configs.POSTGRES_DATA and pg["bin_dir"] == configs.POSTGRES_BIN
    assert "postgres-3" in certificate_hosts(HA)["postgres"]
    for role in ("superuser", "replication"):
        assert pg["authentication"][role]["sslmode"] == "verify-full"
        assert pg["authentication"][role]["sslrootcert"] == f"{configs.TLS_DIR}/ca.crt"
    assert pg["authentication"]["replication"]["password"] == secrets.replication_password
    params = config["bootstrap"]["dcs"]["postgresql"]["parameters"]
    assert params["ssl"] == "on" and params["ssl_key_file"] == configs.POSTGRES_KEY
    assert {line.split()[0] for line in pg["pg_hba"] if line.startswith("host")} == {"hostssl"}
    plain_spec = build_spec("cfg", size="ha", tls=False)
    plain = yaml.safe_load(configs.patroni_yml(plain_spec, secrets, member, etcd_hosts=["e:1"]))
    assert "sslmode" not in plain["postgresql"]["authentication"]["superuser"]
    assert "hostssl" not in {line.split()[0] for line in plain["postgresql"]["pg_hba"]}


def test_patronis_etcd_listens_everywhere_and_advertises_its_container_name() -> None:
    etcd = etcd_server(HA)
    assert etcd.name == ETCD and etcd.command[0] == "etcd" and etcd.ports == ()
    assert "--advertise-client-urls=http://etcd-1:2379" in etcd.command
    assert "--listen-client-urls=http://0.0.0.0:2379" in etcd.command
    assert "--initial-cluster=etcd-1=http://etcd-1:2380" in etcd.command
