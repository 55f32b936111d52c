"""Acceptance (e): a replayed stream batch and a duplicated SQS message change nothing
(invariant 4), and statistics still equal a recount (invariant 5)."""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import boto3
import pytest

from chalicelib.resources import DISPATCH_QUEUE
from fleetrun.local.pumps import LambdaContext
from tests.harness import Fleet, assert_statistics_equal_recount
from tests.scenarios import NODES, shell


class Recorded:
    """Every event the pumps delivered to the stream handler and to the dispatch worker."""

    def __init__(self, fleet: Fleet) -> None:
        self.stream_events: list[dict[str, Any]] = []
        self.sqs_events: list[dict[str, Any]] = []
        fleet.stream.handler = self._recording(fleet.stream.handler, self.stream_events)
        fleet.queue.handler = self._recording(fleet.queue.handler, self.sqs_events)

    @staticmethod
    def _recording(handler: Any, into: list[dict[str, Any]]) -> Any:
        def record(event: dict[str, Any], context: Any) -> Any:
            into.append(copy.deepcopy(event))
            return handler(event, context)

        return record

    def job_bodies(self) -> list[str]:
        """Each distinct job body processed (a body the worker failed on is delivered again)."""
        return list(dict.fromkeys(record["body"] for event in self.sqs_events for record in event["Records"]))

    def deliveries(self) -> list[str]:
        return [record["body"] for event in self.sqs_events for record in event["Records"]]

    def jobs(self, kind: str) -> list[str]:
        return [body for body in self.job_bodies() if json.loads(body).get("job") == kind]


@pytest.fixture
def recorded(fleet: Fleet) -> Recorded:
    return Recorded(fleet)


def table_state(fleet: Fleet) -> dict[tuple[str, str], dict[str, Any]]:
    """Every task, run, event and statistics item (rate buckets and nodes change with each call)."""
    client = boto3.client("dynamodb")
    items: dict[tuple[str, str], dict[str, Any]] = {}
    kwargs: dict[str, Any] = {"TableName": fleet.provisioned.table_name, "ConsistentRead": True}
    while True:
        page = client.scan(**kwargs)
        for item in page["Items"]:
            pk, sk = item["pk"]["S"], item["sk"]["S"]
            if pk.startswith(("TASK#", "STATS#", "IDEM#")):
                items[(pk, sk)] = item
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def redeliver_stream(fleet: Fleet, events: list[dict[str, Any]]) -> None:
    for event in events:
        response = fleet.app_module.stream_aggregator(copy.deepcopy(event), LambdaContext("fleetrun-stream"))
        assert response == {"batchItemFailures": []}


def resend_jobs(fleet: Fleet, bodies: list[str]) -> None:
    sqs = boto3.client("sqs")
    for body in bodies:
        sqs.send_message(QueueUrl=fleet.provisioned.queue_urls[DISPATCH_QUEUE.name], MessageBody=body)


def public_view(fleet: Fleet, task_id: str) -> tuple[Any, ...]:
    stats = {k: v for k, v in fleet.stats().items() if k != "as_of"}
    return fleet.task(task_id), fleet.runs(task_id), fleet.events(task_id), stats


def finished_task(fleet: Fleet) -> str:
    """A task that went through a heartbeat, a failure, a retry and a completion."""
    task_id = fleet.started(shell(max_errors=1))
    (run,) = fleet.claim("n1")
    fleet.agent("n1", f"/v1/runs/{run['run_id']}/heartbeat", {"attempt": 1, "progress": 40, "step": "run"})
    fleet.settle()
    fleet.run_agents(NODES, fail=frozenset({"n2"}))
    assert fleet.task(task_id)["status"] == "running"  # n1 is still leased to the first claim
    fleet.finish("n1", run)
    fleet.settle()
    assert fleet.task(task_id)["status"] == "partial_failure"
    assert fleet.user("POST", f"/v1/tasks/{task_id}/retry", {"scope": "failed"}).status == 202
    fleet.settle()
    fleet.run_agents(NODES)
    assert fleet.task(task_id)["status"] == "completed"
    return task_id


def cancelled_then_retried(fleet: Fleet) -> str:
    """A task cancelled mid-run (n1 succeeded, n2 stopped, n3 never ran), then retried: n2
    and n3 wait as attempt 2."""
    task_id = fleet.started(shell())
    (run1,) = fleet.claim("n1")
    fleet.finish("n1", run1)
    (run2,) = fleet.claim("n2")
    fleet.settle()
    fleet.user("POST", f"/v1/tasks/{task_id}/cancel")
    fleet.settle()
    fleet.finish("n2", run2, "failed", "stopped")
    fleet.settle()
    assert fleet.task(task_id)["status"] == "cancelled"
    assert fleet.user("POST", f"/v1/tasks/{task_id}/retry", {"scope": "failed"}).status == 202
    fleet.settle()
    runs = fleet.runs(task_id)
    assert [(runs[n]["status"], runs[n]["attempt"]) for n in ("n2", "n3")] == [("pending", 2), ("pending", 2)]
    return task_id


class TestStreamReplay:
    def test_replaying_every_stream_batch_after_the_end_changes_nothing(self, fleet, recorded):
        # GIVEN a task that ran to its end through a failure and a retry
        task_id = finished_task(fleet)
        assert recorded.stream_events
        before_items = table_state(fleet)
        before = public_view(fleet, task_id)

        # WHEN every stream batch is delivered again, and the jobs it sends are processed
        redeliver_stream(fleet, recorded.stream_events)
        fleet.settle()

        # THEN no item, count, progress, status, event or statistic moved
        assert table_state(fleet) == before_items
        assert public_view(fleet, task_id) == before
        assert_statistics_equal_recount()

    def test_replaying_all_records_as_one_batch_changes_nothing(self, fleet, recorded):
        # GIVEN a finished task
        task_id = finished_task(fleet)
        before_items = table_state(fleet)
        records = [record for event in recorded.stream_events for record in event["Records"]]

        # WHEN all its records come again in one batch
        redeliver_stream(fleet, [{"Records": records}])
        fleet.settle()

        # THEN
        assert table_state(fleet) == before_items
        assert fleet.task(task_id)["status"] == "completed"
        assert_statistics_equal_recount()

    def test_replaying_the_batches_so_far_mid_run_changes_nothing(self, fleet, recorded):
        # GIVEN a running task with claimed runs and a heartbeat
        task_id = fleet.started(shell())
        (run,) = fleet.claim("n1")
        (other,) = fleet.claim("n2")
        fleet.agent("n1", f"/v1/runs/{run['run_id']}/heartbeat", {"attempt": 1, "progress": 60, "step": "run"})
        fleet.settle()
        before_items = table_state(fleet)
        progress = fleet.task(task_id)["progress"]

        # WHEN every batch so far is delivered again
        redeliver_stream(fleet, recorded.stream_events)
        fleet.settle()

        # THEN nothing moved, and the task still runs to the right end
        assert table_state(fleet) == before_items
        assert fleet.task(task_id)["progress"] == progress
        fleet.finish("n1", run)
        fleet.finish("n2", other)
        fleet.run_agents(NODES)
        task = fleet.task(task_id)
        assert task["status"] == "completed"
        assert task["node_counts"]["succeeded"] == 3
        assert_statistics_equal_recount()

    def test_replaying_an_old_cancel_record_does_not_cancel_a_retried_attempt(self, fleet, recorded):
        # GIVEN a task cancelled, then retried: n2 and n3 wait as attempt 2
        task_id = cancelled_then_retried(fleet)

        # WHEN the stream batches of the first attempt are delivered again
        redeliver_stream(fleet, recorded.stream_events)
        fleet.settle()

        # THEN the retried runs are still there to be claimed
        runs = fleet.runs(task_id)
        assert [runs[n]["status"] for n in ("n2", "n3")] == ["pending", "pending"]
        assert fleet.task(task_id)["status"] == "running"


class TestSqsReplay:
    def test_resending_every_processed_job_after_the_end_changes_nothing(self, fleet, recorded):
        # GIVEN a finished task, and every job message the dispatch worker processed
        task_id = finished_task(fleet)
        bodies = recorded.job_bodies()
        assert {json.loads(body)["job"] for body in bodies} >= {"dispatch"}
        before_items = table_state(fleet)
        before = public_view(fleet, task_id)

        # WHEN each of them is sent again
        resend_jobs(fleet, bodies)
        fleet.settle()

        # THEN no run, figure or event was added
        assert table_state(fleet) == before_items
        assert public_view(fleet, task_id) == before
        assert_statistics_equal_recount()

    def test_each_dispatch_job_succeeds_on_its_first_delivery(self, fleet, recorded):
        # a log line with a reserved LogRecord key (`created`) once made every dispatch job raise
        # after its writes; only its redelivery was acknowledged
        # GIVEN the service logger at INFO, as in Lambda (POWERTOOLS_LOG_LEVEL defaults to INFO)
        service_logger = logging.getLogger("fleetrun")
        level = service_logger.level
        service_logger.setLevel(logging.INFO)
        try:
            # WHEN a task is created and dispatched
            task_id = fleet.started(shell())
        finally:
            service_logger.setLevel(level)

        # THEN its dispatch job was delivered once: it did not fail and come back
        assert fleet.task(task_id)["status"] == "running"
        assert len(recorded.deliveries()) == len(recorded.job_bodies()), recorded.deliveries()

    def test_a_duplicated_dispatch_job_mid_run_creates_no_run(self, fleet, recorded):
        # GIVEN a running task with a claimed run
        task_id = fleet.started(shell())
        fleet.claim("n1")
        fleet.settle()
        (dispatch_job,) = recorded.jobs("dispatch")
        before_items = table_state(fleet)
        before = public_view(fleet, task_id)

        # WHEN the dispatch job arrives a second time
        resend_jobs(fleet, [dispatch_job])
        fleet.settle()

        # THEN the runs, dispatch figures and events are unchanged
        assert table_state(fleet) == before_items
        assert public_view(fleet, task_id) == before
        assert before[0]["dispatch"] == {"triggered": True, "state": "done", "target_node_count": 3,
                                         "created_count": 3, "skipped_count": 0}

    def test_a_duplicated_dispatch_job_of_a_retry_creates_and_resets_nothing(self, fleet, recorded):
        # GIVEN a cancelled task retried, n2 claimed again
        task_id = cancelled_then_retried(fleet)
        fleet.claim("n2")
        fleet.settle()
        jobs = recorded.jobs("dispatch")
        assert [json.loads(body)["attempt"] for body in jobs] == [1, 2]
        before_items = table_state(fleet)

        # WHEN both dispatch jobs arrive again
        resend_jobs(fleet, jobs)
        fleet.settle()

        # THEN
        assert table_state(fleet) == before_items
        assert fleet.runs(task_id)["n2"]["status"] == "running"

    def test_a_duplicated_cancel_job_after_a_retry_cancels_nothing(self, fleet, recorded):
        # GIVEN a task cancelled, then retried: n2 and n3 wait as attempt 2
        task_id = cancelled_then_retried(fleet)
        (cancel_job,) = recorded.jobs("cancel")

        # WHEN the cancel job of the first attempt is delivered again
        resend_jobs(fleet, [cancel_job])
        fleet.settle()

        # THEN the retried runs are untouched and can still run
        runs = fleet.runs(task_id)
        assert [runs[n]["status"] for n in ("n2", "n3")] == ["pending", "pending"]
        assert fleet.run_agents(NODES) == 2
        assert fleet.task(task_id)["status"] == "completed"

    def test_a_duplicated_halt_job_after_a_retry_cancels_nothing(self, fleet, recorded):
        # GIVEN a task halted by its error budget (n1 failed, the rest cancelled), then retried
        task_id = fleet.started(shell(max_errors=0, max_concurrency=1))
        fleet.run_agents(NODES, fail=frozenset({"n1"}))
        assert fleet.task(task_id)["status"] == "failed"
        (halt_job,) = recorded.jobs("halt")
        assert fleet.user("POST", f"/v1/tasks/{task_id}/retry", {"scope": "failed"}).status == 202
        fleet.settle()
        assert {run["status"] for run in fleet.runs(task_id).values()} == {"pending"}

        # WHEN the halt job of the first attempt is delivered again
        resend_jobs(fleet, [halt_job])
        fleet.settle()

        # THEN the retried runs are untouched and the retry can complete
        assert {run["status"] for run in fleet.runs(task_id).values()} == {"pending"}
        assert fleet.run_agents(NODES) == 3
        assert fleet.task(task_id)["status"] == "completed"


class TestDuplicateCompletion:
    def test_a_duplicated_complete_call_is_200_and_counted_once(self, fleet):
        # GIVEN a run that completed
        task_id = fleet.started(shell())
        (run,) = fleet.claim("n1")
        first = fleet.finish("n1", run)
        fleet.settle()
        before = public_view(fleet, task_id)

        # WHEN the agent sends the same completion again
        second = fleet.finish("n1", run)
        fleet.settle()

        # THEN it is answered 200 and nothing is counted twice
        assert (first.status, second.status) == (200, 200)
        assert public_view(fleet, task_id) == before
        assert fleet.task(task_id)["node_counts"]["succeeded"] == 1
        fleet.run_agents(NODES)
        assert fleet.stats()["node_runs"]["succeeded"] == 3
        assert_statistics_equal_recount()

    def test_a_completion_with_another_status_after_the_first_is_a_conflict(self, fleet):
        # GIVEN a run that succeeded
        task_id = fleet.started(shell())
        (run,) = fleet.claim("n1")
        fleet.finish("n1", run)
        fleet.settle()

        # WHEN the agent then reports it failed
        answer = fleet.finish("n1", run, "failed", "changed my mind")
        fleet.settle()

        # THEN 409, and the run stays succeeded
        assert answer.status == 409, answer
        assert fleet.runs(task_id)["n1"]["status"] == "succeeded"
        assert fleet.stats()["node_runs"] == {"succeeded": 1, "failed": 0, "timed_out": 0, "cancelled": 0}
