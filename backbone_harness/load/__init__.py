"""Throughput test: Locust, as a library, producing bar batches through ``BarProducer``.

Locust monkey-patches the standard library with gevent when it is imported,
so it runs in its own process: ``python -m backbone_harness.load`` (driven by
``harness load run``). Modules: :mod:`~backbone_harness.load.client` (the custom
client), :mod:`~backbone_harness.load.users` (abstract and concrete users),
:mod:`~backbone_harness.load.run` (one ``Environment``, its runner and stats),
:mod:`~backbone_harness.load.report` (the report and Kafka's own tool for comparison).
Nothing is imported here, so importing the package does not patch anything.
"""

from __future__ import annotations

__all__ = ["SPAWNED_LINE"]

#: What the load process prints on stderr (a line of its own) once every user is
#: spawned; a drill waits for it before its baseline (no Locust import needed).
SPAWNED_LINE = "locust: all users spawned"
