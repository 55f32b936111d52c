"""Transaction conflicts on moto: a dispatch whose `start` write is lost re-reads the task and
never makes the runs again; a conflict that outlives its retries answers `503
service_unavailable` with `Retry-After`, never 409 or 500 (API.md, Errors)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.errors import Busy, ConditionFailed
from chalicelib.services import attempts
from chalicelib.store import dynamo, tasks
from tests.harness import Fleet, assert_statistics_equal_recount

NODES = ["n1", "n2", "n3"]


def shell() -> dict[str, Any]:
    return {"type": "shell", "target_nodes": NODES, "parameters": {"command": ["true"]}}


def count_fan_outs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    made: list[str] = []
    prepare = attempts.prepare_part  # (one part: a dispatch chunk; these tasks have one)

    def counting(task: Any, *args: Any) -> Any:
        made.append(task.task_id)
        return prepare(task, *args)

    monkeypatch.setattr(attempts, "prepare_part", counting)
    return made


def lose_first_start(monkeypatch: pytest.MonkeyPatch, *, lands: bool) -> list[str]:
    """The first `start` write raises a transaction conflict; when `lands`, after it was written
    (its answer lost), else before."""
    transition, lost = tasks.transition, []

    def losing(task: Any, action: str, now: str, **kwargs: Any) -> Any:
        if action == "start" and not lost:
            lost.append(task.task_id)
            if lands:
                transition(task, action, now, **kwargs)
            raise Busy(f"task {task.task_id} is being changed by another request; retry")
        return transition(task, action, now, **kwargs)

    monkeypatch.setattr(tasks, "transition", losing)
    return lost


class TestLostStart:
    @pytest.mark.parametrize("lands", [False, True], ids=["write-lost", "answer-lost"])
    def test_a_lost_start_rechecks_the_task_and_never_redoes_the_fan_out(self, fleet: Fleet, monkeypatch, lands):
        # GIVEN registered nodes and a dispatch whose first `start` write conflicts
        fleet.register(*NODES)
        made = count_fan_outs(monkeypatch)
        lost = lose_first_start(monkeypatch, lands=lands)

        # WHEN a task is submitted and dispatched
        answer = fleet.submit(shell())
        assert answer.status == 202, answer
        task_id = str(answer.body["task_id"])
        fleet.settle()

        # THEN the task started once, with one fan-out, and runs to completion with exact counts
        assert lost == [task_id]
        assert made == [task_id]
        task = fleet.task(task_id)
        assert task["status"] == "running"
        assert sorted(fleet.runs(task_id)) == NODES
        assert fleet.run_agents(NODES) == len(NODES)
        fleet.settle()
        assert fleet.task(task_id)["status"] == "completed"
        assert_statistics_equal_recount()


def transaction_conflict() -> ClientError:
    return ClientError({"Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
                        "CancellationReasons": [{"Code": "TransactionConflict"}]}, "TransactWriteItems")


class TestConflictAnswers:
    @pytest.mark.parametrize("raised", [
        lambda: ConditionFailed("another transaction was writing the item", conflict=True),
        transaction_conflict,
        lambda: ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}},
                            "UpdateItem"),
    ], ids=["condition-failed-conflict", "transaction-conflict", "throttled"])
    def test_a_conflict_that_outlives_its_retries_answers_503_with_retry_after(
            self, fleet: Fleet, monkeypatch, raised):
        # GIVEN a running task
        task_id = fleet.started(shell())

        # WHEN every write of the task conflicts (the retries ran out)
        def conflicting(*args: Any, **kwargs: Any) -> Any:
            raise raised()

        monkeypatch.setattr(dynamo.DynamoBackend, "update", conflicting)
        monkeypatch.setattr(dynamo.DynamoBackend, "commit", conflicting)
        answer = fleet.user("POST", f"/v1/tasks/{task_id}/cancel")

        # THEN the client is told to come back: 503 service_unavailable with Retry-After
        assert answer.status == 503, answer
        assert answer.body["error"]["code"] == "service_unavailable"
        assert int(answer.headers["Retry-After"]) >= 1

    def test_the_write_is_retried_and_lands_when_the_conflict_passes(self, fleet: Fleet, monkeypatch):
        # GIVEN a running task whose next two writes conflict
        task_id = fleet.started(shell())
        update, commit, failures = dynamo.DynamoBackend.update, dynamo.DynamoBackend.commit, [2]

        def flaky(write: Any) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                if failures[0] > 0:
                    failures[0] -= 1
                    raise ConditionFailed("another transaction was writing the item", conflict=True)
                return write(*args, **kwargs)
            return call

        monkeypatch.setattr(dynamo.DynamoBackend, "update", dynamo.retried(flaky(update)))
        monkeypatch.setattr(dynamo.DynamoBackend, "commit", dynamo.retried(flaky(commit)))

        # WHEN the user cancels THEN the cancel lands
        answer = fleet.user("POST", f"/v1/tasks/{task_id}/cancel")
        assert answer.status == 202, answer
        assert failures == [0]
        fleet.settle()
        assert fleet.task(task_id)["status"] == "cancelled"
