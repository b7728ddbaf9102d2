"""The broker-side lag exporter on loopback (``backbone lag-exporter``).

kafka_exporter is not packaged for these machines, so every environment runs
the backbone's own exporter (:mod:`backbone.stream.broker_lag`): committed and
log-end offsets of every consumer group, read from the brokers at scrape time.
Node name ``exporter-kafka-lag``, scrape job ``kafka-lag``.

The exporter reads the monitoring principal's Kafka credentials
(``spec.kafka.monitor_username``: DESCRIBE on topics and groups, no record) from a 0600 YAML file
named by ``BACKBONE_CONFIG``: only the file's path is in the process record.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from backbone.connections import KafkaConnection
from backbone_infra.targets.local.files import write_private
from backbone_infra.targets.local.ports import LOOPBACK
from backbone_infra.targets.local.process import ProcessRecord

__all__ = ["LAG_EXPORTER", "lag_exporter_record"]

LAG_EXPORTER = "exporter-kafka-lag"


def lag_exporter_record(
    kafka: KafkaConnection, *, root: Path, logs: Path, port: int, service: str
) -> ProcessRecord:
    """Write the exporter's 0600 settings file and return the process to start."""
    settings = {
        "kafka": {
            "bootstrap_servers": list(kafka.bootstrap_servers),
            "security_protocol": kafka.security_protocol,
            "sasl_mechanism": kafka.sasl_mechanism,
            "username": kafka.username,
            "password": kafka.password.get_secret_value() if kafka.password else None,
            "ssl_cafile": kafka.ssl_cafile,
        }
    }
    config = write_private(root / "lag-exporter.yaml", yaml.safe_dump(settings))
    return ProcessRecord(
        name=LAG_EXPORTER,
        service=service,
        command=[
            sys.executable,
            "-m",
            "backbone",
            "--log-level",
            "warning",
            "lag-exporter",
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            # A local stack scrapes every second; measure as often.
            "--interval",
            "1",
        ],
        log=str(logs / f"{LAG_EXPORTER}.log"),
        cwd=str(root),
        # An outputs document inherited from the caller's shell must not win.
        env={"BACKBONE_CONFIG": str(config), "BACKBONE_OUTPUTS": ""},
        ports={"http": port},
    )
