"""/v1/schedules: an EventBridge Scheduler schedule per schedule, each firing one task via the intake queue."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from chalicelib.resources import INTAKE_QUEUE, SCHEDULE_GROUP
from chalicelib.services import schedules as schedule_service
from fleetrun.local.pumps import SqsPump
from fleetrun.local.scheduler import SchedulerStandIn
from tests.harness import Fleet

RELEASE = {"type": "config.release", "target_nodes": ["edge-1", "edge-2"], "parameters": {"website_id": 41}}
SCALE_UP = {"type": "slurm.scale_up", "target_nodes": ["n1"], "parameters": {
    "ssh_user": "root", "salt_master": "salt-1", "partition": "gpu", "password": "hunter2"}}


class Schedules:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.sqs = boto3.client("sqs")
        self.scheduler = boto3.client("scheduler")
        self.stand_in = SchedulerStandIn(self.scheduler, self.sqs, SCHEDULE_GROUP)
        self.intake = SqsPump(self.sqs, fleet.provisioned.queue_urls[INTAKE_QUEUE.name],
                              fleet.app_module.intake_worker, batch_size=INTAKE_QUEUE.batch_size)

    def create(self, expression: str = "rate(1 hour)", task: dict[str, Any] | None = None, who: str = "alice",
               roles: tuple[str, ...] = ("operator",)) -> Any:
        body = {"name": "nightly release", "expression": expression, "task": task or RELEASE}
        return self.fleet.user("POST", "/v1/schedules", body, who=who, roles=roles)

    def deliver(self) -> None:
        self.intake.drain()
        self.fleet.settle()

    def tasks(self, who: str = "alice") -> list[dict[str, Any]]:
        answer = self.fleet.user("GET", "/v1/tasks", who=who)
        assert answer.status == 200, answer
        return answer.body["items"]  # type: ignore[no-any-return]


@pytest.fixture
def schedules(fleet: Fleet) -> Schedules:
    return Schedules(fleet)


def test_creating_a_schedule_stores_it_and_creates_its_eventbridge_schedule(fleet, schedules):
    # WHEN an operator creates a schedule
    answer = schedules.create("cron(0 2 * * ? *)")
    # THEN it is answered with its next firing and stored
    assert answer.status == 201, answer
    created = answer.body
    assert created["owner"] == "alice"
    assert created["expression"] == "cron(0 2 * * ? *)"
    assert created["task"] == RELEASE
    assert created["next_fire_at"].endswith("T02:00:00.000Z")
    # AND EventBridge Scheduler targets the intake queue with the firing message
    remote = schedules.scheduler.get_schedule(GroupName=SCHEDULE_GROUP, Name=created["schedule_id"])
    assert remote["ScheduleExpression"] == "cron(0 2 * * ? *)"
    assert remote["ScheduleExpressionTimezone"] == "UTC"
    target = remote["Target"]
    assert target["Arn"] == fleet.provisioned.queue_arns[INTAKE_QUEUE.name]
    assert target["DeadLetterConfig"]["Arn"] == fleet.provisioned.dlq_arns[INTAKE_QUEUE.name]
    assert json.loads(target["Input"]) == {
        "schedule_id": created["schedule_id"], "scheduled_time": "<aws.scheduler.scheduled-time>"}
    # AND it can be read back
    assert fleet.user("GET", f"/v1/schedules/{created['schedule_id']}").body == created


def test_a_firing_creates_a_task_for_the_schedules_owner(fleet, schedules):
    created = schedules.create().body
    remote = schedules.stand_in.get(created["schedule_id"])
    # WHEN the schedule fires
    schedules.stand_in.fire(remote, datetime(2026, 11, 22, 21, 0, tzinfo=UTC))
    schedules.deliver()
    # THEN alice owns one new task, made from the schedule's body and dispatched
    [task] = schedules.tasks()
    assert task["owner"] == "alice"
    assert task["target_nodes"] == RELEASE["target_nodes"]
    assert task["parameters"] == RELEASE["parameters"]
    assert task["dispatch"]["created_count"] == 2


def test_two_firings_with_the_same_scheduled_time_create_one_task(fleet, schedules):
    created = schedules.create().body
    remote = schedules.stand_in.get(created["schedule_id"])
    at = datetime(2026, 11, 22, 21, 0, tzinfo=UTC)
    # WHEN the scheduler delivers the same firing twice (its retry, or SQS at-least-once)
    schedules.stand_in.fire(remote, at, attempt=1)
    schedules.stand_in.fire(remote, at, attempt=2)
    schedules.deliver()
    # THEN one task
    assert len(schedules.tasks()) == 1
    # AND the next scheduled time is a new task
    schedules.stand_in.fire(remote, at + timedelta(hours=1))
    schedules.deliver()
    assert len(schedules.tasks()) == 2


def test_the_local_scheduler_fires_a_rate_schedule_at_creation_and_every_interval(fleet, schedules):
    created = schedules.create("rate(1 hour)").body
    born = datetime.now(UTC)
    # WHEN the stand-in ticks now, again a moment later, then two hours later
    assert schedules.stand_in.tick(born + timedelta(seconds=1)) == 1
    assert schedules.stand_in.tick(born + timedelta(seconds=30)) == 0
    assert schedules.stand_in.tick(born + timedelta(hours=2)) == 2
    schedules.deliver()
    # THEN three tasks, one per scheduled time
    assert len(schedules.tasks()) == 3
    assert created["next_fire_at"] is not None


def test_a_schedule_deleted_between_the_local_scheduler_s_list_and_read_is_skipped(fleet, schedules, monkeypatch):
    # GIVEN two schedules, the first deleted right after the stand-in lists them (its tick used to
    # fail whole, logging an ERROR, and fire nothing until the next)
    doomed, kept = (schedules.create().body["schedule_id"] for _ in range(2))
    listed = schedules.stand_in.scheduler.list_schedules

    def list_then_delete(**kwargs: Any) -> Any:
        page = listed(**kwargs)
        assert fleet.user("DELETE", f"/v1/schedules/{doomed}").status == 200
        return page

    monkeypatch.setattr(schedules.stand_in.scheduler, "list_schedules", list_then_delete)
    # WHEN it ticks THEN the schedule still there fires, and only it
    assert schedules.stand_in.tick(datetime.now(UTC) + timedelta(seconds=1)) == 1
    schedules.deliver()
    assert len(schedules.tasks()) == 1
    assert kept in schedules.stand_in._fired_until
    assert doomed not in schedules.stand_in._fired_until


def test_secret_parameters_are_sealed_in_the_schedule_and_revealed_only_to_the_firing(fleet, schedules):
    created = schedules.create(task=SCALE_UP)
    assert created.status == 201, created
    assert created.body["task"]["parameters"]["password"] == "***"
    remote = schedules.stand_in.get(created.body["schedule_id"])
    assert "hunter2" not in json.dumps(remote, default=str)
    listed = fleet.user("GET", "/v1/schedules")
    assert "hunter2" not in json.dumps(listed.body)
    # WHEN it fires, the agent's claim carries the real password
    schedules.stand_in.fire(remote, datetime(2026, 11, 22, 21, 0, tzinfo=UTC))
    schedules.deliver()
    [task] = schedules.tasks()
    assert task["parameters"]["password"] == "***"
    fleet.register("n1")
    [run] = fleet.claim("n1")
    assert run["parameters"]["password"] == "hunter2"


def test_deleting_a_schedule_removes_both_and_a_late_firing_is_dropped(fleet, schedules):
    created = schedules.create().body
    remote = schedules.stand_in.get(created["schedule_id"])
    # WHEN it is deleted
    answer = fleet.user("DELETE", f"/v1/schedules/{created['schedule_id']}")
    assert answer.status == 200, answer
    assert answer.body["schedule_id"] == created["schedule_id"]
    # THEN neither the item nor the EventBridge schedule is left
    assert fleet.user("GET", f"/v1/schedules/{created['schedule_id']}").status == 404
    assert schedules.scheduler.list_schedules(GroupName=SCHEDULE_GROUP)["Schedules"] == []
    assert fleet.user("DELETE", f"/v1/schedules/{created['schedule_id']}").status == 404
    # AND a firing already in flight creates nothing and is not dead-lettered
    schedules.stand_in.fire(remote, datetime(2026, 11, 22, 21, 0, tzinfo=UTC))
    schedules.deliver()
    assert schedules.tasks() == []
    dlq = fleet.provisioned.dlq_urls[INTAKE_QUEUE.name]
    assert "Messages" not in schedules.sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=0)


def test_users_see_and_delete_only_their_own_schedules_and_admins_all(fleet, schedules):
    mine = schedules.create(who="alice").body
    theirs = schedules.create(who="bob").body
    assert [s["schedule_id"] for s in fleet.user("GET", "/v1/schedules", who="alice").body["items"]] == [
        mine["schedule_id"]]
    assert fleet.user("GET", f"/v1/schedules/{theirs['schedule_id']}", who="alice").status == 404
    assert fleet.user("DELETE", f"/v1/schedules/{theirs['schedule_id']}", who="alice").status == 404
    assert fleet.user("GET", "/v1/schedules?owner=bob", who="alice").status == 403
    everyone = fleet.user("GET", "/v1/schedules", who="root", roles=("admin",)).body["items"]
    assert [s["schedule_id"] for s in everyone] == [theirs["schedule_id"], mine["schedule_id"]]
    by_bob = fleet.user("GET", "/v1/schedules?owner=bob", who="root", roles=("admin",)).body["items"]
    assert [s["owner"] for s in by_bob] == ["bob"]
    # viewers may read but not create
    assert schedules.create(roles=("viewer",)).status == 403


def test_a_schedule_deleted_by_a_racing_request_is_deleted_once_and_both_succeed(fleet, schedules, monkeypatch):
    # GIVEN a delete whose read of the schedule comes just before another delete of it
    created = schedules.create().body
    visible = schedule_service._visible

    def read_then_deleted_elsewhere(actor: Any, schedule_id: str) -> Any:
        item = visible(actor, schedule_id)
        monkeypatch.setattr(schedule_service, "_visible", visible)
        assert fleet.user("DELETE", f"/v1/schedules/{schedule_id}").status == 200
        return item

    monkeypatch.setattr(schedule_service, "_visible", read_then_deleted_elsewhere)
    # WHEN it deletes THEN it succeeds too (its conditional delete found nothing), and the schedule is gone
    assert fleet.user("DELETE", f"/v1/schedules/{created['schedule_id']}").status == 200
    assert fleet.user("GET", f"/v1/schedules/{created['schedule_id']}").status == 404


def test_listing_schedules_pages_newest_first(fleet, schedules):
    ids = [schedules.create().body["schedule_id"] for _ in range(3)]
    first = fleet.user("GET", "/v1/schedules?limit=2").body
    assert [s["schedule_id"] for s in first["items"]] == ids[::-1][:2]
    second = fleet.user("GET", f"/v1/schedules?limit=2&cursor={first['next_cursor']}").body
    assert [s["schedule_id"] for s in second["items"]] == ids[:1]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("rate(1 hours)", 'use "1 hour"'),
        ("rate(5 minute)", 'use "5 minutes"'),
        ("rate(0 minutes)", "positive integer"),
        ("rate(2 weeks)", "minute(s), hour(s) or day(s)"),
        ("cron(0 2 * * *)", "six fields"),
        ("cron(0 2 * * * *)", "exactly one of day-of-month and day-of-week must be ?"),
        ("cron(0 24 * * ? *)", "hours: 24 is outside 0-23"),
        ("cron(0 2 ? * 8 *)", "day-of-week: 8 is outside 1-7"),
        ("cron(0 2 ? * FOO *)", "day-of-week"),
        ("cron(0 2 LW * ? *)", "not supported"),
        ("at(2026-12-01T00:00:00)", "one-time"),
        ("every day", "must be"),
    ],
)
def test_a_bad_expression_is_a_400_with_its_reason(fleet, schedules, expression, message):
    answer = schedules.create(expression)
    assert answer.status == 400, answer
    assert answer.body["error"]["code"] == "validation_error"
    [detail] = answer.body["error"]["details"]
    assert detail["path"] == "$.expression"
    assert message in detail["message"]
    assert schedules.scheduler.list_schedules(GroupName=SCHEDULE_GROUP)["Schedules"] == []


@pytest.mark.parametrize(
    ("task", "code", "path"),
    [
        ({"type": "nope", "target_nodes": ["a"]}, "unknown_task_type", None),
        ({"type": "config.release", "target_nodes": ["a"], "parameters": {"website_id": "x"}}, "validation_error",
         "$.task.parameters.website_id"),
        ({"type": "config.release", "parameters": {"website_id": 1}}, "validation_error", "$.task.target_nodes"),
        ({"type": "config.release", "target_nodes": ["a"], "colour": 1}, "validation_error", "$.task.colour"),
    ],
)
def test_the_schedules_task_is_checked_as_post_tasks_would(fleet, schedules, task, code, path):
    answer = schedules.create(task=task)
    assert answer.status == 400, answer
    assert answer.body["error"]["code"] == code
    if path:
        assert path in [d["path"] for d in answer.body["error"]["details"]]
    assert fleet.user("GET", "/v1/schedules").body["items"] == []


def test_a_schedule_eventbridge_refuses_is_a_400_and_leaves_nothing_behind(fleet, schedules, monkeypatch):
    from botocore.exceptions import ClientError

    from chalicelib import aws

    # GIVEN EventBridge Scheduler refuses what our parser accepted
    def refuse(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "ValidationException", "Message": "Invalid Schedule Expression"}},
                          "CreateSchedule")

    monkeypatch.setattr(aws.client("scheduler"), "create_schedule", refuse)
    # WHEN a schedule is created
    answer = schedules.create()
    # THEN it is a 400 with the scheduler's reason, and no item is left
    assert answer.status == 400, answer
    assert "Invalid Schedule Expression" in answer.body["error"]["message"]
    assert fleet.user("GET", "/v1/schedules").body["items"] == []


def test_a_cursor_of_another_list_is_a_400(fleet, schedules):
    for _ in range(2):
        schedules.create(who="bob")
    bobs = fleet.user("GET", "/v1/schedules?limit=1", who="bob").body["next_cursor"]
    assert bobs
    admins = fleet.user("GET", "/v1/schedules?limit=1", who="root", roles=("admin",)).body["next_cursor"]
    for cursor in (bobs, admins):
        answer = fleet.user("GET", f"/v1/schedules?cursor={cursor}", who="alice")
        assert answer.status == 400, answer
        assert answer.body["error"]["details"][0]["path"] == "$query.cursor"
    # the admin's own cursor works
    assert fleet.user("GET", f"/v1/schedules?cursor={admins}", who="root", roles=("admin",)).status == 200
