"""User schedules (`/v1/schedules`): each firing submits one task through the intake queue.

A schedule is a table item (the source of truth: owner, expression, the task body with its
secret parameters sealed) plus an EventBridge Scheduler schedule of the same id in
`config.schedule_group()`. The scheduler puts only `{"schedule_id", "scheduled_time"}` on the
intake queue, so no secret ever sits in the scheduler's configuration; the intake handler reads
the item and submits the task with the idempotency key `schedule:<id>:<scheduled time>`, so a
duplicate firing creates no second task.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final

from botocore.exceptions import ClientError
from pynamodb.exceptions import DoesNotExist, PynamoDBException
from ulid import ULID

from chalicelib import aws, clock, config, secrets
from chalicelib.auth import Actor
from chalicelib.domain import schedule_expressions
from chalicelib.errors import Forbidden, NotFound, ValidationFailed
from chalicelib.observability import logger
from chalicelib.services import submit
from chalicelib.store import index_reads, pages
from chalicelib.store.key_parts import part
from chalicelib.store.models import ScheduleItem, schedule_pk
from chalicelib.store.writes import is_condition_failure

#: EventBridge Scheduler replaces this in the target input with the firing's scheduled time
SCHEDULED_TIME: Final = "<aws.scheduler.scheduled-time>"
#: how long EventBridge Scheduler keeps retrying a firing the intake queue refused
MAX_EVENT_AGE_SECONDS: Final = 3600


def firing_message(schedule_id: str) -> str:
    """The intake message of every firing (the scheduled time is filled in by the scheduler)."""
    return json.dumps({"schedule_id": schedule_id, "scheduled_time": SCHEDULED_TIME}, separators=(",", ":"))


def idempotency_key(schedule_id: str, scheduled_time: str) -> str:
    return f"schedule:{schedule_id}:{scheduled_time}"


def create(actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
    """Store the schedule, then create its EventBridge Scheduler schedule.

    Raises ValidationFailed (expression or task), UnknownTaskType, PayloadTooLarge.
    """
    expression = schedule_expressions.parse(body["expression"])
    task_body = body["task"]
    task_type = _checked(task_body)
    masked, secret_values = submit.split_secrets(task_type, task_body.get("parameters") or {})
    stored = {**task_body, "parameters": masked} if "parameters" in task_body else task_body
    schedule_id = str(ULID())
    item = ScheduleItem(
        schedule_pk(schedule_id), "META", schedule_id=schedule_id, name=body["name"], owner=actor.user_id,
        expression=body["expression"], task=json.dumps(stored, separators=(",", ":")),
        sealed_secrets=secrets.seal(secret_values), created_at=clock.now_iso(),
        list_pk="SCHEDULE", list_sk=schedule_id, owner_pk=_owner_pk(actor.user_id), owner_sk=schedule_id,
    )
    item.save(condition=ScheduleItem.pk.does_not_exist())
    try:
        _create_in_scheduler(item)
    except Exception as error:
        item.delete()  # nothing fires without the scheduler's schedule: don't keep a dead item
        if isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") == "ValidationException":
            reason = str(error.response["Error"].get("Message", "refused"))[:500]
            raise ValidationFailed(f"EventBridge Scheduler refused the schedule: {reason}",
                                   [{"path": "$.expression", "message": reason}]) from None
        raise
    logger.info("schedule created", extra={"schedule_id": schedule_id, "expression": item.expression})
    return view(item, expression)


def get(actor: Actor, schedule_id: str) -> dict[str, Any]:
    return view(_visible(actor, schedule_id))


def delete(actor: Actor, schedule_id: str) -> dict[str, Any]:
    """Delete the scheduler's schedule, then the item (a crash in between leaves a retryable delete).

    Raises NotFound.
    """
    item = _visible(actor, schedule_id)
    try:
        aws.client("scheduler").delete_schedule(Name=schedule_id, GroupName=config.schedule_group())
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
    try:
        item.delete(condition=ScheduleItem.pk.exists())
    except PynamoDBException as error:
        if not is_condition_failure(error):
            raise
    logger.info("schedule deleted", extra={"schedule_id": schedule_id})
    return view(item)


def list_page(actor: Actor, owner: str | None, limit: int, cursor: str | None) -> dict[str, Any]:
    """A page of schedules, newest first: the caller's own, or (admin) everyone's or `owner`'s."""
    if owner is not None and not actor.is_admin and owner != actor.user_id:
        raise Forbidden("only admins may list other users' schedules")
    if not actor.is_admin:
        owner = actor.user_id
    start = pages.start_key(cursor)
    if start is not None and owner is None:
        _check_cursor(start, "list", "SCHEDULE")
    elif start is not None and owner is not None:
        _check_cursor(start, "owner", _owner_pk(owner))
    result: Any
    if owner is None:
        result = ScheduleItem.list_index.query("SCHEDULE", scan_index_forward=False, limit=limit,
                                               last_evaluated_key=start)
    else:
        result = ScheduleItem.owner_index.query(_owner_pk(owner), scan_index_forward=False, limit=limit,
                                                last_evaluated_key=start)
    items = [view(item) for item in index_reads.hydrate(ScheduleItem, result)]
    return pages.page(items, result.last_evaluated_key)


def firing_request(schedule_id: str) -> tuple[str, dict[str, Any]] | None:
    """(owner, POST /v1/tasks body with secrets revealed) of a schedule; None once it is deleted."""
    try:
        item = ScheduleItem.get(schedule_pk(schedule_id), "META", consistent_read=True)
    except DoesNotExist:
        return None
    body: dict[str, Any] = json.loads(item.task)
    if item.sealed_secrets:
        body["parameters"] = secrets.reveal(body.get("parameters") or {}, item.sealed_secrets)
    return item.owner, body


def view(item: ScheduleItem, expression: schedule_expressions.Expression | None = None) -> dict[str, Any]:
    parsed = expression or schedule_expressions.parse(item.expression)
    created = datetime.fromtimestamp(clock.parse_rfc3339(item.created_at), UTC)
    now = datetime.fromtimestamp(clock.now_epoch(), UTC)
    upcoming = schedule_expressions.next_after(parsed, created, max(now, created))
    return {
        "schedule_id": item.schedule_id,
        "name": item.name,
        "owner": item.owner,
        "expression": item.expression,
        "task": json.loads(item.task),
        "created_at": item.created_at,
        "next_fire_at": clock.rfc3339(upcoming.timestamp()) if upcoming else None,
    }


def _checked(task_body: dict[str, Any]) -> Any:
    """The task type, after the checks `POST /v1/tasks` makes; error paths point into `$.task`."""
    try:
        return submit.check(task_body)
    except ValidationFailed as error:
        details = [{**d, "path": "$.task" + d["path"][1:]} for d in error.extra.get("details", [])]
        raise ValidationFailed(f"task: {error.message}", details) from None


def _visible(actor: Actor, schedule_id: str) -> ScheduleItem:
    try:
        item = ScheduleItem.get(schedule_pk(schedule_id), "META")
    except DoesNotExist:
        item = None
    if item is None or (not actor.is_admin and item.owner != actor.user_id):
        raise NotFound(f"schedule {schedule_id} not found")
    return item


def _check_cursor(start: dict[str, Any], index: str, expected: str) -> None:
    """A cursor of another listing (or another owner's) would make DynamoDB fail: refuse it here."""
    value = start.get(f"{index}_pk")
    if not isinstance(value, dict) or value.get("S") != expected or set(start) != {
            "pk", "sk", f"{index}_pk", f"{index}_sk"}:
        raise ValidationFailed("invalid query parameter cursor", [{
            "path": "$query.cursor", "message": "not a cursor from a previous page of this list; start over without it",
        }])


def _owner_pk(owner: str) -> str:
    return f"SCHEDULES#{part(owner)}"


def _create_in_scheduler(item: ScheduleItem) -> None:
    target: dict[str, Any] = {
        "Arn": config.intake_queue_arn(),
        "RoleArn": config.scheduler_role_arn(),
        "Input": firing_message(item.schedule_id),
        "RetryPolicy": {"MaximumEventAgeInSeconds": MAX_EVENT_AGE_SECONDS, "MaximumRetryAttempts": 20},
    }
    if config.intake_dlq_arn():
        target["DeadLetterConfig"] = {"Arn": config.intake_dlq_arn()}
    aws.client("scheduler").create_schedule(
        Name=item.schedule_id,
        GroupName=config.schedule_group(),
        ScheduleExpression=item.expression,
        ScheduleExpressionTimezone="UTC",
        FlexibleTimeWindow={"Mode": "OFF"},
        State="ENABLED",
        Description=f"fleetrun schedule of {item.owner}: {item.name}"[:512],
        Target=target,
        ClientToken=item.schedule_id,
    )
