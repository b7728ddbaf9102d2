"""One bounded Locust run: an ``Environment`` owns events, stats and its runner.

Local (one process) or distributed: with ``workers`` > 0 this process is
Locust's master (on a free loopback port) and starts that many worker
processes (``python -m backbone_harness.load --worker-of PORT ...``), each its own
``Environment`` with a worker runner; the master spreads the users over them
and aggregates their stats. Counters Locust does not keep (bars and bytes
acknowledged, cache hits) travel with each worker's report
(``report_to_master`` → ``worker_report``).

Figures are kept per *profile* (Locust's request type: ``kafka`` for the
producer, ``read`` for readers): requests/s, failures and p50/p95/p99, and a
per-second timeline of both for the plots (with each interval's request and
failure counts, and on request its response-time histogram, so that a drill
can add the seconds of its fault window up exactly).

The run ends at its time bound, or earlier on SIGTERM (a drill stops the load
when its fault is over): either way the result is printed. Once every user
is spawned the process says so on stderr (:data:`SPAWNED_LINE`).

Import this module only in a process that imported Locust first (see
:mod:`backbone_harness.load.__main__`): Locust patches the standard library with gevent.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import gevent
from locust import User
from locust.env import Environment
from locust.runners import WORKER_REPORT_INTERVAL
from locust.stats import StatsEntry

from backbone_harness.load import SPAWNED_LINE
from backbone_harness.load.histogram import histogram_percentile

__all__ = ["Counters", "LoadResult", "run_load", "run_worker"]

#: Seconds users get to finish their current send after the run time is up.
STOP_TIMEOUT_S = 30
#: Seconds the master waits for its workers to connect.
WORKERS_READY_S = 90


@dataclass
class LoadResult:
    """What one run measured; ``requests`` are every timed call (sends and reads)."""

    users: int
    spawn_rate: float
    run_seconds: float
    elapsed_seconds: float
    requests: int
    failures: int
    requests_per_s: float
    bars_acknowledged: int
    bars_per_s: float
    records_acknowledged: int
    value_bytes_acknowledged: int
    mb_per_s: float
    record_bytes_avg: int
    latency_ms: dict[str, float | None]
    #: Calls in flight on average (Little's law: calls/s x mean latency). Close to
    #: ``users`` means users overlap; close to 1 would mean they serialise.
    concurrent_sends_avg: float
    per_task: dict[str, dict[str, float]]
    failure_examples: list[str]
    #: Worker processes (0: one local process).
    workers: int = 0
    #: Per profile (request type): requests, failures, requests_per_s, p50/p95/p99 ms.
    profiles: dict[str, dict[str, float | None]] = field(default_factory=dict)
    #: The readers' cache: hits / reads over the run (None without readers).
    cache_hit_ratio: float | None = None
    #: One row per second (per worker report interval, 3 s, with workers): t, and
    #: per profile that interval's requests and failures (counts and per second)
    #: and p50/p95/p99 ms; the last row ends with the run, so the counts add up
    #: to the run's. With ``histograms``, also ``<profile>_hist``: {ms: count}.
    timeline: list[dict[str, Any]] = field(default_factory=list)
    #: Wall-clock time (epoch seconds) of the timeline's t = 0.
    started_at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Counters:
    """What successful calls carried (bars, records, bytes), and the readers' cache
    counts; merged from every worker in distributed mode."""

    KEYS = ("bars", "records", "bytes", "cache_hits", "cache_reads")

    def __init__(self) -> None:
        self.values = dict.fromkeys(self.KEYS, 0)

    def __call__(self, *, exception: Any, response_length: int, context: Any, **_: Any) -> None:
        if exception is None and context:
            self.values["bars"] += int(context.get("bars", 0))
            self.values["records"] += int(context.get("records", 0))
            if "bars" in context:
                self.values["bytes"] += response_length

    def merge(self, data: dict[str, int]) -> None:
        for key in self.KEYS:
            self.values[key] += int(data.get(key, 0))


def _cache_counts() -> tuple[int, int]:
    from backbone_harness.load.reads import BarReaderClient

    hits = reads = 0
    for backbone in BarReaderClient._backbones.values():
        stats = backbone.cache.stats()
        hits, reads = hits + stats.hits, reads + stats.reads
    return hits, reads


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _profile(env: Environment, request_type: str) -> StatsEntry:
    merged = StatsEntry(env.stats, request_type, request_type, use_response_times_cache=False)
    for (_name, method), entry in env.stats.entries.items():
        if method == request_type:
            merged.extend(entry)
    return merged


class _Timeline:
    """The per-interval rows: each profile's figures *of that interval* (the
    difference of Locust's cumulative counts and response-time histograms)."""

    def __init__(self, env: Environment, began: float, *, histograms: bool) -> None:
        self.rows: list[dict[str, Any]] = []
        self._env = env
        self._began = began
        self._histograms = histograms
        self._last_t = began
        self._last: dict[str, tuple[int, int, Counter[int]]] = {}

    def sample(self) -> None:
        now = time.monotonic()
        span = max(now - self._last_t, 1e-6)
        row: dict[str, Any] = {"t": round(now - self._began, 2)}
        for kind in sorted({method for (_n, method) in self._env.stats.entries}):
            entry = _profile(self._env, kind)
            hist = Counter(entry.response_times)
            count, failed, before = self._last.get(kind, (0, 0, Counter()))
            interval = hist - before
            requests, failures = entry.num_requests - count, entry.num_failures - failed
            row[f"{kind}_requests"] = requests
            row[f"{kind}_failures"] = failures
            row[f"{kind}_rps"] = round(requests / span, 1)
            row[f"{kind}_fail_ps"] = round(failures / span, 1)
            for q in (50, 95, 99):
                row[f"{kind}_p{q}_ms"] = histogram_percentile(interval, q / 100)
            if self._histograms:
                row[f"{kind}_hist"] = dict(interval)
            self._last[kind] = (entry.num_requests, entry.num_failures, hist)
        self._last_t = now
        self.rows.append(row)

    def run(self, every_s: float) -> None:
        while True:
            gevent.sleep(every_s)
            self.sample()


def run_load(
    user_classes: Sequence[type[User]],
    *,
    users: int = 4,
    spawn_rate: float = 2.0,
    seconds: float = 30.0,
    workers: int = 0,
    worker_args: Sequence[str] = (),
    histograms: bool = False,
) -> LoadResult:
    """Run ``users`` users (spawned at ``spawn_rate``/s) for ``seconds`` (or until
    SIGTERM), then stop.

    With ``workers`` > 0, start that many worker processes with ``worker_args``
    (the same profile options this process got) and run as their master.
    ``histograms``: keep each timeline interval's response-time histogram.
    """
    env = Environment(user_classes=list(user_classes), stop_timeout=STOP_TIMEOUT_S)
    env.events.spawning_complete.add_listener(
        lambda **_: print(SPAWNED_LINE, file=sys.stderr, flush=True)
    )
    counters = Counters()
    env.events.request.add_listener(counters)
    children: list[subprocess.Popen[bytes]] = []
    if workers:
        port = _free_port()
        runner: Any = env.create_master_runner("127.0.0.1", port)
        env.events.worker_report.add_listener(lambda client_id, data: counters.merge(data))
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "backbone_harness.load",
                    *worker_args,
                    "--worker-of",
                    str(port),
                ]
            )
            for _ in range(workers)
        ]
        deadline = time.monotonic() + WORKERS_READY_S
        while len(runner.clients.ready) < workers:
            if time.monotonic() > deadline or any(c.poll() is not None for c in children):
                _reap(children)
                raise RuntimeError(
                    f"{len(runner.clients.ready)} of {workers} Locust workers connected within "
                    f"{WORKERS_READY_S}s; check the machine's load and the workers' stderr"
                )
            gevent.sleep(0.2)
    else:
        runner = env.create_local_runner()
    began, started_at = time.monotonic(), time.time()
    timeline = _Timeline(env, began, histograms=histograms)
    # A master hears from its workers every WORKER_REPORT_INTERVAL seconds:
    # sampling faster would show empty intervals between their reports.
    every_s = float(WORKER_REPORT_INTERVAL) if workers else 1.0
    sampler = gevent.spawn(timeline.run, every_s)
    quit_at = [began + seconds]
    # SIGTERM ends the run early, as its time bound would: the result still prints.
    on_term = gevent.signal_handler(signal.SIGTERM, lambda: quit_at.__setitem__(0, 0.0))
    try:
        runner.start(users, spawn_rate=spawn_rate)
        gevent.spawn(_quit_at, runner, quit_at)
        runner.greenlet.join(timeout=seconds + STOP_TIMEOUT_S + 30)
        if len(runner.greenlet):  # greenlets left: the bound is the point, never run on
            runner.quit()
    finally:
        on_term.cancel()
        sampler.kill()
        _reap(children)
    timeline.sample()  # the last interval, up to the end: the rows add up to the run
    elapsed = time.monotonic() - began
    if not workers:
        hits, reads = _cache_counts()
        counters.merge({"cache_hits": hits, "cache_reads": reads})
        _close_readers()
    result = _result(env, counters, users, spawn_rate, seconds, elapsed, workers, timeline.rows)
    result.started_at = started_at
    return result


def _quit_at(runner: Any, deadline: list[float]) -> None:
    """Quit the runner at ``deadline[0]`` (monotonic; a SIGTERM sets it to 0). Not
    ``gevent.spawn_later``: the hub's cached clock is as old as the loop's last
    turn, and the slow set-up before the run (imports, clients) made such a run
    stop seconds early."""
    while (left := deadline[0] - time.monotonic()) > 0:
        gevent.sleep(min(left, 0.2))
    runner.quit()


def _reap(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        try:
            child.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)


def run_worker(user_classes: Sequence[type[User]], master_port: int) -> None:
    """A worker process: run users as the master on ``master_port`` says, until it quits."""
    env = Environment(user_classes=list(user_classes), stop_timeout=STOP_TIMEOUT_S)
    counters = Counters()
    env.events.request.add_listener(counters)

    def report(client_id: str, data: dict[str, Any]) -> None:
        # Only what happened since the last report: the master adds them up.
        hits, reads = _cache_counts()
        snapshot = {**counters.values, "cache_hits": hits, "cache_reads": reads}
        data.update({k: snapshot[k] - sent.get(k, 0) for k in Counters.KEYS})
        sent.update(snapshot)

    sent: dict[str, int] = {}
    env.events.report_to_master.add_listener(report)
    runner = env.create_worker_runner("127.0.0.1", master_port)
    runner.greenlet.join()
    _close_readers()


def _close_readers() -> None:
    from backbone_harness.load.reads import BarReaderClient

    BarReaderClient.close_all()


def _result(
    env: Environment,
    counters: Counters,
    users: int,
    spawn_rate: float,
    seconds: float,
    elapsed: float,
    workers: int,
    timeline: list[dict[str, Any]],
) -> LoadResult:
    total = env.stats.total
    c = counters.values

    def pct(entry: StatsEntry, q: float) -> float | None:
        return round(entry.get_response_time_percentile(q), 1) if entry.num_requests else None

    profiles: dict[str, dict[str, float | None]] = {}
    for kind in sorted({method for (_n, method) in env.stats.entries}):
        entry = _profile(env, kind)
        profiles[kind] = {
            "requests": entry.num_requests,
            "failures": entry.num_failures,
            "requests_per_s": round(entry.num_requests / elapsed, 1),
            "p50_ms": pct(entry, 0.5),
            "p95_ms": pct(entry, 0.95),
            "p99_ms": pct(entry, 0.99),
        }
    return LoadResult(
        users=users,
        spawn_rate=spawn_rate,
        run_seconds=seconds,
        elapsed_seconds=round(elapsed, 2),
        requests=total.num_requests,
        failures=total.num_failures,
        requests_per_s=round(total.num_requests / elapsed, 1),
        bars_acknowledged=c["bars"],
        bars_per_s=round(c["bars"] / elapsed, 1),
        records_acknowledged=c["records"],
        value_bytes_acknowledged=c["bytes"],
        mb_per_s=round(c["bytes"] / elapsed / 1e6, 3),
        record_bytes_avg=c["bytes"] // c["records"] if c["records"] else 0,
        latency_ms={
            "avg": round(total.avg_response_time, 1) if total.num_requests else None,
            "p50": pct(total, 0.5),
            "p95": pct(total, 0.95),
            "p99": pct(total, 0.99),
            "max": round(total.max_response_time, 1) if total.num_requests else None,
        },
        concurrent_sends_avg=round(
            total.num_requests / elapsed * total.avg_response_time / 1000, 2
        ),
        per_task={
            name: {
                "requests": entry.num_requests,
                "failures": entry.num_failures,
                "median_ms": entry.median_response_time,
            }
            for (name, _method), entry in env.stats.entries.items()
        },
        failure_examples=[str(e.error)[:200] for e in list(env.stats.errors.values())[:5]],
        workers=workers,
        profiles=profiles,
        cache_hit_ratio=round(c["cache_hits"] / c["cache_reads"], 3) if c["cache_reads"] else None,
        timeline=timeline,
    )
