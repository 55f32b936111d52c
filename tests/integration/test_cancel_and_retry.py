"""Acceptance (c): cancelling a task mid-run, retrying it (scope failed and all), and what
a stale attempt may still do afterwards; statistics follow and equal a recount."""

from __future__ import annotations

from typing import Any

from chalicelib import clock
from chalicelib.errors import Busy
from chalicelib.services import cancellation, sweeper
from tests.harness import Fleet, assert_statistics_equal_recount
from tests.scenarios import NODES, shell


def mid_run(fleet: Fleet) -> tuple[str, dict[str, Any]]:
    """A task where n1 succeeded, n2 is running (its claimed run is returned) and n3 pending."""
    task_id = fleet.started(shell())
    (run1,) = fleet.claim("n1")
    assert fleet.finish("n1", run1).status == 200
    (run2,) = fleet.claim("n2")
    fleet.settle()
    counts = fleet.task(task_id)["node_counts"]
    assert (counts["succeeded"], counts["running"], counts["pending"]) == (1, 1, 1)
    return task_id, run2


def heartbeat(fleet: Fleet, node: str, run: dict[str, Any]) -> Any:
    return fleet.agent(node, f"/v1/runs/{run['run_id']}/heartbeat", {"attempt": run["attempt"], "progress": 10})


def cancelled(fleet: Fleet) -> str:
    """A task cancelled mid-run: n1 succeeded, n2 stopped when told, n3 never started."""
    task_id, run2 = mid_run(fleet)
    assert fleet.user("POST", f"/v1/tasks/{task_id}/cancel").status == 202
    fleet.settle()
    assert fleet.finish("n2", run2, "failed", "stopped").status == 200
    fleet.settle()
    assert fleet.task(task_id)["status"] == "cancelled"
    return task_id


def retry(fleet: Fleet, task_id: str, scope: str = "failed") -> Any:
    return fleet.user("POST", f"/v1/tasks/{task_id}/retry", {"scope": scope})


def partially_failed(fleet: Fleet) -> str:
    task_id = fleet.started(shell(max_errors=1))
    fleet.run_agents(NODES, fail=frozenset({"n2"}))
    assert fleet.task(task_id)["status"] == "partial_failure"
    return task_id


class TestCancel:
    def test_cancel_answers_202_with_status_cancelling(self, fleet):
        # GIVEN a task mid-run
        task_id, _ = mid_run(fleet)

        # WHEN it is cancelled
        answer = fleet.user("POST", f"/v1/tasks/{task_id}/cancel")

        # THEN
        assert answer.status == 202, answer
        assert answer.body["status"] == "cancelling"
        assert answer.body["completed_at"] is None
        assert fleet.task(task_id)["status"] == "cancelling"

    def test_pending_nodes_are_cancelled_and_running_ones_are_told_to_stop(self, fleet):
        # GIVEN a task mid-run, cancelled
        task_id, run2 = mid_run(fleet)
        fleet.user("POST", f"/v1/tasks/{task_id}/cancel")

        # WHEN the stream and the queue catch up, and n2 heartbeats
        fleet.settle()
        answer = heartbeat(fleet, "n2", run2)

        # THEN n3 is cancelled, n2 still runs but is asked to stop, n1 keeps its success
        runs = fleet.runs(task_id)
        assert runs["n3"]["status"] == "cancelled"
        assert runs["n2"]["status"] == "running"
        assert runs["n1"]["status"] == "succeeded"
        assert answer.status == 200, answer
        assert answer.body["cancel_requested"] is True
        assert fleet.task(task_id)["status"] == "cancelling"
        assert fleet.claim("n3") == []

    def test_the_running_node_is_told_to_stop_before_the_stream_catches_up(self, fleet):
        # GIVEN a task mid-run (3 targets: within the inline cancel's limit)
        task_id, run2 = mid_run(fleet)
        # WHEN it is cancelled, and n2 heartbeats before the stream or the queue moved
        assert fleet.user("POST", f"/v1/tasks/{task_id}/cancel").status == 202
        answer = heartbeat(fleet, "n2", run2)
        # THEN n2 is already asked to stop, and n3 can no longer be claimed
        assert answer.status == 200, answer
        assert answer.body["cancel_requested"] is True
        assert fleet.claim("n3") == []

    def test_a_failed_inline_cancel_still_answers_202_and_the_cancel_job_does_it(self, fleet, monkeypatch):
        # GIVEN a task mid-run, and runs that cannot be written for a moment
        task_id, run2 = mid_run(fleet)
        real = cancellation.cancel_runs
        calls: list[str] = []

        def busy_once(*args: Any, **kwargs: Any) -> int:
            calls.append(args[0])
            if len(calls) == 1:
                raise Busy("throttled")
            return real(*args, **kwargs)
        monkeypatch.setattr(cancellation, "cancel_runs", busy_once)
        # WHEN it is cancelled
        answer = fleet.user("POST", f"/v1/tasks/{task_id}/cancel")
        # THEN the request succeeds, and the job that the stream sends does the runs
        assert answer.status == 202, answer
        fleet.settle()
        assert len(calls) >= 2
        assert fleet.runs(task_id)["n3"]["status"] == "cancelled"
        assert heartbeat(fleet, "n2", run2).body["cancel_requested"] is True

    def test_a_stopped_node_is_recorded_cancelled_and_the_task_ends_cancelled(self, fleet):
        # GIVEN a cancelling task whose n2 was told to stop
        task_id, run2 = mid_run(fleet)
        fleet.user("POST", f"/v1/tasks/{task_id}/cancel")
        fleet.settle()

        # WHEN n2 reports that it stopped (as a failure)
        answer = fleet.finish("n2", run2, "failed", "stopped")
        fleet.settle()

        # THEN n2 counts as cancelled, and the task is cancelled with completed_at
        assert answer.status == 200, answer
        runs = fleet.runs(task_id)
        assert runs["n2"]["status"] == "cancelled"
        task = fleet.task(task_id)
        assert task["status"] == "cancelled"
        assert task["completed_at"] is not None
        assert task["node_counts"] == {"pending": 0, "running": 0, "apply_pending": 0, "succeeded": 1,
                                       "failed": 0, "timed_out": 0, "cancelled": 2}
        names = [e.get("name") for e in fleet.events(task_id)]
        assert "task.cancel_requested" in names
        assert "task.cancelled" in names

    def test_statistics_count_the_task_cancelled(self, fleet):
        # GIVEN / WHEN a task cancelled mid-run
        cancelled(fleet)

        # THEN
        stats = fleet.stats()
        assert stats["total_tasks"] == 1
        assert stats["by_status"]["cancelled"] == 1
        assert stats["by_status"]["cancelling"] == 0
        assert stats["running_tasks"] == 0
        assert stats["success_rate"] is None
        assert stats["node_runs"] == {"succeeded": 1, "failed": 0, "timed_out": 0, "cancelled": 2}
        assert_statistics_equal_recount()

    def test_cancel_of_a_cancelled_task_is_an_invalid_transition(self, fleet):
        # GIVEN a cancelled task
        task_id = cancelled(fleet)

        # WHEN
        answer = fleet.user("POST", f"/v1/tasks/{task_id}/cancel")

        # THEN
        assert answer.status == 409, answer
        assert answer.body["error"]["code"] == "invalid_transition"
        assert answer.body["error"]["current_status"] == "cancelled"

    def test_cancel_before_dispatch_ends_cancelled_without_runs_starting(self, fleet):
        # GIVEN a task accepted but not yet dispatched
        fleet.register(*NODES)
        task_id = fleet.submit(shell()).body["task_id"]

        # WHEN it is cancelled, then everything catches up
        answer = fleet.user("POST", f"/v1/tasks/{task_id}/cancel")
        fleet.settle()

        # THEN no node can start and the task is cancelled
        assert answer.status == 202, answer
        assert all(fleet.claim(node) == [] for node in NODES)
        task = fleet.task(task_id)
        assert task["status"] == "cancelled"
        assert task["completed_at"] is not None
        assert_statistics_equal_recount()


class TestRetry:
    def test_retry_response_is_already_pending_with_cleared_fields(self, fleet):
        # GIVEN a cancelled task
        task_id = cancelled(fleet)
        before = fleet.task(task_id)
        assert before["completed_at"] is not None

        # WHEN it is retried
        answer = retry(fleet, task_id)

        # THEN the answer itself shows the new attempt, pending, with nothing left of the old end
        assert answer.status == 202, answer
        assert answer.body["status"] == "pending"
        assert answer.body["attempt"] == 2
        assert answer.body["completed_at"] is None
        assert answer.body["error_message"] is None
        assert fleet.task(task_id)["status"] == "pending"
        names = [e.get("name") for e in fleet.events(task_id)]
        assert "task.retried" in names

    def test_retry_failed_runs_again_only_the_nodes_that_did_not_succeed(self, fleet):
        # GIVEN a cancelled task, retried with scope failed
        task_id = cancelled(fleet)
        retry(fleet, task_id)

        # WHEN the retry is dispatched and every node asks for work
        fleet.settle()
        claimed = {node: fleet.claim(node) for node in NODES}

        # THEN n2 and n3 run again as attempt 2; n1 keeps its first, successful attempt
        assert claimed["n1"] == []
        assert [r["attempt"] for r in claimed["n2"]] == [2]
        assert [r["attempt"] for r in claimed["n3"]] == [2]
        runs = fleet.runs(task_id)
        assert (runs["n1"]["status"], runs["n1"]["attempt"]) == ("succeeded", 1)
        assert fleet.task(task_id)["status"] == "running"

    def test_a_retried_task_completes_and_leaves_cancelled_in_the_statistics(self, fleet):
        # GIVEN a cancelled task, retried with scope failed
        task_id = cancelled(fleet)
        retry(fleet, task_id)
        fleet.settle()

        # WHEN the re-run nodes succeed
        assert fleet.run_agents(NODES) == 2

        # THEN the task completed and the statistics moved it out of cancelled
        task = fleet.task(task_id)
        assert task["status"] == "completed"
        assert task["attempt"] == 2
        assert task["progress"] == 100
        assert task["completed_at"] is not None
        assert task["node_counts"]["succeeded"] == 3
        assert sum(task["node_counts"].values()) == 3
        stats = fleet.stats()
        assert stats["total_tasks"] == 1
        assert stats["by_status"]["cancelled"] == 0
        assert stats["by_status"]["completed"] == 1
        assert stats["by_status"]["pending"] == 0
        assert stats["success_rate"] == 100.0
        assert stats["avg_duration_seconds"] is not None
        assert stats["node_runs"] == {"succeeded": 3, "failed": 0, "timed_out": 0, "cancelled": 0}
        assert_statistics_equal_recount()

    def test_retry_all_of_a_partial_failure_runs_every_node_again(self, fleet):
        # GIVEN a task that ended partial_failure (n2 failed)
        task_id = partially_failed(fleet)
        attempts = {node: run["attempt"] for node, run in fleet.runs(task_id).items()}

        # WHEN it is retried with scope all and the stream catches up
        answer = retry(fleet, task_id, "all")
        fleet.settle()

        # THEN every node is pending again with its attempt + 1, and all can run
        assert answer.status == 202, answer
        assert answer.body["node_counts"]["pending"] == 3
        runs = fleet.runs(task_id)
        assert {node: run["attempt"] for node, run in runs.items()} == {n: a + 1 for n, a in attempts.items()}
        assert {run["status"] for run in runs.values()} == {"pending"}
        assert fleet.task(task_id)["progress"] == 0
        assert fleet.run_agents(NODES) == 3
        task = fleet.task(task_id)
        assert task["status"] == "completed"
        assert task["node_counts"]["succeeded"] == 3
        stats = fleet.stats()
        assert stats["by_status"]["partial_failure"] == 0
        assert stats["completed_tasks"] == 1
        assert stats["node_runs"] == {"succeeded": 3, "failed": 0, "timed_out": 0, "cancelled": 0}
        assert_statistics_equal_recount()

    def test_retry_of_a_running_task_is_an_invalid_transition(self, fleet):
        # GIVEN a running task
        task_id, _ = mid_run(fleet)

        # WHEN
        answer = retry(fleet, task_id)

        # THEN
        assert answer.status == 409, answer
        assert answer.body["error"]["code"] == "invalid_transition"
        assert answer.body["error"]["current_status"] == "running"
        assert set(answer.body["error"]["allowed_from"]) == {"failed", "partial_failure", "cancelled"}
        assert fleet.task(task_id)["attempt"] == 1

    def test_a_late_completion_of_the_stale_attempt_is_rejected_and_changes_nothing(self, fleet):
        # GIVEN a partial_failure retried with scope failed: n2 runs again as attempt 2
        task_id = partially_failed(fleet)
        stale = {"run_id": f"{task_id}.n2", "attempt": 1}
        retry(fleet, task_id)
        fleet.settle()
        (fresh,) = fleet.claim("n2")
        fleet.settle()
        before = (fleet.task(task_id), fleet.runs(task_id), fleet.stats())

        # WHEN attempt 1 of n2 reports again, as succeeded and as failed
        late_success = fleet.finish("n2", stale)
        late_failure = fleet.finish("n2", stale, "failed", "late")
        fleet.settle()

        # THEN both are 409 and nothing moved
        assert late_success.status == 409, late_success
        assert late_failure.status == 409, late_failure
        after = (fleet.task(task_id), fleet.runs(task_id), fleet.stats())
        assert after[0] == before[0]
        assert after[1] == before[1]
        assert {k: v for k, v in after[2].items() if k != "as_of"} == {
            k: v for k, v in before[2].items() if k != "as_of"
        }
        assert fleet.finish("n2", fresh).status == 200
        fleet.settle()
        assert fleet.task(task_id)["status"] == "completed"
        assert_statistics_equal_recount()

    def test_a_stale_heartbeat_after_retry_loses_the_lease(self, fleet):
        # GIVEN a cancelled task retried: n2's attempt 1 is gone
        task_id = cancelled(fleet)
        retry(fleet, task_id)
        fleet.settle()

        # WHEN the old attempt heartbeats
        answer = heartbeat(fleet, "n2", {"run_id": f"{task_id}.n2", "attempt": 1})

        # THEN
        assert answer.status == 409, answer
        assert answer.body["error"]["reason"] == "lease_lost"

    def test_retry_twice_in_a_row_is_rejected_the_second_time(self, fleet):
        # GIVEN a cancelled task retried once
        task_id = cancelled(fleet)
        assert retry(fleet, task_id).status == 202

        # WHEN it is retried again before anything ran
        again = retry(fleet, task_id)

        # THEN the second is an invalid transition; one new attempt only
        assert again.status == 409, again
        assert again.body["error"]["current_status"] == "pending"
        fleet.settle()
        assert fleet.task(task_id)["attempt"] == 2

    def test_cancel_right_after_retry_ends_cancelled(self, fleet):
        # GIVEN a cancelled task retried, its retry not yet dispatched
        task_id = cancelled(fleet)
        assert retry(fleet, task_id).status == 202

        # WHEN it is cancelled at once, everything catches up and the sweeper passes later
        answer = fleet.user("POST", f"/v1/tasks/{task_id}/cancel")
        fleet.settle()
        sweeper.sweep(clock.now_epoch() + 3600)
        fleet.settle()

        # THEN it is cancelled again, with counts that match its runs
        assert answer.status == 202, answer
        task = fleet.task(task_id)
        assert task["status"] == "cancelled", task["node_counts"]
        runs = fleet.runs(task_id)
        assert sum(run["status"] == "pending" for run in runs.values()) == task["node_counts"]["pending"]
        assert_statistics_equal_recount()
