"""Invariant 7: a push or notification failure never fails or delays the task, its counters or
the release of its concurrency key (services/stream.py: pushes and notifications are the
stream's second consumer, apart from the counting one; each consumer runs isolated)."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.notify import fanout
from chalicelib.services import stream
from chalicelib.services.realtime import sender
from tests.harness import Fleet, assert_statistics_equal_recount
from tests.integration.sockets import Sockets

NODES = ["n1", "n2", "n3"]


def keyed(nodes: list[str], fail: bool = False) -> dict[str, Any]:
    command = ["false"] if fail else ["true"]
    return {"type": "shell", "target_nodes": nodes, "parameters": {"command": command}, "concurrency_key": "deploy-1"}


class Broken:
    """Raises on every call, and counts them."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise RuntimeError("push endpoint down")


@pytest.fixture
def broken_pushes_and_notifications(ws: Sockets, monkeypatch: pytest.MonkeyPatch) -> tuple[Broken, Broken]:
    """Every WebSocket send and every notification fan-out raises, on every batch."""
    pushes, notifications = Broken(), Broken()
    monkeypatch.setattr(sender, "send_all", pushes)
    monkeypatch.setattr(fanout.store, "subscribers", notifications)
    return pushes, notifications


def test_a_task_completes_exactly_and_hands_its_key_on_while_pushes_and_notifications_fail(
        fleet: Fleet, ws: Sockets, broken_pushes_and_notifications: tuple[Broken, Broken]):
    pushes, notifications = broken_pushes_and_notifications
    # GIVEN two tasks of one concurrency key, a subscriber to each, and a node that fails
    fleet.register(*NODES)
    first = fleet.submit(keyed(NODES)).body["task_id"]
    second = fleet.submit(keyed(NODES[:1])).body["task_id"]
    ws.open(subscribe=first)
    ws.open(subscribe=second)
    fleet.settle()
    assert [fleet.task(t)["status"] for t in (first, second)] == ["running", "pending"]

    # WHEN the first task's runs finish (one fails) while every push and notification raises
    assert fleet.run_agents(NODES, fail=frozenset({"n3"})) == len(NODES) + 1

    # THEN the first ended with exact counts, released its key, and the second ran after it
    task = fleet.task(first)
    assert task["status"] == "failed", task["status"]  # max_errors 0 by default
    assert (task["node_counts"]["succeeded"], task["node_counts"]["failed"]) == (2, 1)
    assert fleet.task(second)["status"] == "completed"
    assert pushes.calls > 0
    assert notifications.calls > 0
    assert_statistics_equal_recount()


def test_a_raising_consumer_of_either_stream_consumer_does_not_stop_the_others(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch):
    # GIVEN a push and a critical consumer that raise on every batch
    seen: list[str] = []

    def raising(records: list[Any]) -> None:
        seen.append("raised")
        raise RuntimeError("down")

    def recording(records: list[Any]) -> None:
        seen.append("pushed")

    monkeypatch.setattr(stream, "PUSHES", (raising, recording))
    monkeypatch.setattr(stream, "CONSUMERS", (raising, *stream.CONSUMERS))
    fleet.register("n1")
    task_id = fleet.submit(keyed(["n1"])).body["task_id"]

    # WHEN each consumer reads the task's records
    notifier_batches = fleet.notifier.drain()
    counted_batches = fleet.stream.drain()

    # THEN the push after the raising one ran, and the notifier's batches were not redelivered
    # for it (pushes are best effort); the counting consumer's were (a critical consumer failed),
    # and once it stops raising the task goes on
    assert "pushed" in seen
    assert notifier_batches
    assert counted_batches
    monkeypatch.setattr(stream, "CONSUMERS", stream.CONSUMERS[1:])
    fleet.settle()
    assert fleet.task(task_id)["status"] == "running"
