"""LocalMonitoring before anything runs: what it scrapes, where credentials
go (0600 files, never a command line, an environment or the saved records),
and that a bad config is refused before a process starts."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from backbone.connections import TOPIC_NAMES, KafkaConnection, TopicInfo
from backbone_harness.errors import ServiceStartError
from backbone_infra.render.redis import EXPORTER_USER
from backbone_infra.spec import MonitoringSpec, build_spec
from backbone_infra.targets.local.monitoring import LocalMonitoring
from backbone_infra.targets.local.ports import PortAllocator
from backbone_infra.targets.local.process import ProcessRecord
from backbone_infra.targets.local.secrets import StackSecrets

pytestmark = pytest.mark.skipif(
    not all(
        shutil.which(b)
        for b in (
            "prometheus",
            "promtool",
            "prometheus-redis-exporter",
            "prometheus-postgres-exporter",
        )
    ),
    reason="Prometheus and the exporters are not installed; run `make setup`",
)


KAFKA_PASSWORD = "kafka-client-secret-0123456789"


class _Peer:
    def __init__(self, service: str, names: list[str], **extra_ports: int) -> None:
        self.service = service
        self.records = [
            ProcessRecord(name, service, ["x"], "log", ports={"client": 1000 + i, **extra_ports})
            for i, name in enumerate(names)
        ]

    def connection(self) -> KafkaConnection:
        """The client section the lag exporter reads (Kafka peers only)."""
        return KafkaConnection(
            bootstrap_servers=[f"127.0.0.1:{r.ports['client']}" for r in self.records],
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-512",
            username="backbone",
            password=SecretStr(KAFKA_PASSWORD),
            topics={
                logical: TopicInfo(name=name, partitions=1, replication_factor=1)
                for logical, name in TOPIC_NAMES.items()
            },
        )


def _peers() -> dict[str, _Peer]:
    return {
        "redis": _Peer("redis", ["redis-1", "redis-2", "sentinel-1"]),
        "postgres": _Peer("postgres", ["postgres-1", "postgres-2"]),
        "kafka": _Peer("kafka", ["kafka-1"], metrics=2001),
    }


def _prepared(tmp_path: Path) -> tuple[LocalMonitoring, StackSecrets]:
    secrets = StackSecrets()
    mon = LocalMonitoring(build_spec("t", size="ha"), tmp_path, secrets)
    mon.prepare(PortAllocator(), _peers())  # type: ignore[arg-type]
    return mon, secrets


def test_one_exporter_per_redis_and_postgres_node_and_every_broker_scraped(tmp_path) -> None:
    mon, _ = _prepared(tmp_path)
    assert [r.name for r in mon.records] == [
        "exporter-redis-1", "exporter-redis-2", "exporter-sentinel-1",
        "exporter-postgres-1", "exporter-postgres-2", "exporter-kafka-lag", "alertmanager",
        "prometheus",
    ]  # fmt: skip
    config = yaml.safe_load(mon.config_path.read_text())
    nodes = {
        job["job_name"]: sorted(s.get("labels", {}).get("node", "") for s in job["static_configs"])
        for job in config["scrape_configs"]
    }
    assert nodes["redis"] == ["redis-1", "redis-2"]
    assert nodes["redis-sentinel"] == ["sentinel-1"]
    assert nodes["postgres"] == ["postgres-1", "postgres-2"]
    assert nodes["kafka"] == ["kafka-1"]
    assert "backbone" in nodes
    assert nodes["kafka-lag"] == ["exporter-kafka-lag"]
    assert nodes["alertmanager"] == ["alertmanager"]
    assert config["global"]["scrape_interval"] == "1s"
    am_port = next(r for r in mon.records if r.name == "alertmanager").ports["http"]
    assert config["alerting"]["alertmanagers"] == [
        {"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}
    ]
    assert config["global"]["external_labels"]["runbook_base"].endswith("/docs/runbooks")
    conn = mon.connection()
    assert conn is not None and conn.prometheus_url == mon.prometheus_url
    assert conn.alertmanager_url == f"http://127.0.0.1:{am_port}"
    assert conn.backbone_metrics_port == mon.backbone_metrics_port


def test_credentials_live_only_in_private_files(tmp_path) -> None:
    mon, secrets = _prepared(tmp_path)
    saved = json.dumps([r.to_dict() for r in mon.records]) + mon.config_path.read_text()
    for secret in (
        secrets.redis_password,
        secrets.redis_exporter_password,
        secrets.postgres_superuser_password,
        KAFKA_PASSWORD,
    ):
        assert secret not in saved
    lag_settings = mon.root / "lag-exporter.yaml"
    assert stat.S_IMODE(lag_settings.stat().st_mode) == 0o600
    # The lag exporter logs in as the DESCRIBE-only monitoring principal.
    lag_kafka = yaml.safe_load(lag_settings.read_text())["kafka"]
    assert lag_kafka["password"] == secrets.kafka_monitor_password
    assert lag_kafka["username"] == "backbone-monitor"
    private = [p for p in mon.root.iterdir() if "password" in p.name]
    assert len(private) == 5
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(mon.root.stat().st_mode) == 0o700
    redis_file = json.loads((mon.root / "redis-1.redis-password.json").read_text())
    # The server's exporter logs in as the read-only exporter user, not the
    # application; TLS by default: it dials rediss:// and is keyed by that URI.
    assert redis_file == {"rediss://127.0.0.1:1000": secrets.redis_exporter_password}
    assert any(f"--redis.user={EXPORTER_USER}" in r.command for r in mon.records)


def test_a_broken_config_is_refused_before_anything_starts(tmp_path) -> None:
    mon, _ = _prepared(tmp_path)
    mon.config_path.write_text("global:\n  scrape_interval: whenever\n")
    with pytest.raises(ServiceStartError, match="prometheus has an invalid config") as err:
        mon.start()
    assert str(mon.config_path) in str(err.value)
    assert all(r.pid is None for r in mon.records)


def test_monitoring_off_means_no_nodes_and_no_section(tmp_path) -> None:
    spec = build_spec("t").model_copy(update={"monitoring": MonitoringSpec(enabled=False)})
    mon = LocalMonitoring(spec, tmp_path, StackSecrets())
    mon.prepare(PortAllocator(), _peers())  # type: ignore[arg-type]
    assert mon.records == []
    assert mon.start() == {}
    assert mon.connection() is None
