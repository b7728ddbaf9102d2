"""Observability that pages someone, on a real minimal local stack.

The stack is brought up with a webhook receiver this module runs (a tiny HTTP
server on 127.0.0.1) and a runbook base URL, then:

- Prometheus lists its Alertmanager as active;
- a stopped Redis produces a ``RedisDown`` alert that arrives at the webhook
  with its labels and its runbook link, and the Watchdog never does;
- with no consumer running, ``BackboneTargetDown`` pages too;
- a real ``backbone consume`` process serves ``/metrics`` (scraped by the
  stack's Prometheus), publishes its heartbeat to ``telemetry.ingest.health``
  with the documented shape at the configured cadence;
- once that consumer is stopped under produce, the broker-side lag grows and
  ``ConsumerStalled`` fires and reaches the webhook.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from backbone.bars import synthetic_bars
from backbone.daemon import HEALTH_SCHEMA
from backbone.settings import load_settings
from backbone.stream.producer import BarProducer, kafka_client_config
from backbone_harness import observe
from backbone_infra.spec import build_spec
from backbone_infra.targets.local import provisioner
from backbone_infra.targets.local.provisioner import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNBOOKS = "https://runbooks.example.test/backbone"
GROUP = "backbone-observe-consumer"
HEALTH_INTERVAL_S = 1.0


class Webhook:
    """Collects the JSON documents Alertmanager posts (its webhook format v4)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with outer._lock:
                    outer.posts.append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def alerts(self, name: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            posts = list(self.posts)
        found = [a for post in posts for a in post.get("alerts", [])]
        return [a for a in found if name is None or a["labels"].get("alertname") == name]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _wait(what: str, check: Callable[[], Any], timeout: float, poll: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"{what}: not within {timeout:.0f}s")


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture(scope="module")
def paging_stack(stacks_root: Path, webhook: Webhook) -> Iterator[LocalStack]:
    spec = build_spec("paging", size="minimal")
    monitoring = spec.monitoring.model_copy(
        update={"alert_webhook_url": webhook.url, "runbook_base_url": RUNBOOKS}
    )
    stack = provisioner.up(spec.model_copy(update={"monitoring": monitoring}), root=stacks_root)
    try:
        yield stack
    finally:
        provisioner.down(stack.name, root=stacks_root)


def _prom(stack: LocalStack) -> str:
    assert stack.document.monitoring is not None
    url = stack.document.monitoring.prometheus_url
    assert url
    return url


def test_prometheus_lists_an_active_alertmanager(paging_stack: LocalStack) -> None:
    import urllib.request

    with urllib.request.urlopen(f"{_prom(paging_stack)}/api/v1/alertmanagers", timeout=5) as r:
        data = json.load(r)["data"]
    assert paging_stack.document.monitoring is not None
    am = paging_stack.document.monitoring.alertmanager_url
    assert am and [a["url"] for a in data["activeAlertmanagers"]] == [f"{am}/api/v2/alerts"]


def test_a_stopped_redis_pages_the_webhook_with_labels_and_runbook(
    paging_stack: LocalStack, webhook: Webhook
) -> None:
    paging_stack.stop_node("redis-1")
    try:
        alerts = _wait(
            "RedisDown at the webhook",
            lambda: [a for a in webhook.alerts("RedisDown") if a["status"] == "firing"],
            90,
        )
    finally:
        paging_stack.restart_node("redis-1")
    alert = alerts[0]
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["node"] == "redis-1"
    assert alert["labels"]["stack"] == paging_stack.name
    assert alert["annotations"]["runbook_url"] == f"{RUNBOOKS}/RedisDown.md"
    # Watchdog fires all along, but its route is the null receiver.
    assert observe.firing_alerts(_prom(paging_stack))
    assert "Watchdog" in {a.name for a in observe.firing_alerts(_prom(paging_stack))}
    assert webhook.alerts("Watchdog") == []


def test_a_stack_without_its_consumer_pages_backbone_target_down(
    paging_stack: LocalStack, webhook: Webhook
) -> None:
    # Nothing serves the backbone's /metrics yet: the scraped target is down.
    alerts = _wait(
        "BackboneTargetDown at the webhook",
        lambda: [a for a in webhook.alerts("BackboneTargetDown") if a["status"] == "firing"],
        180,
    )
    assert alerts[0]["labels"]["job"] == "backbone"
    assert alerts[0]["labels"]["severity"] == "critical"
    assert alerts[0]["annotations"]["runbook_url"] == f"{RUNBOOKS}/BackboneTargetDown.md"


def _produce(stack: LocalStack, count: int, seed: int) -> None:
    settings = load_settings(stack.document)
    assert settings.kafka is not None
    producer = BarProducer(settings.kafka)
    try:
        producer.send_bars(list(synthetic_bars(["EURUSD", "GBPUSD"], "1m", count, seed=seed)))
        producer.flush()
    finally:
        producer.close()


def _health_reports(stack: LocalStack, group: str) -> list[dict[str, Any]]:
    """Every report on the health topic up to its end *now* (it keeps growing)."""
    settings = load_settings(stack.document)
    assert settings.kafka is not None
    topic = settings.kafka.topic("ingest_health")
    consumer = KafkaConsumer(
        **kafka_client_config(settings.kafka, client_id="observe-test-reader"),
        enable_auto_commit=False,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        docs: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                pytest.fail(f"could not read {topic} to its end within 30 s")
            for tp, records in consumer.poll(timeout_ms=500).items():
                docs += [json.loads(r.value) for r in records if r.offset < ends[tp]]
    finally:
        consumer.close()
    return sorted((d for d in docs if d.get("group") == group), key=lambda d: d["at"])


def _sum(url: str, query: str) -> float | None:
    samples = observe.instant(url, query)
    return sum(s.value for s in samples) if samples else None


def test_a_consumer_is_watched_and_a_stopped_one_pages(
    paging_stack: LocalStack, webhook: Webhook
) -> None:
    url = _prom(paging_stack)
    env = {
        **os.environ,
        "BACKBONE_HEALTH_INTERVAL_SECONDS": str(HEALTH_INTERVAL_S),
        "BACKBONE_SUMMARY_INTERVAL_SECONDS": "2",
    }
    command = [sys.executable, "-m", "backbone", "--log-format", "json", "consume"]
    command += ["--outputs", str(paging_stack.outputs_path), "--group", GROUP]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        _wait("the consumer's ready line", lambda: any("consuming:" in x for x in lines), 120)
        _produce(paging_stack, 300, seed=1)
        # Served, scraped, and doing work: heartbeat, processed, committed, partitions.
        _wait(
            "the consumer scraped with its heartbeat",
            lambda: observe.instant(url, 'backbone_heartbeat_timestamp_seconds{process="consume"}'),
            60,
        )
        _wait(
            "processed records in Prometheus",
            lambda: (_sum(url, "backbone_consumer_records_processed_total") or 0) >= 600,
            60,
        )
        assert (_sum(url, "backbone_consumer_assigned_partitions") or 0) >= 1
        _wait(
            "broker-side committed offsets for the group",
            lambda: observe.instant(url, f'backbone_broker_committed_offset{{group="{GROUP}"}}'),
            60,
        )
        time.sleep(4 * HEALTH_INTERVAL_S)
        reports = _wait("heartbeats on the topic", lambda: _health_reports(paging_stack, GROUP), 30)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join(timeout=10)
    assert proc.returncode == 0, "".join(lines[-20:])

    # The heartbeat topic: documented shape, one schema, the configured cadence.
    assert len(reports) >= 3
    for report in reports:
        assert report["schema"] == HEALTH_SCHEMA
        assert report["stack"] == paging_stack.name
        assert {"at", "member", "assigned_partitions", "processed", "committed", "lag"} <= set(
            report
        )
    stamps = [datetime.fromisoformat(r["at"]).timestamp() for r in reports]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert stamps == sorted(stamps)
    assert min(gaps) >= HEALTH_INTERVAL_S * 0.9, f"reports closer than the interval: {gaps}"
    assert reports[-1]["processed"] >= 600

    # Logs: JSON lines, with the periodic summary.
    records = [json.loads(x) for x in lines if x.startswith("{")]
    assert any(r["message"].startswith(f"consume {GROUP}:") for r in records)

    # Stopped under produce: lag grows (from the brokers), and ConsumerStalled pages.
    stop_producing = threading.Event()

    def keep_producing() -> None:
        seed = 2
        while not stop_producing.is_set():
            _produce(paging_stack, 20, seed=seed)
            seed += 1
            stop_producing.wait(2)

    producer = threading.Thread(target=keep_producing, daemon=True)
    producer.start()
    lag_query = f'sum(backbone_broker_consumer_lag{{group="{GROUP}"}})'
    try:
        first = _wait("broker-side lag above 0", lambda: _sum(url, lag_query), 60)
        _wait("broker-side lag growing", lambda: (_sum(url, lag_query) or 0) > first, 60)
        stalled = _wait(
            "ConsumerStalled at the webhook",
            lambda: [
                a
                for a in webhook.alerts("ConsumerStalled")
                if a["labels"].get("group") == GROUP and a["status"] == "firing"
            ],
            240,
        )
    finally:
        stop_producing.set()
        producer.join(timeout=30)
    assert stalled[0]["labels"]["severity"] == "critical"
    assert stalled[0]["annotations"]["runbook_url"] == f"{RUNBOOKS}/ConsumerStalled.md"
    assert datetime.fromisoformat(stalled[0]["startsAt"].replace("Z", "+00:00")) <= datetime.now(
        UTC
    )
