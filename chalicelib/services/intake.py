"""The SQS intake queue: automation and schedules submit tasks exactly as `POST /v1/tasks` does.

Two kinds of message (API.md "Automation entry points"):

- a producer's `IntakeMessage`: a `POST /v1/tasks` body plus `owner` (one of
  `FLEETRUN_INTAKE_PRODUCERS`) and `idempotency_key`;
- a schedule's `ScheduleFiring`: `{"schedule_id", "scheduled_time"}`, submitted for the schedule's
  owner with the key `schedule:<id>:<scheduled time>`.

Same validation, same idempotency (`submit.submit`): a redelivered message answers with the
task it already created. A message no retry can fix goes to the intake dead-letter queue with the
error as message attributes and is acknowledged, so it never blocks the queue; an error a retry
can fix (AWS, a racing request with the same key) propagates and the message is redelivered.
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal

from chalicelib import aws, config
from chalicelib.domain.task_requests import INTAKE_MESSAGE, SCHEDULE_FIRING
from chalicelib.errors import FleetrunError, Forbidden
from chalicelib.observability import count, logger
from chalicelib.services import schedules, submit
from chalicelib.validation import parse_document

#: message attributes of a dead-lettered message
ERROR_CODE_ATTRIBUTE: Final = "fleetrun-error-code"
ERROR_ATTRIBUTE: Final = "fleetrun-error"
ERROR_DETAILS_ATTRIBUTE: Final = "fleetrun-error-details"
SOURCE_ATTRIBUTE: Final = "fleetrun-source-message-id"
_MAX_ERROR_CHARS: Final = 4096
_MAX_DETAILS: Final = 20

Outcome = Literal["created", "replayed", "dead_lettered", "dropped"]


def handle(body: str, message_id: str) -> Outcome:
    """Submit the task one intake message asks for.

    Raises only for what a retry can fix (AWS errors, `Conflict`); invalid messages are dead-lettered.
    """
    try:
        request = _request(body)
        if request is None:
            logger.warning("schedule firing for a deleted schedule; dropped", extra={"message_id": message_id})
            return "dropped"
        owner, key, task_body = request
        result = submit.submit(owner, task_body, key)
    except FleetrunError as error:
        if not _permanent(error):
            raise
        dead_letter(body, error, message_id)
        return "dead_lettered"
    outcome: Outcome = "replayed" if result.replayed else "created"
    logger.info(f"intake message {outcome} a task", extra={
        "message_id": message_id, "task_id": result.task.task_id, "owner": owner,
    })
    return outcome


def dead_letter(body: str, error: FleetrunError, message_id: str) -> None:
    """Put the message on the intake DLQ with the error (never the body) in its attributes."""
    queue_url = config.intake_dlq_url()
    if not queue_url:
        raise RuntimeError("FLEETRUN_INTAKE_DLQ_URL is not set: cannot dead-letter an invalid intake message")
    details = list(error.extra.get("details", []))[:_MAX_DETAILS]
    attributes: dict[str, Any] = {
        ERROR_CODE_ATTRIBUTE: _string(error.code),
        ERROR_ATTRIBUTE: _string(error.message[:_MAX_ERROR_CHARS]),
        SOURCE_ATTRIBUTE: _string(message_id),
    }
    if details:
        attributes[ERROR_DETAILS_ATTRIBUTE] = _string(json.dumps(details, separators=(",", ":")))
    aws.client("sqs").send_message(QueueUrl=queue_url, MessageBody=body, MessageAttributes=attributes)
    logger.warning("invalid intake message dead-lettered", extra={
        "message_id": message_id, "error_code": error.code, "error": error.message[:_MAX_ERROR_CHARS],
    })
    count("IntakeDeadLettered", queue="intake")


def _request(body: str) -> tuple[str, str, dict[str, Any]] | None:
    """(owner, idempotency key, task body) of a message; None for a firing of a deleted schedule."""
    if _is_firing(body):
        firing = parse_document(SCHEDULE_FIRING, body)
        found = schedules.firing_request(firing["schedule_id"])
        if found is None:
            return None
        owner, task_body = found
        return owner, schedules.idempotency_key(firing["schedule_id"], firing["scheduled_time"]), task_body
    message = parse_document(INTAKE_MESSAGE, body)
    owner, key = message.pop("owner"), message.pop("idempotency_key")
    if owner not in config.intake_producers():
        raise Forbidden(f"owner {owner!r} is not an allowed intake producer (FLEETRUN_INTAKE_PRODUCERS)")
    return owner, key, message


def _is_firing(body: str) -> bool:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return False  # `parse_document` reports it
    return isinstance(document, dict) and "schedule_id" in document


def _permanent(error: FleetrunError) -> bool:
    """An error no redelivery can fix: the message itself is wrong (a lost race, a rate limit, a
    dependency that is down or a bug may pass on the next delivery)."""
    return not error.retryable


def _string(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value or "-"}
