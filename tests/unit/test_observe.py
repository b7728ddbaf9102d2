"""backbone_harness.observe against a real Prometheus fed by a tiny exporter: the
instant and range queries, target health, and firing episodes read from
``ALERTS`` (fired, resolved, fired again)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from backbone_harness import observe
from backbone_infra.monitoring.promtool import check_config, write_prometheus_config
from backbone_infra.render.prometheus import ScrapeTarget, render_prometheus_config
from backbone_infra.targets.local.ports import PortAllocator

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="prometheus is not installed (Debian package `prometheus`); run `make setup`",
)

RULES = """groups:
- name: t
  rules:
  - alert: KnobHigh
    expr: knob > 1
    for: 1s
    labels: {severity: warning}
    annotations: {summary: s, description: d, runbook_url: r}
"""


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Gauge]]:
    tmp: Path = tmp_path_factory.mktemp("prom")
    ports = PortAllocator()
    exporter_port, prom_port = ports.allocate(), ports.allocate()
    registry = CollectorRegistry()
    knob = Gauge("knob", "a value the test turns", registry=registry)
    server, thread = start_http_server(exporter_port, addr="127.0.0.1", registry=registry)
    (tmp / "rules.yml").write_text(RULES)
    config = render_prometheus_config(
        [ScrapeTarget("knob", f"127.0.0.1:{exporter_port}", {"node": "knob-1"})],
        scrape_interval_s=1,
        evaluation_interval_s=1,
        rule_files=[tmp / "rules.yml"],
    )
    path = write_prometheus_config(config, tmp / "prometheus.yml")
    check_config(path)
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={path}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{prom_port}"
    try:
        deadline = time.monotonic() + 30
        while not (observe.is_ready(url) and any(t.up for t in _targets(url))):
            assert time.monotonic() < deadline, "Prometheus did not scrape the test exporter"
            time.sleep(0.2)
        yield url, knob
    finally:
        proc.terminate()
        proc.wait(10)
        server.shutdown()
        thread.join(5)


def _targets(url: str) -> list[observe.TargetHealth]:
    try:
        return observe.targets(url)
    except observe.PrometheusUnavailableError:
        return []


def _until(check, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_episodes_of_an_alert_are_read_back_with_their_resolution(prom) -> None:
    url, knob = prom
    began = time.time()
    [target] = observe.targets(url)
    assert (target.job, target.labels["node"], target.up) == ("knob", "knob-1", True)

    # Each state is held a few evaluations, as real faults are.
    knob.set(5)
    _until(lambda: [a.name for a in observe.firing_alerts(url)] == ["KnobHigh"])
    assert observe.instant(url, "knob")[0].value == 5
    time.sleep(3)
    knob.set(0)
    _until(lambda: observe.firing_alerts(url) == [])
    time.sleep(3)
    knob.set(7)
    _until(lambda: [a.name for a in observe.firing_alerts(url)] == ["KnobHigh"])

    events = observe.alerts_fired_between(url, began, time.time())
    assert [e.name for e in events] == ["KnobHigh", "KnobHigh"], events
    first, second = events
    assert first.resolved_at is not None and first.first_seen < first.resolved_at
    assert second.first_seen >= first.resolved_at
    assert second.resolved_at is None, "still firing at the end of the range"
    assert first.labels["severity"] == "warning"
    series = observe.range_query(url, "knob", began, time.time(), 1)
    assert {v for _, v in series[0].points} >= {0.0, 5.0, 7.0}


def test_an_unreachable_prometheus_is_a_clear_error() -> None:
    port = PortAllocator().allocate()
    with pytest.raises(observe.PrometheusUnavailableError, match="did not answer"):
        observe.instant(f"http://127.0.0.1:{port}", "up")


class _Stack:
    def __init__(self, url: str | None) -> None:
        from backbone.connections import ConnectionsDocument, MonitoringConnection

        self.document = ConnectionsDocument(
            stack="s",
            environment="local",
            tier="bootstrap",
            monitoring=MonitoringConnection(prometheus_url=url) if url else None,
        )


def test_the_status_panel_shows_the_stack_health_or_nothing_without_prometheus(prom) -> None:
    url, _ = prom
    panel = observe.status_panel(_Stack(url))
    assert panel is not None
    text = panel.plain
    assert text.startswith(f"monitoring: {url}")
    for heading in ("ingest freshness:", "cache hit ratio:", "consumer lag:", "dead-lettered: 0"):
        assert heading in text
    assert observe.status_panel(_Stack(None)) is None
