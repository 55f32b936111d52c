"""The statistics reconcile in bounded steps (services/reconcile.py): a pass over more tasks
than one step reads finishes across invocations (jobs on the dispatch queue), repairs the
drift exactly once, and survives duplicated and lost continuations."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import boto3
import pytest

from chalicelib.services import reconcile, statistics
from chalicelib.store import counters
from tests.harness import Fleet, assert_statistics_equal_recount

TASKS = 5


@pytest.fixture
def small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconcile, "TASK_CHUNK", 2)
    monkeypatch.setattr(reconcile, "SCOPE_CHUNK", 3)


def submit_tasks(fleet: Fleet) -> None:
    for i in range(TASKS):
        body = {"type": "shell", "target_nodes": [f"gone-{i}"], "parameters": {"command": ["true"]}}
        assert fleet.submit(body, who="alice" if i % 2 else "bob").status == 202
    fleet.settle()
    assert_statistics_equal_recount()


def drift_the_counters() -> None:
    counters.adjust_stats("all", {"total": Decimal(3)})
    counters.adjust_stats(counters.stats_scope(owner="bob"), {"ty_shell": Decimal(-1)})


def state(fleet: Fleet) -> dict[str, Any]:
    item = boto3.client("dynamodb").get_item(TableName=fleet.provisioned.table_name,
                                             Key={"pk": {"S": "RECONCILE"}, "sk": {"S": "PASS"}}, ConsistentRead=True)
    return {k: v.get("S", v.get("N")) for k, v in item["Item"].items()}


def test_a_pass_over_more_tasks_than_a_step_finishes_across_invocations(fleet, small_steps):
    # GIVEN more tasks than one step reads, and counters that drifted
    submit_tasks(fleet)
    drift_the_counters()
    # WHEN the nightly schedule starts a pass and the dispatch queue runs its steps
    fleet.client.lambda_.invoke("reconcile_statistics", fleet.client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={},
        resources=["arn:aws:events:us-east-1:123456789012:rule/fleetrun-reconcile_statistics"]))
    fleet.settle()
    # THEN the pass ended after several steps and the drift is repaired
    done = state(fleet)
    assert done["phase"] == "done"
    assert int(done["step"]) >= TASKS // 2 + 2  # task steps, then scope steps
    assert int(done["drift_scopes"]) == 2
    assert_statistics_equal_recount()


def test_a_duplicated_step_adds_nothing_twice(fleet, small_steps):
    submit_tasks(fleet)
    drift_the_counters()
    pass_id = reconcile._open_pass_quietly()
    # WHEN the first step's job comes twice
    following, _ = reconcile.step(pass_id, 0)
    assert following == 1
    assert reconcile.step(pass_id, 0) == (None, {})
    # THEN the rest of the pass repairs the drift exactly
    number: int | None = following
    drift: dict[str, Any] = {}
    while number is not None:
        number, repaired = reconcile.step(pass_id, number)
        drift.update(repaired)
    assert drift == {"all": {"total": Decimal(-3)}, counters.stats_scope(owner="bob"): {"ty_shell": Decimal(1)}}
    assert_statistics_equal_recount()


def test_a_pass_whose_continuation_was_lost_is_resumed_by_the_next_start(fleet, small_steps, monkeypatch):
    submit_tasks(fleet)
    drift_the_counters()
    # GIVEN a pass whose chain broke after its first step (the next job was never sent)
    pass_id = reconcile._open_pass_quietly()
    assert reconcile.step(pass_id, 0)[0] == 1
    # WHEN the schedule fires again once the pass has stalled
    monkeypatch.setattr(reconcile, "STALLED_SECONDS", 0)
    assert statistics.start_reconcile() == pass_id
    fleet.settle()
    # THEN the same pass went on from where it stood, to the end
    assert state(fleet)["phase"] == "done"
    assert_statistics_equal_recount()


def test_a_tasks_step_recounts_about_its_budget_of_runs(fleet, monkeypatch):
    # GIVEN four active tasks of three nodes each, and steps that recount about five runs
    monkeypatch.setattr(reconcile, "MAX_RECOUNTED_RUNS_PER_STEP", 5)
    for i in range(4):
        nodes = [f"far-{i}-{n}" for n in range(3)]
        assert fleet.submit({"type": "shell", "target_nodes": nodes, "parameters": {"command": ["true"]}}).status == 202
    fleet.settle()
    recounted: list[list[str]] = []  # the tasks each step recounted
    step, repair = reconcile._tasks_step, reconcile.recount_runs.repair

    def a_step(*args: Any) -> Any:
        recounted.append([])
        return step(*args)

    def recount(task: Any) -> bool:
        recounted[-1].append(task.task_id)
        return repair(task)

    monkeypatch.setattr(reconcile, "_tasks_step", a_step)
    monkeypatch.setattr(reconcile.recount_runs, "repair", recount)
    # WHEN a whole pass runs
    reconcile.run_pass()
    # THEN each step recounted one task (two would pass five runs), every task once
    assert [len(tasks) for tasks in recounted if tasks] == [1, 1, 1, 1]
    assert len({task for tasks in recounted for task in tasks}) == 4
    assert_statistics_equal_recount()
