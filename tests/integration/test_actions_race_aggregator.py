"""User actions racing the stream aggregator on a busy task, with DynamoDB's conflicts and
throttles injected (fidelity: 5 % of transactions cancelled with TransactionConflict, 2 % of
requests throttled): cancel, retry and confirm are never lost, never answered 500, and a
conflict reaches the client only as 409/503 with `Retry-After`; at rest the statistics equal a
recount (invariants 2, 4, 8)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fleetrun.local import fidelity
from tests.harness import Answer, Fleet, assert_statistics_equal_recount
from tests.scenarios import RUNNER, iac
from tests.waiting import wait_for

NODES = [f"n{i:02d}" for i in range(12)]
#: an answer a client may retry: a lost race (409 conflict) or a busy database (503)
RETRYABLE = {(409, "conflict"), (503, "service_unavailable")}


class Client:
    """Calls that retry what the contract says is safe to retry, and remember every answer."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.answers: Counter[tuple[int, str]] = Counter()
        self.lock = threading.Lock()

    def until_answered(self, call: Callable[[], Answer], attempts: int = 60) -> Answer:
        for _ in range(attempts):
            answer = call()
            code = answer.body["error"]["code"] if answer.status >= 400 and answer.body else ""
            with self.lock:
                self.answers[(answer.status, code)] += 1
            assert answer.status < 500 or answer.status == 503, answer
            if answer.status == 503:
                assert int(answer.headers["Retry-After"]) >= 1, answer
            if (answer.status, code) not in RETRYABLE:
                return answer
            time.sleep(0.01)  # Retry-After is a second; the test's clock cannot wait that long
        raise AssertionError(f"still refused after {attempts} tries: {answer}")

    def act(self, task_id: str, action: str, body: dict[str, Any] | None = None) -> Answer:
        return self.until_answered(lambda: self.fleet.user("POST", f"/v1/tasks/{task_id}/{action}", body))

    def agent(self, node: str, route: str, body: dict[str, Any]) -> Answer:
        return self.until_answered(lambda: self.fleet.agent(node, route, body))

    def task(self, task_id: str) -> dict[str, Any]:
        answer = self.until_answered(lambda: self.fleet.user("GET", f"/v1/tasks/{task_id}"))
        assert answer.status == 200, answer
        return answer.body  # type: ignore[no-any-return]

    def status_becomes(self, task_id: str, status: str, timeout: float = 60) -> None:
        wait_for(lambda: self.task(task_id)["status"] == status, timeout, f"task {task_id} {status}")

    def claim(self, node: str) -> list[dict[str, Any]]:
        answer = self.agent(node, f"/v1/agents/{node}/claim", {"max": 10})
        assert answer.status == 200, answer
        return answer.body["runs"]  # type: ignore[no-any-return]

    def finish(self, node: str, run: dict[str, Any], status: str = "succeeded") -> Answer:
        error = "step exited 1" if status == "failed" else None
        return self.agent(node, f"/v1/runs/{run['run_id']}/complete",
                          {"attempt": run["attempt"], "status": status, "error_message": error})


class Aggregator:
    """Drains the stream (and the queues) over and over on its own thread, as Lambda would."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet, self.stop, self.errors = fleet, threading.Event(), []
        self.thread = threading.Thread(target=self._run, name="aggregator", daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.fleet.stream.drain()
                self.fleet.queue.drain()
            except Exception as error:  # a pump failure is a test failure, reported at the end
                self.errors.append(error)
                return

    def __enter__(self) -> Aggregator:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.errors, self.errors


@pytest.fixture
def harsh(fleet: Fleet) -> Iterator[Callable[[], None]]:
    """Call it to turn on 5 % transaction conflicts and 2 % throttles; off again at the end."""
    previous = fidelity.current()

    def turn_on() -> None:
        fidelity.install(previous.with_rates(conflict_rate=0.05, throttle_rate=0.02))

    yield turn_on
    fidelity.install(previous)


def settle_calmly(fleet: Fleet, task_id: str, status: str) -> None:
    """Injections off, the stream and the queues drained: the task rests in `status`."""
    fidelity.install(fidelity.current().with_rates(conflict_rate=0.0, throttle_rate=0.0))

    def rested() -> bool:
        fleet.settle()
        return bool(fleet.task(task_id)["status"] == status)

    wait_for(rested, 30, f"task {task_id} {status}")


def busy_task(fleet: Fleet, **extra: Any) -> str:
    fleet.register(*NODES)
    answer = fleet.submit({"type": "shell", "target_nodes": NODES, "parameters": {"command": ["true"]}, **extra})
    assert answer.status == 202, answer
    fleet.settle()
    return str(answer.body["task_id"])


def test_a_cancel_racing_the_aggregator_takes_effect(fleet: Fleet, harsh: Callable[[], None]):
    # GIVEN a busy task: half its nodes finish while the aggregator drains the stream
    task_id, client = busy_task(fleet), Client(fleet)
    harsh()
    claimed = {node: client.claim(node) for node in NODES}
    with Aggregator(fleet):
        for node in NODES[:6]:
            for run in claimed[node]:
                assert client.finish(node, run).status == 200
        # WHEN the user cancels while the rest keep finishing
        cancelled: list[Answer] = []
        user = threading.Thread(target=lambda: cancelled.append(client.act(task_id, "cancel")))
        user.start()
        for node in NODES[6:9]:
            for run in claimed[node]:
                client.finish(node, run)
        user.join(60)
        # AND the runs still running hear of it and end (their agents report them)
        for node in NODES[9:]:
            for run in claimed[node]:
                client.finish(node, run, "cancelled")
    # THEN the cancel landed, and the task ends cancelled with exact statistics
    assert cancelled[0].status == 202, cancelled
    settle_calmly(fleet, task_id, "cancelled")
    assert_statistics_equal_recount()
    assert not any(status >= 500 and status != 503 for status, _ in client.answers)


def test_a_retry_racing_the_aggregator_runs_the_failed_nodes_again(fleet: Fleet, harsh: Callable[[], None]):
    # GIVEN a busy task whose last nodes fail while the aggregator drains
    task_id, client = busy_task(fleet, max_errors="100%"), Client(fleet)
    failing = set(NODES[-3:])
    harsh()
    with Aggregator(fleet):
        for node in NODES:
            for run in client.claim(node):
                assert client.finish(node, run, "failed" if node in failing else "succeeded").status == 200
        # WHEN the user retries the failed nodes the moment the task ends
        client.status_becomes(task_id, "partial_failure")
        retried = client.act(task_id, "retry", {"scope": "failed"})
        assert retried.status == 202, retried
        # THEN exactly the failed nodes run again, and this time they succeed
        again: list[str] = []
        deadline = time.monotonic() + 60
        while len(again) < len(failing) and time.monotonic() < deadline:
            for node in sorted(failing):
                for run in client.claim(node):
                    assert run["attempt"] == 2
                    assert client.finish(node, run).status == 200
                    again.append(run["node"])
    assert sorted(again) == sorted(failing)
    settle_calmly(fleet, task_id, "completed")
    task = fleet.task(task_id)
    assert task["node_counts"]["succeeded"] == len(NODES)
    assert task["node_counts"]["failed"] == 0
    assert_statistics_equal_recount()


def test_a_confirm_racing_the_aggregator_applies_the_plan(fleet: Fleet, harsh: Callable[[], None]):
    # GIVEN a two-phase task whose plan is ready, its runner heartbeating the reservation
    fleet.register(RUNNER)
    answer = fleet.submit(iac())
    assert answer.status == 202, answer
    task_id, client = str(answer.body["task_id"]), Client(fleet)
    fleet.settle()
    (plan,) = fleet.claim(RUNNER)
    harsh()
    with Aggregator(fleet):
        assert client.finish(RUNNER, plan).status == 200
        client.status_becomes(task_id, "apply_pending")
        # WHEN the user confirms while the runner holds the plan and the stream is drained
        confirmed = client.act(task_id, "confirm")
        assert confirmed.status == 202, confirmed
        # THEN the apply is claimed by the runner and finishes
        applies: list[dict[str, Any]] = []
        wait_for(lambda: applies.extend(client.claim(RUNNER)) or applies, 60, "the apply claimed")
        (apply,) = applies
        assert (apply["phase"], apply["step"]) == ("apply", "apply")
        assert client.finish(RUNNER, apply).status == 200
    settle_calmly(fleet, task_id, "completed")
    assert_statistics_equal_recount()
