"""Lifecycle actions a user takes on a task: cancel, retry, confirm, discard."""

from __future__ import annotations

from typing import Final

from botocore.exceptions import ClientError
from pynamodb.exceptions import PynamoDBException

from chalicelib import clock
from chalicelib.domain.records import Task
from chalicelib.domain.retry_counting import counts_after_retry
from chalicelib.errors import Conflict, ServiceUnavailable
from chalicelib.observability import logger
from chalicelib.services import cancellation, twophase
from chalicelib.services.service_events import service_event
from chalicelib.store import events, tasks

#: the most targets a task may have for `cancel` to do its cancel job inline (one run partition
#: up to 48 targets, three at 100: a few queries and at most 100 conditional writes)
INLINE_CANCEL_LIMIT: Final = 100


def cancel(task: Task, actor_id: str) -> Task:
    """Move the task to `cancelling`; the stream hands the node runs to the cancel job. A task of
    at most INLINE_CANCEL_LIMIT targets has its cancel job done here as well, so its running steps
    learn of it at their next heartbeat rather than after the stream and the queue (the job that
    follows finds nothing left to do: every run write is guarded).

    Raises InvalidTransition, Conflict.
    """
    event = events.new_item(task.task_id, [service_event("task.cancel_requested", f"by {actor_id}")])
    updated = tasks.transition(task, "cancel", clock.now_iso(), event=event)
    logger.info("task cancel requested", extra={"task_id": task.task_id, "by": actor_id})
    if int(updated.target_count) <= INLINE_CANCEL_LIMIT:
        try:
            cancellation.cancel_runs(updated.task_id, int(updated.attempt), include_running=True)
        except (ClientError, PynamoDBException, Conflict, ServiceUnavailable) as error:
            # the cancel is written: a failure here is no failure of the request (the job follows)
            logger.warning("inline cancel of the runs failed; the cancel job will do it",
                           extra={"task_id": task.task_id, "error": type(error).__name__})
    return updated


def retry(task: Task, scope: str, actor_id: str) -> Task:
    """Start a new attempt in one write (domain/task_transitions.py `retry`, counts moved as
    domain/retry_counting.py says); the dispatch job then resets the runs themselves.

    Raises InvalidTransition, Conflict (the task changed since it was read).
    """
    attempt = int(task.attempt) + 1
    _, moved = counts_after_retry(task.counts, scope)
    event = events.new_item(task.task_id, [service_event(
        "task.retried", f"attempt {attempt} ({scope}) by {actor_id}: {moved} node run(s) back to pending",
        data={"attempt": attempt, "scope": scope, "reset_count": moved},
    )])
    updated = tasks.transition(task, "retry", clock.now_iso(), event=event, scope=scope)
    logger.info("task retried", extra={"task_id": task.task_id, "attempt": attempt, "scope": scope})
    return updated


def confirm(task: Task, actor_id: str) -> Task:
    """Hand an `apply_pending` task to the runner holding its plan (see twophase.confirm).
    Raises InvalidTransition, Conflict."""
    return twophase.confirm(task, actor_id)


def discard(task: Task, actor_id: str) -> Task:
    """Drop the plan of an `apply_pending` task. Raises InvalidTransition, Conflict."""
    return twophase.discard(task, actor_id)
