"""Acceptance (d): an exception after each AWS call in submit, dispatch, claim, complete
and the stream handler, then redelivery — every run executes once per attempt, nothing is
lost, statistics equal a recount."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from chalicelib import config
from chalicelib.services import sweeper
from tests.faults import Faults
from tests.harness import Fleet, assert_statistics_equal_recount

NODES = ["c1", "c2"]
BODY = {"type": "config.release", "target_nodes": NODES, "parameters": {"website_id": 41}}
MAX_CALLS = 40


@pytest.fixture
def faults(fleet: Fleet) -> Iterator[Faults]:
    injector = Faults()
    injector.install()
    fleet.stream.handler = injector.wrap("stream", fleet.stream.handler)
    fleet.queue.handler = injector.wrap("dispatch", fleet.queue.handler)
    yield injector
    injector.uninstall()


class Agents:
    """Test agents that execute what they claim and remember every (run, attempt)."""

    def __init__(self, fleet: Fleet, faults: Faults) -> None:
        self.fleet, self.faults = fleet, faults
        self.executed: Counter[tuple[str, int]] = Counter()

    def work(self, task_id: str) -> None:
        for _ in range(20):
            self.fleet.settle()
            if self.fleet.task(task_id)["status"] not in ("pending", "running"):
                return
            claimed = 0
            for node in NODES:
                for run in self._claim(node):
                    claimed += 1
                    self.executed[(run["run_id"], run["attempt"])] += 1
                    self._complete(node, run)
            if not claimed:
                # a claim answer lost in a crash leaves a leased run nobody executes: the sweeper frees it
                sweeper.sweep(now=time.time() + config.lease_seconds() + 5)
        raise AssertionError(f"task {task_id} did not finish: {self.fleet.task(task_id)}")

    def _claim(self, node: str) -> list[dict]:
        with self.faults.inside("claim"):
            answer = self.fleet.agent(node, f"/v1/agents/{node}/claim", {"max": 5})
        return answer.body["runs"] if answer.status == 200 else []

    def _complete(self, node: str, run: dict) -> None:
        for _ in range(3):  # the agent retries until the service answers
            with self.faults.inside("complete"):
                answer = self.fleet.finish(node, run)
            if answer.status == 200:
                return
            assert answer.status == 500, answer
        raise AssertionError("complete never answered 200")


def submit(fleet: Fleet, faults: Faults, key: str) -> str:
    for _ in range(3):  # a client retries with the same Idempotency-Key
        with faults.inside("submit"):
            answer = fleet.submit(BODY, key=key)
        if answer.status in (200, 202):
            return str(answer.body["task_id"])
        assert answer.status == 500, answer
    raise AssertionError("submit never succeeded")


@pytest.mark.slow
@pytest.mark.parametrize("entry_point", ["submit", "dispatch", "claim", "complete", "stream"])
def test_crash_after_every_aws_call_loses_nothing_and_runs_each_attempt_once(fleet, faults, entry_point):
    # GIVEN registered nodes and agents that record every execution
    fleet.register(*NODES)
    agents = Agents(fleet, faults)
    crashes = 0
    for n in range(1, MAX_CALLS + 1):
        # WHEN the entry point crashes right after its n-th AWS call, and is redelivered / retried
        faults.arm(entry_point, n)
        task_id = submit(fleet, faults, key=f"{entry_point}-{n}")
        agents.work(task_id)
        fired = not faults.armed
        faults.arm(entry_point, 10**9)  # disarm
        # THEN the task completed, one run per node, each attempt executed exactly once
        task = fleet.task(task_id)
        assert task["status"] == "completed", (n, task)
        assert task["node_counts"]["succeeded"] == len(NODES)
        runs = fleet.runs(task_id)
        assert sorted(runs) == NODES
        if not fired:
            break
        crashes += 1
    assert crashes > 0, "the entry point made no AWS call: the test would prove nothing"
    assert all(times == 1 for times in agents.executed.values()), agents.executed
    tasks_created = fleet.stats()["total_tasks"]
    assert tasks_created == crashes + 1
    assert_statistics_equal_recount()
