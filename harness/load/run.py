"""One bounded Locust run: an ``Environment`` owns events, stats and the local runner.

Import this module only in a process that imported Locust first (see
:mod:`harness.load.__main__`): Locust patches the standard library with gevent.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import gevent
from locust.env import Environment

from harness.load.users import BarProducerUser, MarketDataFeedUser, bound_to

__all__ = ["LoadResult", "run_load"]

#: Seconds users get to finish their current send after the run time is up.
STOP_TIMEOUT_S = 30


@dataclass
class LoadResult:
    """What one run measured; ``requests`` are acknowledged-or-failed batch sends."""

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
    #: Sends in flight on average (Little's law: sends/s x mean latency). Close to
    #: ``users`` means users overlap; close to 1 would mean they serialise.
    concurrent_sends_avg: float
    per_task: dict[str, dict[str, float]]
    failure_examples: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Acknowledged:
    """A ``request`` listener summing what successful sends carried."""

    def __init__(self) -> None:
        self.bars = self.records = self.bytes = 0

    def __call__(self, *, exception: Any, response_length: int, context: Any, **_: Any) -> None:
        if exception is None:
            self.bars += int(context.get("bars", 0))
            self.records += int(context.get("records", 0))
            self.bytes += response_length


def run_load(
    kafka: Any,
    *,
    users: int = 4,
    spawn_rate: float = 2.0,
    seconds: float = 30.0,
    user_class: type[BarProducerUser] = MarketDataFeedUser,
) -> LoadResult:
    """Run ``users`` users (spawned at ``spawn_rate``/s) for ``seconds``, then stop."""
    env = Environment(user_classes=[bound_to(user_class, kafka)], stop_timeout=STOP_TIMEOUT_S)
    acked = _Acknowledged()
    env.events.request.add_listener(acked)
    runner = env.create_local_runner()
    began = time.monotonic()
    runner.start(users, spawn_rate=spawn_rate)
    gevent.spawn_later(seconds, runner.quit)
    runner.greenlet.join(timeout=seconds + STOP_TIMEOUT_S + 30)
    if len(runner.greenlet):  # greenlets left: the bound is the point, never run on
        runner.quit()
    elapsed = time.monotonic() - began
    total = env.stats.total

    def pct(q: float) -> float | None:
        return round(total.get_response_time_percentile(q), 1) if total.num_requests else None

    return LoadResult(
        users=users,
        spawn_rate=spawn_rate,
        run_seconds=seconds,
        elapsed_seconds=round(elapsed, 2),
        requests=total.num_requests,
        failures=total.num_failures,
        requests_per_s=round(total.num_requests / elapsed, 1),
        bars_acknowledged=acked.bars,
        bars_per_s=round(acked.bars / elapsed, 1),
        records_acknowledged=acked.records,
        value_bytes_acknowledged=acked.bytes,
        mb_per_s=round(acked.bytes / elapsed / 1e6, 3),
        record_bytes_avg=acked.bytes // acked.records if acked.records else 0,
        latency_ms={
            "avg": round(total.avg_response_time, 1) if total.num_requests else None,
            "p50": pct(0.5),
            "p95": pct(0.95),
            "p99": pct(0.99),
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
    )
