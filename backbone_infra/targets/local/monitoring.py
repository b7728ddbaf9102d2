"""Monitoring on loopback: exporters for every Redis and PostgreSQL node, and
a Prometheus that scrapes them, each Kafka broker's JMX exporter and the
backbone's own ``/metrics``, evaluating ``backbone_infra/monitoring/rules.yml``.

Nodes: ``exporter-redis-N`` / ``exporter-sentinel-N`` (redis_exporter),
``exporter-postgres-N`` (postgres_exporter) and ``prometheus``. Exporters need
credentials: redis_exporter reads a 0600 JSON password file
(``--redis.password-file``), postgres_exporter a 0600 password file named by
``DATA_SOURCE_PASS_FILE``; only file *paths* are on command lines or in the
saved process records.

Local stacks scrape and evaluate every second (the spec's intervals are for
container targets), so an alert's ``for:`` window is what decides how soon it
fires, not the scrape interval.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import SecretStr

from backbone.connections import MonitoringConnection
from backbone_infra.errors import ServiceStartError
from backbone_infra.monitoring import prometheus_api as observe
from backbone_infra.monitoring.alertmanager import (
    AlertmanagerConfigError,
    check_alertmanager_config,
)
from backbone_infra.monitoring.assets import rules_file
from backbone_infra.monitoring.promtool import (
    PrometheusConfigError,
    check_config,
    write_prometheus_config,
)
from backbone_infra.render.exporters import (
    postgres_exporter_args,
    postgres_exporter_env,
    redis_exporter_args,
    redis_exporter_passwords,
    redis_exporter_uri,
)
from backbone_infra.render.prometheus import (
    EXPORTER_JOBS,
    JOB_ALERTMANAGER,
    JOB_BACKBONE,
    JOB_KAFKA,
    JOB_KAFKA_LAG,
    JOB_POSTGRES,
    JOB_PROMETHEUS,
    JOB_REDIS,
    JOB_REDIS_SENTINEL,
    ScrapeTarget,
    render_prometheus_config,
    runbook_base_url,
)
from backbone_infra.spec import StackSpec
from backbone_infra.targets.local.alertmanager import (
    ALERTMANAGER,
    alertmanager_record,
    alertmanager_url,
)
from backbone_infra.targets.local.base import LocalService
from backbone_infra.targets.local.files import find_binary, write_private
from backbone_infra.targets.local.lag_exporter import LAG_EXPORTER, lag_exporter_record
from backbone_infra.targets.local.ports import LOOPBACK, PortAllocator
from backbone_infra.targets.local.process import ProcessNode, ProcessRecord
from backbone_infra.targets.local.secrets import StackSecrets
from backbone_infra.targets.local.service import LocalNodes, start_together, wait_until

__all__ = ["LOCAL_EVALUATION_INTERVAL_S", "LOCAL_SCRAPE_INTERVAL_S", "LocalMonitoring"]

LOCAL_SCRAPE_INTERVAL_S = 1
LOCAL_EVALUATION_INTERVAL_S = 1
PROMETHEUS = "prometheus"
_START_TIMEOUT_S = 60.0
#: The provisioner starts monitoring while the services it watches are still
#: starting (a Kafka broker can take a minute on a loaded machine), so waiting
#: for every target to be up gets longer than one process's start.
_TARGETS_TIMEOUT_S = 240.0
_PROBE_TIMEOUT_S = 2.0


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=_PROBE_TIMEOUT_S) as resp:
        return bool(resp.status == 200)


def _listening(port: int) -> bool:
    with socket.create_connection((LOOPBACK, port), timeout=_PROBE_TIMEOUT_S):
        return True


class LocalMonitoring(LocalNodes):
    """Renders ``spec.monitoring`` as exporter processes and one Prometheus."""

    service = "monitoring"

    def __init__(
        self,
        spec: StackSpec,
        stack_dir: Path,
        secrets: StackSecrets,
        records: list[ProcessRecord] | None = None,
    ) -> None:
        super().__init__(spec, stack_dir, secrets, records)
        self.root = self.dir / "monitoring"
        #: The services scraped and their ports when the config was written.
        self._peers: Mapping[str, LocalService] = {}
        self._peer_ports: dict[str, list[dict[str, int]]] = {}

    @property
    def enabled(self) -> bool:
        return self.spec.has_services and self.spec.monitoring.enabled

    # -- lookups ----------------------------------------------------------------

    @property
    def prometheus_url(self) -> str:
        return f"http://{LOOPBACK}:{self._record(PROMETHEUS).ports['http']}"

    @property
    def backbone_metrics_port(self) -> int:
        """The loopback port Prometheus scrapes the backbone's ``/metrics`` on."""
        return self._record(PROMETHEUS).ports["backbone_metrics"]

    @property
    def config_path(self) -> Path:
        return self.root / "prometheus.yml"

    # -- prepare ------------------------------------------------------------------

    def prepare(self, ports: PortAllocator, peers: Mapping[str, LocalService]) -> None:
        """Choose ports, write password files (0600) and the Prometheus config."""
        self.records = []
        if not self.enabled:
            return
        redis_bin = find_binary("prometheus-redis-exporter")
        pg_bin = find_binary("prometheus-postgres-exporter")
        prom_bin = find_binary("prometheus")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True, mode=0o700)
        os.chmod(self.root, 0o700)
        targets: list[ScrapeTarget] = []
        self._peers = peers
        self._peer_ports = self._ports_of(peers)

        for rec in peers["redis"].records if "redis" in peers else []:
            targets.append(self._redis_exporter(rec, redis_bin, ports.allocate()))
        for rec in peers["postgres"].records if "postgres" in peers else []:
            targets.append(self._postgres_exporter(rec, pg_bin, ports.allocate()))
        for rec in peers["kafka"].records if "kafka" in peers else []:
            if "metrics" in rec.ports:
                address = f"{LOOPBACK}:{rec.ports['metrics']}"
                targets.append(ScrapeTarget(JOB_KAFKA, address, {"node": rec.name}))

        logs = self.dir / "logs"
        if "kafka" in peers and peers["kafka"].records:
            # The DESCRIBE-only monitoring principal, not the application.
            monitor = (
                peers["kafka"]
                .connection()
                .model_copy(
                    update={
                        "username": self.spec.kafka.monitor_username,
                        "password": SecretStr(self.secrets.kafka_monitor_password),
                    }
                )
            )
            lag = lag_exporter_record(
                monitor,
                root=self.root, logs=logs, port=ports.allocate(), service=self.service,
            )  # fmt: skip
            self.records.append(lag)
            address = f"{LOOPBACK}:{lag.ports['http']}"
            targets.append(ScrapeTarget(JOB_KAFKA_LAG, address, {"node": LAG_EXPORTER}))
        alerting = alertmanager_record(
            self.spec, root=self.root, logs=logs, port=ports.allocate(), service=self.service
        )
        self.records.append(alerting)
        alerting_address = f"{LOOPBACK}:{alerting.ports['http']}"
        targets.append(ScrapeTarget(JOB_ALERTMANAGER, alerting_address, {"node": ALERTMANAGER}))

        http_port, backbone_port = ports.allocate(), ports.allocate()
        targets.append(ScrapeTarget(JOB_BACKBONE, f"{LOOPBACK}:{backbone_port}"))
        targets.append(
            ScrapeTarget(JOB_PROMETHEUS, f"{LOOPBACK}:{http_port}", {"node": PROMETHEUS})
        )
        config = render_prometheus_config(
            targets,
            scrape_interval_s=LOCAL_SCRAPE_INTERVAL_S,
            evaluation_interval_s=LOCAL_EVALUATION_INTERVAL_S,
            rule_files=[rules_file()],
            external_labels={"stack": self.spec.name},
            alertmanagers=[alerting_address],
            runbook_base=runbook_base_url(self.spec.monitoring.runbook_base_url),
        )
        write_prometheus_config(config, self.config_path)
        self.records.append(
            ProcessRecord(
                name=PROMETHEUS,
                service=self.service,
                command=[
                    prom_bin,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.root / 'prometheus-data'}",
                    f"--web.listen-address={LOOPBACK}:{http_port}",
                    "--storage.tsdb.retention.time=7d",
                    "--log.level=warn",
                ],
                log=str(self.dir / "logs" / f"{PROMETHEUS}.log"),
                cwd=str(self.root),
                ports={"http": http_port, "backbone_metrics": backbone_port},
            )
        )

    def _redis_exporter(self, rec: ProcessRecord, binary: str, port: int) -> ScrapeTarget:
        sentinel = rec.name.startswith("sentinel-")
        redis_uri = redis_exporter_uri(LOOPBACK, rec.ports["client"], tls=self.spec.tls)
        # Keyed by address: redis_exporter looks the password up by the URI it
        # scrapes. Servers: the read-only exporter user; Sentinels know only
        # their requirepass.
        password = (
            self.secrets.sentinel_password if sentinel else self.secrets.redis_exporter_password
        )
        passfile = write_private(
            self.root / f"{rec.name}.redis-password.json",
            redis_exporter_passwords(redis_uri, password),
        )
        command = [
            binary,
            *redis_exporter_args(
                self.spec.redis,
                redis_uri=redis_uri,
                listen=f"{LOOPBACK}:{port}",
                password_file=str(passfile),
                sentinel=sentinel,
                ca_file=self.ca_file,
            ),
        ]
        self._add_exporter(f"exporter-{rec.name}", command, port, rec.name)
        job = JOB_REDIS_SENTINEL if sentinel else JOB_REDIS
        return ScrapeTarget(job, f"{LOOPBACK}:{port}", {"node": rec.name})

    def _postgres_exporter(self, rec: ProcessRecord, binary: str, port: int) -> ScrapeTarget:
        passfile = write_private(
            self.root / f"{rec.name}.pg-password", self.secrets.postgres_monitor_password
        )
        self._add_exporter(
            f"exporter-{rec.name}",
            [binary, *postgres_exporter_args(listen=f"{LOOPBACK}:{port}")],
            port,
            rec.name,
            env=postgres_exporter_env(
                self.spec.postgres,
                server=f"{LOOPBACK}:{rec.ports['client']}",
                password_file=str(passfile),
                sslrootcert=self.ca_file,
            ),
        )
        return ScrapeTarget(JOB_POSTGRES, f"{LOOPBACK}:{port}", {"node": rec.name})

    def _add_exporter(
        self,
        name: str,
        command: list[str],
        port: int,
        watches: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.records.append(
            ProcessRecord(
                name=name,
                service=self.service,
                command=command,
                log=str(self.dir / "logs" / f"{name}.log"),
                cwd=str(self.root),
                env=env or {},
                ports={"http": port},
            )
        )

    # -- start --------------------------------------------------------------------

    def node(self, name: str) -> ProcessNode:
        rec = self._record(name)
        if name == PROMETHEUS:
            return ProcessNode(rec, ready=lambda: observe.is_ready(self.prometheus_url))
        if name == ALERTMANAGER:
            return ProcessNode(rec, ready=lambda: _http_ok(f"{alertmanager_url(rec)}/-/ready"))
        if name == LAG_EXPORTER:
            # Its /metrics asks the brokers, which may still be starting: listening is ready.
            return ProcessNode(rec, ready=lambda: _listening(rec.ports["http"]))
        url = f"http://{LOOPBACK}:{rec.ports['http']}/metrics"
        return ProcessNode(rec, ready=lambda: _http_ok(url))

    def start(self) -> dict[str, float]:
        """Validate the config with promtool, start the exporters, then Prometheus,
        and wait until every exporter target is scraped with ``up == 1``."""
        if not self.records:
            return {}
        try:
            check_config(self.config_path)
        except PrometheusConfigError as exc:
            raise ServiceStartError(
                PROMETHEUS, f"has an invalid config: {exc}", self.config_path, ""
            ) from None
        alerting_config = self.root / "alertmanager.yml"
        try:
            check_alertmanager_config(alerting_config)
        except AlertmanagerConfigError as exc:
            raise ServiceStartError(
                ALERTMANAGER, f"has an invalid config: {exc}", alerting_config, ""
            ) from None
        exporters = [self.node(r.name) for r in self.records if r.name != PROMETHEUS]
        timings, errors = start_together(exporters, timeout=_START_TIMEOUT_S)
        if errors:
            raise errors[0]
        began = time.monotonic()
        self.node(PROMETHEUS).start(timeout=_START_TIMEOUT_S)
        self._wait_targets_up(began)
        timings[PROMETHEUS] = time.monotonic() - began
        return timings

    @staticmethod
    def _ports_of(peers: Mapping[str, LocalService]) -> dict[str, list[dict[str, int]]]:
        return {name: [dict(r.ports) for r in svc.records] for name, svc in peers.items()}

    def _peers_moved(self) -> bool:
        """A scraped service re-prepared on new ports (it lost a port race)
        since the config was written: the provisioner starts monitoring again."""
        return bool(self._peers) and self._ports_of(self._peers) != self._peer_ports

    def _wait_targets_up(self, began: float) -> None:
        expected = self._expected_targets()
        prometheus = self.node(PROMETHEUS)

        def all_up() -> bool:
            if self._peers_moved():
                return True  # stale targets: waiting for them cannot succeed
            try:
                problem = self._targets_problem(expected)
            except observe.PrometheusUnavailableError as exc:
                problem = str(exc)
            if problem:
                raise RuntimeError(problem)
            return True

        wait_until(
            all_up,
            "every exporter up",
            max(0.0, _TARGETS_TIMEOUT_S - (time.monotonic() - began)),
            node=PROMETHEUS,
            log=Path(self._record(PROMETHEUS).log),
            hint="each exporter's log is in the stack's logs/ directory",
            poll=0.25,
            # Stopped: the stack's start was aborted.
            abort=lambda: None if prometheus.running() else "stopped",
        )

    def _expected_targets(self) -> int:
        """How many exporter targets (Redis, PostgreSQL, Kafka JMX) the config lists."""
        config = yaml.safe_load(self.config_path.read_text())
        return sum(
            len(static["targets"])
            for job in config["scrape_configs"]
            if job["job_name"] in EXPORTER_JOBS
            for static in job["static_configs"]
        )

    def _targets_problem(self, expected: int) -> str:
        """Why monitoring is not ready yet, or ``""`` once it is."""
        watched = [t for t in observe.targets(self.prometheus_url) if t.job in EXPORTER_JOBS]
        down = [f"{t.labels.get('node', t.instance)}: {t.last_error or 'not scraped yet'}"
                for t in watched if not t.up]  # fmt: skip
        if down:
            return "down: " + "; ".join(down)
        if len(watched) < expected:
            return f"{len(watched)} of {expected} exporter targets known"
        unreachable = observe.instant(self.prometheus_url, "redis_up == 0 or pg_up == 0")
        if unreachable:
            nodes = sorted(s.labels.get("node", "?") for s in unreachable)
            return f"exporters cannot reach {', '.join(nodes)}"
        return ""

    # -- outputs ------------------------------------------------------------------

    def connection(self) -> MonitoringConnection | None:
        if not self.records:
            return None
        return MonitoringConnection(
            prometheus_url=self.prometheus_url,
            alertmanager_url=alertmanager_url(self._record(ALERTMANAGER)),
            backbone_metrics_port=self.backbone_metrics_port,
        )

    def roles(self) -> dict[str, str]:
        named = {PROMETHEUS: "prometheus", ALERTMANAGER: "alertmanager"}
        return {r.name: named.get(r.name, "exporter") for r in self.records}
