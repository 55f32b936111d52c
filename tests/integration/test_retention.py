"""API.md "Retention": every item a task leaves behind carries the table's TTL attribute
(`expires_at`), and statistics keep counting what the TTL removes (domain/retention.py)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import boto3
import pytest

from chalicelib import clock
from chalicelib.domain import retention
from chalicelib.services import aggregation, statistics, stream
from chalicelib.store import counters, subscriptions
from chalicelib.store.models import TTL_ATTRIBUTE
from tests.harness import Fleet, assert_statistics_equal_recount, stats_scopes

NODES = ["r1", "r2"]
DAY = 86400


def shell(**extra: Any) -> dict[str, Any]:
    return {"type": "shell", "target_nodes": NODES, "parameters": {"command": ["patch"]}, "max_errors": 1, **extra}


def items_of(fleet: Fleet, task_id: str) -> list[dict[str, Any]]:
    """Every item under the task's partitions (its own and its runs' shards), raw."""
    table = boto3.client("dynamodb")
    found: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": fleet.provisioned.table_name, "FilterExpression": "begins_with(pk, :p)",
                              "ExpressionAttributeValues": {":p": {"S": f"TASK#{task_id}"}}}
    while True:
        page = table.scan(**kwargs)
        found += page["Items"]
        if "LastEvaluatedKey" not in page:
            return found
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def expiry(item: dict[str, Any]) -> int | None:
    value = item.get(TTL_ATTRIBUTE)
    return int(value["N"]) if value else None


def finished(fleet: Fleet, fail: frozenset[str] = frozenset()) -> str:
    task_id = fleet.started(shell())
    fleet.run_agents(NODES, fail=fail)
    return task_id


class TestExpiry:
    def test_an_ended_task_its_runs_and_events_expire_after_the_retention(self, fleet):
        # GIVEN a task that ran to its end
        task_id = finished(fleet)
        task = fleet.task(task_id)
        assert task["status"] == "completed"
        items = items_of(fleet, task_id)
        ended = clock.parse_rfc3339(task["completed_at"])
        # THEN the task expires the retention after it ended
        [meta] = [i for i in items if i["sk"]["S"] == "META"]
        assert expiry(meta) == int(ended) + 90 * DAY
        # AND each run the retention plus the allowance after its own end, each event item
        # that long after it was written: none before the task, none long after it
        runs = [i for i in items if i["sk"]["S"].startswith("RUN#")]
        events = [i for i in items if i["sk"]["S"].startswith("EVT#")]
        assert len(runs) == len(NODES)
        assert events
        late = int(ended) + (90 + retention.ACTIVE_ALLOWANCE_DAYS) * DAY
        for item in runs + events:
            assert expiry(item) is not None, item["sk"]
            assert int(ended) + 90 * DAY - 600 <= expiry(item) <= late + 5, item["sk"]  # type: ignore[operator]

    def test_counter_marks_expire_like_the_run_writes_they_mark(self, fleet):
        # GIVEN a task that ran to its end
        task_id = finished(fleet)
        marks = [i for i in items_of(fleet, task_id) if i["sk"]["S"].startswith("CNT#")]
        # THEN its counter marks expire the retention plus the allowance after they were written
        assert marks
        late = int(clock.now_epoch()) + (90 + retention.ACTIVE_ALLOWANCE_DAYS) * DAY
        assert all(late - 600 <= (expiry(mark) or 0) <= late for mark in marks), marks

    def test_target_chunks_go_when_the_ttl_removes_their_task(self, fleet):
        # GIVEN a task of 1,001 targets (two target chunks) and another, ended task
        nodes = [f"t{i:04d}" for i in range(1001)]  # (never registered: no agent runs them)
        answer = fleet.submit({"type": "shell", "target_nodes": nodes, "parameters": {"command": ["true"]}})
        assert answer.status == 202, answer
        task_id = str(answer.body["task_id"])
        other = finished(fleet)
        items = items_of(fleet, task_id)
        assert sorted(i["sk"]["S"] for i in items if i["sk"]["S"].startswith("TGT#")) == ["TGT#00000", "TGT#00001"]
        # WHEN the TTL removes the task item, and the stream brings the removal (twice: a replay)
        [meta] = [i for i in items if i["sk"]["S"] == "META"]
        boto3.client("dynamodb").delete_item(TableName=fleet.provisioned.table_name,
                                             Key={"pk": meta["pk"], "sk": meta["sk"]})
        delivered(stream.handle, [ttl_removal(fleet, meta, 1), ttl_removal(fleet, meta, 2)])
        # THEN its target chunks are gone too, and the other task keeps its own
        assert not [i for i in items_of(fleet, task_id) if i["sk"]["S"].startswith("TGT#")]
        assert [i for i in items_of(fleet, other) if i["sk"]["S"].startswith("TGT#")]
        assert fleet.task(other)["target_nodes"] == NODES

    def test_a_retry_clears_the_task_expiry_and_the_reset_runs(self, fleet):
        # GIVEN a task that ended partial_failure (r2 failed)
        task_id = finished(fleet, fail=frozenset({"r2"}))
        assert fleet.task(task_id)["status"] == "partial_failure"
        # WHEN it is retried
        assert fleet.user("POST", f"/v1/tasks/{task_id}/retry", {"scope": "failed"}).status == 202
        fleet.settle()
        items = {i["sk"]["S"]: i for i in items_of(fleet, task_id)}
        # THEN the task no longer expires, nor the run sent back to pending; the run that
        # succeeded keeps its own
        assert expiry(items["META"]) is None
        assert expiry(items["RUN#r2"]) is None
        assert expiry(items["RUN#r1"]) is not None

    def test_retention_days_come_from_the_environment(self, fleet, monkeypatch):
        monkeypatch.setenv("FLEETRUN_RETENTION_DAYS", "7")
        task_id = finished(fleet)
        [meta] = [i for i in items_of(fleet, task_id) if i["sk"]["S"] == "META"]
        assert expiry(meta) == int(clock.parse_rfc3339(fleet.task(task_id)["completed_at"])) + 7 * DAY

    def test_hourly_statistics_items_expire_a_day_after_their_tasks(self, fleet):
        task_id = finished(fleet)
        hour = counters.hour_of(fleet.task(task_id)["completed_at"])
        table = boto3.client("dynamodb")
        scope = counters.hour_scope("all", hour)
        found = table.query(TableName=fleet.provisioned.table_name, KeyConditionExpression="pk = :p",
                            ExpressionAttributeValues={":p": {"S": f"STATS#{scope}"}})["Items"]
        assert found
        end_of_hour = int(retention.hour_start(hour)) + 3600
        assert {expiry(item) for item in found} == {end_of_hour + 91 * DAY}
        # AND the totals never expire, and the TTL is no statistic
        totals = table.query(TableName=fleet.provisioned.table_name, KeyConditionExpression="pk = :p",
                             ExpressionAttributeValues={":p": {"S": "STATS#all"}})["Items"]
        assert totals
        assert all(expiry(item) is None for item in totals)
        assert TTL_ATTRIBUTE not in counters.read_stats(scope)

    def test_a_delivery_log_item_expires_after_the_retention(self, fleet):
        before = int(clock.now_epoch())
        item = subscriptions.record_delivery("01SUBSCRIPTION", delivery_id="d1", event="task.completed",
                                             task_id="01TASK", attempt=1, status="delivered", duration_ms=3)
        assert before + 90 * DAY <= int(item.expires_at) <= int(clock.now_epoch()) + 90 * DAY


def ttl_removal(fleet: Fleet, item: dict[str, Any], sequence: int) -> dict[str, Any]:
    """A stream record of DynamoDB's TTL deleting `item`, shaped like AWS's
    (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/time-to-live-ttl-streams.html)."""
    return {
        "eventID": f"ttl-{sequence}", "eventName": "REMOVE", "eventVersion": "1.1", "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": int(clock.now_epoch()),
            "Keys": {"pk": item["pk"], "sk": item["sk"]}, "OldImage": item,
            "SequenceNumber": str(9 * 10**20 + sequence), "SizeBytes": 512, "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
        "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
        "eventSourceARN": fleet.provisioned.stream_arn,
    }


def delivered(handler: Callable[[list[dict[str, Any]]], list[str]], records: list[dict[str, Any]]) -> None:
    """Hand `records` to a stream handler as Lambda does with ReportBatchItemFailures: a batch
    that reports a failure comes again from the first failed record on. (Under the fidelity
    layer a write may meet a conflict or a throttle at any call, as on AWS.)"""
    for _ in range(10):
        failed = handler(records)
        if not failed:
            return
        first = next(i for i, r in enumerate(records) if r["dynamodb"]["SequenceNumber"] in failed)
        records = records[first:]
    raise AssertionError(f"the records still failed after 10 deliveries: {failed}")


def every_scope() -> dict[str, dict[str, Decimal]]:
    return {scope: counters.read_stats(scope) for scope in stats_scopes()}


class TestExpiredTasksStayCounted:
    def test_a_ttl_removal_changes_no_statistic_and_no_count(self, fleet):
        # GIVEN an ended task and the statistics it counts in
        task_id = finished(fleet, fail=frozenset({"r2"}))
        before, counts = every_scope(), fleet.task(task_id)["node_counts"]
        items = items_of(fleet, task_id)
        # WHEN the TTL's REMOVE records of its runs, events and task item come (twice: replays)
        records = [ttl_removal(fleet, item, n) for n, item in enumerate(items)]
        delivered(aggregation.process_batch, records + records)
        # THEN no statistic and no count moved
        assert every_scope() == before
        assert fleet.task(task_id)["node_counts"] == counts

    def test_the_reconcile_does_not_repair_statistics_down_when_tasks_expire(self, fleet, monkeypatch):
        # GIVEN two ended tasks, and the statistics agree with a recount
        kept, gone = finished(fleet), finished(fleet, fail=frozenset({"r2"}))
        assert_statistics_equal_recount()
        before = every_scope()
        # WHEN one of them expires: the TTL deletes its items and the stream brings the removal
        items = items_of(fleet, gone)
        table = boto3.client("dynamodb")
        for item in sorted(items, key=lambda i: i["sk"]["S"] != "META"):  # the task item first
            table.delete_item(TableName=fleet.provisioned.table_name, Key={"pk": item["pk"], "sk": item["sk"]})
        fleet.settle()  # (moto's own REMOVE records: the aggregator finds no task and counts nothing)
        delivered(aggregation.process_batch, [ttl_removal(fleet, i, n) for n, i in enumerate(items)])
        # (its hour is older than the window the reconcile compares: a task expires the retention
        # after it ended, so with a one-day retention the current hour is already out of it)
        monkeypatch.setenv("FLEETRUN_RETENTION_DAYS", "1")
        drift = statistics.reconcile()
        # THEN nothing was repaired: the statistics still count both tasks
        assert drift == {}
        assert every_scope() == before
        assert fleet.stats()["total_tasks"] == 2
        assert fleet.task(kept)["status"] == "completed"


@pytest.mark.parametrize("identity", [None, {"type": "Service", "principalId": "somebody.amazonaws.com"}])
def test_only_dynamodb_ttl_removals_count_as_expiry(identity):
    from chalicelib.store.stream_records import is_expiry

    raw: dict[str, Any] = {"eventName": "REMOVE", "dynamodb": {}}
    if identity:
        raw["userIdentity"] = identity
    assert not is_expiry(raw)
    assert is_expiry({**raw, "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"}})
    assert not is_expiry({**raw, "eventName": "MODIFY", "userIdentity": {"type": "Service",
                                                                         "principalId": "dynamodb.amazonaws.com"}})
