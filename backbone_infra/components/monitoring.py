"""``Monitoring``: Prometheus scraping every exporter, with the shared alert
rules, and Grafana with a provisioned Prometheus datasource and the dashboards.

The scrape config is rendered by :func:`backbone_infra.render.prometheus.render_prometheus_config`
(the same renderer the local environment uses) from the services the other
components declared: one target per replica at its exporter port, plus the
backbone's own ``/metrics``, Prometheus itself and Grafana. The rules file and
dashboards are the ones in ``backbone_infra/monitoring/``; nothing here holds a copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml

from backbone_infra.monitoring.alertmanager import render_alertmanager_config
from backbone_infra.monitoring.assets import dashboards_dir, rules_file
from backbone_infra.render.prometheus import (
    JOB_ALERTMANAGER,
    JOB_BACKBONE,
    JOB_KAFKA_LAG,
    JOB_PROMETHEUS,
    ScrapeTarget,
    alert_rules,
    prometheus_yaml,
    render_prometheus_config,
    runbook_base_url,
)
from backbone_infra.spec import StackSpec
from backbone_infra.targets.workload import (
    FIRST_ORDINAL,
    Backend,
    Container,
    File,
    Probe,
    StatefulService,
    ordinals,
    secret_file,
)

__all__ = [
    "JOB_GRAFANA",
    "Monitoring",
    "MonitoringArgs",
    "dashboard_files",
    "rules_text",
    "scrape_targets",
]

PROMETHEUS = "prometheus"
GRAFANA = "grafana"
ALERTMANAGER = "alertmanager"
ALERTMANAGER_UID = 65534
AM_DIR = "/etc/alertmanager/backbone"
JOB_GRAFANA = "grafana"
PROMETHEUS_UID = 65534
GRAFANA_UID = 472
PROM_DIR = "/etc/prometheus/backbone"
GRAFANA_PROVISIONING = "/etc/grafana/provisioning"
DASHBOARDS_DIR = "/opt/backbone/dashboards"
GRAFANA_SECRET_DIR = "/run/secrets/grafana"
#: Used only while backbone_infra/monitoring/rules.yml does not exist (a partial checkout).
_EMPTY_RULES = "groups: []\n"


@dataclass(frozen=True)
class MonitoringArgs:
    spec: StackSpec
    backend: Backend
    #: The stateful services whose exporters Prometheus scrapes.
    services: Sequence[StatefulService]
    grafana_admin_password: pulumi.Input[str]


def scrape_targets(
    spec: StackSpec, backend: Backend, services: Sequence[StatefulService]
) -> list[ScrapeTarget]:
    """Every exporter of ``services``, the backbone's metrics, Prometheus and Grafana."""
    m = spec.monitoring
    targets = [
        ScrapeTarget(
            job=svc.metrics_job,
            address=f"{backend.replica_host(svc.name, i)}:{svc.metrics_port}",
            labels={"node": f"{svc.name}-{i}"},
        )
        for svc in services
        for i in ordinals(svc.replicas)
    ]
    targets += [
        ScrapeTarget(JOB_BACKBONE, backend.backbone_metrics_target(m.backbone_metrics_port)),
        ScrapeTarget(JOB_PROMETHEUS, f"localhost:{m.prometheus_port}"),
        ScrapeTarget(
            JOB_GRAFANA, f"{backend.replica_host(GRAFANA, FIRST_ORDINAL)}:{m.grafana_port}"
        ),
        ScrapeTarget(
            JOB_ALERTMANAGER,
            f"{backend.replica_host(ALERTMANAGER, FIRST_ORDINAL)}:{m.alertmanager_port}",
        ),
        # backbone lag-exporter (backbone_infra/components/backbone_ingest.py).
        ScrapeTarget(
            JOB_KAFKA_LAG,
            f"{backend.replica_host('kafka-lag', FIRST_ORDINAL)}:{m.lag_exporter_port}",
        ),
    ]
    return targets


def rules_text() -> str:
    """The shared alert rules (``backbone_infra/monitoring/rules.yml``), as every target
    loads them."""
    return alert_rules() if rules_file().exists() else _EMPTY_RULES


def dashboard_files() -> dict[str, str]:
    """Dashboard file name -> JSON text, from ``backbone_infra/monitoring/dashboards``."""
    directory = Path(dashboards_dir())
    return {p.name: p.read_text() for p in sorted(directory.glob("*.json"))}


def _datasource(spec: StackSpec, backend: Backend) -> str:
    url = f"http://{backend.service_host(PROMETHEUS)}:{spec.monitoring.prometheus_port}"
    doc = {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "uid": "prometheus",
                "type": "prometheus",
                "access": "proxy",
                "url": url,
                "isDefault": True,
            }
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _dashboard_provider() -> str:
    doc = {
        "apiVersion": 1,
        "providers": [
            {
                "name": "backbone",
                "folder": "Backbone",
                "type": "file",
                "disableDeletion": True,
                "options": {"path": DASHBOARDS_DIR},
            }
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


class Monitoring(pulumi.ComponentResource):
    """Prometheus + Grafana for one stack."""

    prometheus_url: str
    grafana_url: str
    alertmanager_url: str
    prometheus_config: dict[str, Any]
    grafana_admin_password: pulumi.Output[str]
    services: list[StatefulService]

    def __init__(
        self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("backbone:infra:Monitoring", name, None, opts)
        spec, backend, m = args.spec, args.backend, args.spec.monitoring
        admin = pulumi.Output.secret(args.grafana_admin_password)
        self.prometheus_config = render_prometheus_config(
            scrape_targets(spec, backend, args.services),
            scrape_interval_s=m.scrape_interval_s,
            evaluation_interval_s=m.evaluation_interval_s,
            rule_files=[f"{PROM_DIR}/rules.yml"],
            external_labels={"stack": spec.name, "environment": backend.environment},
            alertmanagers=[f"{backend.service_host(ALERTMANAGER)}:{m.alertmanager_port}"],
            runbook_base=runbook_base_url(m.runbook_base_url),
        )
        prometheus = StatefulService(
            name=PROMETHEUS,
            replicas=1,
            client_ports={"http": m.prometheus_port},
            metrics_port=m.prometheus_port,
            metrics_job=JOB_PROMETHEUS,
            storage=spec.resources.storage,
            peers=(GRAFANA,),
            fs_group=PROMETHEUS_UID,
            published={"http": m.prometheus_port},
            containers=(
                Container(
                    name="prometheus",
                    image=spec.images.prometheus,
                    ports={"http": m.prometheus_port},
                    args=(
                        f"--config.file={PROM_DIR}/prometheus.yml",
                        "--storage.tsdb.path=/prometheus",
                        "--storage.tsdb.retention.time=15d",
                        f"--web.listen-address=:{m.prometheus_port}",
                    ),
                    probe=Probe(http_port=m.prometheus_port, http_path="/-/ready"),
                    resources=spec.resources,
                    data_dir="/prometheus",
                    has_wget=True,
                    uid=PROMETHEUS_UID,
                    files=(
                        File(
                            PROM_DIR,
                            "prometheus.yml",
                            prometheus_yaml(self.prometheus_config),
                        ),
                        File(PROM_DIR, "rules.yml", rules_text()),
                    ),
                ),
            ),
        )
        grafana = StatefulService(
            name=GRAFANA,
            replicas=1,
            client_ports={"http": m.grafana_port},
            metrics_port=m.grafana_port,
            metrics_job=JOB_GRAFANA,
            storage="1Gi",
            fs_group=GRAFANA_UID,
            published={"http": m.grafana_port},
            containers=(
                Container(
                    name="grafana",
                    image=spec.images.grafana,
                    ports={"http": m.grafana_port},
                    env={
                        "GF_SERVER_HTTP_PORT": str(m.grafana_port),
                        "GF_SECURITY_ADMIN_USER": "admin",
                        "GF_SECURITY_ADMIN_PASSWORD__FILE": f"{GRAFANA_SECRET_DIR}/admin-password",
                        "GF_PATHS_PROVISIONING": GRAFANA_PROVISIONING,
                        "GF_ANALYTICS_REPORTING_ENABLED": "false",
                        "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
                    },
                    probe=Probe(http_port=m.grafana_port, http_path="/api/health"),
                    resources=spec.resources,
                    data_dir="/var/lib/grafana",
                    has_wget=True,
                    uid=GRAFANA_UID,
                    files=(
                        File(
                            f"{GRAFANA_PROVISIONING}/datasources",
                            "prometheus.yml",
                            _datasource(spec, backend),
                        ),
                        File(
                            f"{GRAFANA_PROVISIONING}/dashboards",
                            "backbone.yml",
                            _dashboard_provider(),
                        ),
                        *(
                            File(DASHBOARDS_DIR, fname, text)
                            for fname, text in dashboard_files().items()
                        ),
                        secret_file(GRAFANA_SECRET_DIR, "admin-password", admin),
                    ),
                ),
            ),
        )
        alertmanager = _alertmanager(spec)
        self.services = [prometheus, grafana, alertmanager]
        self.resources = [
            *backend.stateful_service(prometheus, self).resources,
            *backend.stateful_service(grafana, self).resources,
            *backend.stateful_service(alertmanager, self).resources,
        ]
        self.alertmanager_url = (
            f"http://{backend.client_endpoint(ALERTMANAGER, FIRST_ORDINAL, m.alertmanager_port)}"
        )
        self.prometheus_url = (
            f"http://{backend.client_endpoint(PROMETHEUS, FIRST_ORDINAL, m.prometheus_port)}"
        )
        self.grafana_url = (
            f"http://{backend.client_endpoint(GRAFANA, FIRST_ORDINAL, m.grafana_port)}"
        )
        self.grafana_admin_password = admin
        self.register_outputs(
            {
                "prometheus_url": self.prometheus_url,
                "grafana_url": self.grafana_url,
                "alertmanager_url": self.alertmanager_url,
                "grafana_admin_password": self.grafana_admin_password,
                "scrape_jobs": [c["job_name"] for c in self.prometheus_config["scrape_configs"]],
            }
        )


def _alertmanager(spec: StackSpec) -> StatefulService:
    """One Alertmanager (clustering off), routing by severity to the stack's webhook."""
    m = spec.monitoring
    text = yaml.safe_dump(render_alertmanager_config(webhook_url=m.alert_webhook_url))
    return StatefulService(
        name=ALERTMANAGER,
        replicas=1,
        client_ports={"http": m.alertmanager_port},
        metrics_port=m.alertmanager_port,
        metrics_job=JOB_ALERTMANAGER,
        storage="1Gi",
        peers=(PROMETHEUS,),
        fs_group=ALERTMANAGER_UID,
        published={"http": m.alertmanager_port},
        containers=(
            Container(
                name="alertmanager",
                image=spec.images.alertmanager,
                ports={"http": m.alertmanager_port},
                args=(
                    f"--config.file={AM_DIR}/alertmanager.yml",
                    "--storage.path=/alertmanager",
                    f"--web.listen-address=:{m.alertmanager_port}",
                    "--cluster.listen-address=",
                ),
                probe=Probe(http_port=m.alertmanager_port, http_path="/-/ready"),
                resources=spec.resources,
                data_dir="/alertmanager",
                has_wget=True,
                uid=ALERTMANAGER_UID,
                # A webhook URL may carry a token: with one, the config is a secret file.
                files=(
                    secret_file(AM_DIR, "alertmanager.yml", text)
                    if m.alert_webhook_url
                    else File(AM_DIR, "alertmanager.yml", text),
                ),
            ),
        ),
    )
