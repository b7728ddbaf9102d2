"""EventBus: topic-scoped delivery, unsubscribe, isolation of failing handlers, threads."""

from __future__ import annotations

import threading
from typing import Any

from backbone.bus import EventBus


def test_a_subscriber_receives_only_its_topic_in_publish_order() -> None:
    bus = EventBus()
    got: list[Any] = []
    bus.subscribe("bars", got.append)
    bus.publish("bars", 1)
    bus.publish("health", 2)
    bus.publish("bars", 3)
    assert got == [1, 3]


def test_publish_returns_how_many_handlers_ran_and_unsubscribe_detaches() -> None:
    bus = EventBus()
    first: list[Any] = []
    second: list[Any] = []
    off = bus.subscribe("t", first.append)
    bus.subscribe("t", second.append)
    assert bus.publish("t", "a") == 2
    off()
    off()  # idempotent
    assert bus.subscriber_count("t") == 1
    assert bus.publish("t", "b") == 1
    assert first == ["a"]
    assert second == ["a", "b"]


def test_a_failing_handler_does_not_stop_the_others_and_is_counted() -> None:
    bus = EventBus()
    got: list[Any] = []

    def broken(_: Any) -> None:
        raise RuntimeError("boom")

    bus.subscribe("t", broken)
    bus.subscribe("t", got.append)
    assert bus.publish("t", "x") == 1
    assert got == ["x"]
    assert bus.handler_errors == 1


def test_a_handler_may_subscribe_and_publish_from_inside_a_delivery() -> None:
    bus = EventBus()
    got: list[Any] = []

    def relay(event: Any) -> None:
        bus.subscribe("late", got.append)
        bus.publish("echo", event)

    bus.subscribe("t", relay)
    bus.subscribe("echo", got.append)
    bus.publish("t", "hello")
    assert got == ["hello"]
    assert bus.subscriber_count("late") == 1


def test_concurrent_publishers_lose_no_event() -> None:
    bus = EventBus()
    lock = threading.Lock()
    seen: list[tuple[int, int]] = []

    def record(event: tuple[int, int]) -> None:
        with lock:
            seen.append(event)

    bus.subscribe("t", record)
    threads = [
        threading.Thread(target=lambda n=n: [bus.publish("t", (n, i)) for i in range(500)])
        for n in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == [(n, i) for n in range(4) for i in range(500)]
    assert bus.published == 2000
