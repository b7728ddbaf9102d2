"""Container configs are the local renderings, re-bound for a container's network.

What a service *listens* on moves to every interface of its container (the
engine forwards published ports to the container's address); what it
*advertises* to clients, its credentials and its settings stay as rendered.
"""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from backbone_harness.containers import configs
from backbone_harness.containers.stack import COMPOSE_TLS
from backbone_infra.render.kafka import KafkaNodePorts
from backbone_infra.render.redis import password_hash
from backbone_infra.spec import build_spec
from backbone_infra.targets.local.secrets import StackSecrets

#: The podman stacks' spec: plain text until TLS reaches them (COMPOSE_TLS).
SPEC = build_spec("cfg", size="minimal", tls=COMPOSE_TLS)
ports = st.integers(min_value=1024, max_value=65535)


@settings(max_examples=25, deadline=None)
@given(port=ports)
def test_redis_listens_everywhere_and_keeps_its_users(port: int) -> None:
    secrets = StackSecrets()
    text = configs.redis_conf(SPEC, secrets, port=port)
    assert re.search(r"^bind \* -::\*$", text, re.M)  # every IPv4 and (if any) IPv6 address
    # The podman stacks' Redis listens on the one port, in plain text (COMPOSE_TLS).
    assert re.search(rf"^port {port}$", text, re.M) and "tls-port" not in text
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


def test_postgres_listens_everywhere_and_keeps_scram_only() -> None:
    secrets = StackSecrets()
    conf = configs.postgresql_conf(SPEC, secrets, port=5433)
    assert "listen_addresses = '*'" in conf and "port = 5433" in conf
    assert "password_encryption = 'scram-sha-256'" in conf
    assert "timescaledb" not in conf  # Debian's PostgreSQL in the image has no TimescaleDB
    hba = configs.postgres_hba(SPEC, secrets)
    rules = [line.split() for line in hba.splitlines() if line.strip()]
    assert rules and all(rule[-1] == "scram-sha-256" for rule in rules)
    # pg_hba and postgresql.conf agree: hostssl rules only with ssl = on.
    assert all(rule[0] == ("hostssl" if SPEC.tls else "host") for rule in rules)
    assert ("ssl = on" in conf) == SPEC.tls


def test_the_redis_exporter_container_logs_in_as_the_read_only_exporter_user() -> None:
    from backbone_harness.containers.services import redis_exporter
    from backbone_infra.render.redis import EXPORTER_USER

    secrets = StackSecrets()
    container = redis_exporter(SPEC, secrets, redis_port=6379, port=9121)
    assert f"--redis.user={EXPORTER_USER}" in container.command
    assert f"--redis.user={SPEC.redis.username}" not in container.command
    (content,) = container.files.values()
    assert json.loads(content) == {"redis://127.0.0.1:6379": secrets.redis_exporter_password}
    assert secrets.redis_password not in content
