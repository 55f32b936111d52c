"""Lifecycle actions a user takes on a task: cancel, retry, confirm, discard."""

from __future__ import annotations

from chalicelib import clock
from chalicelib.domain.records import Task
from chalicelib.domain.retry_counting import counts_after_retry
from chalicelib.observability import logger
from chalicelib.services import twophase
from chalicelib.services.service_events import service_event
from chalicelib.store import events, tasks


def cancel(task: Task, actor_id: str) -> Task:
    """Move the task to `cancelling`; the stream hands the node runs to the cancel job.

    Raises InvalidTransition, Conflict.
    """
    event = events.new_item(task.task_id, [service_event("task.cancel_requested", f"by {actor_id}")])
    updated = tasks.transition(task, "cancel", clock.now_iso(), event=event)
    logger.info("task cancel requested", extra={"task_id": task.task_id, "by": actor_id})
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
