"""Lifecycle actions a user takes on a task: cancel and retry."""

from __future__ import annotations

from chalicelib import clock
from chalicelib.domain import rules
from chalicelib.domain.statuses import RUN_STATUSES, RunStatus
from chalicelib.domain.transitions import RUN_TRANSITIONS
from chalicelib.observability import logger
from chalicelib.services import twophase
from chalicelib.services.views import counts_of, service_event
from chalicelib.store import events, tasks
from chalicelib.store.models import TaskItem


def cancel(task: TaskItem, actor_id: str) -> TaskItem:
    """Move the task to `cancelling`; the stream hands the node runs to the cancel job.

    Raises InvalidTransition, Conflict.
    """
    event = events.new_item(task.task_id, [service_event("task.cancel_requested", f"by {actor_id}")])
    updated = tasks.transition(task.task_id, "cancel", clock.now_iso(), event=event)
    logger.info("task cancel requested", extra={"task_id": task.task_id, "by": actor_id})
    return updated


def retry(task: TaskItem, scope: str, actor_id: str) -> TaskItem:
    """Start a new attempt in one write: attempt + 1, `pending`, `completed_at` and
    `error_message` cleared, and the node counts of the runs it resets already moved to
    `pending` (the dispatch job then resets the runs themselves).

    Raises InvalidTransition, Conflict (the task changed since it was read).
    """
    action = "retry_all" if scope == "all" else "retry_failed"
    reset = RUN_TRANSITIONS[action].sources
    counts = counts_of(task)
    moved = sum(counts[s] for s in reset)
    new_counts = {s: (0 if s in reset else counts[s]) for s in RUN_STATUSES}
    new_counts[RunStatus.PENDING] += moved
    attempt = int(task.attempt)
    count_actions = [getattr(TaskItem.counts, s).set(new_counts[s]) for s in RUN_STATUSES]
    unchanged = TaskItem.attempt == attempt
    for status in RUN_STATUSES:
        unchanged &= getattr(TaskItem.counts, status) == counts[status]
    event = events.new_item(task.task_id, [service_event(
        "task.retried", f"attempt {attempt + 1} ({scope}) by {actor_id}: {moved} node run(s) back to pending",
        data={"attempt": attempt + 1, "scope": scope, "reset_count": moved},
    )])
    updated = tasks.transition(
        task.task_id, "retry", clock.now_iso(), condition=unchanged, event=event,
        extra=[
            TaskItem.attempt.set(attempt + 1),
            TaskItem.retry_scope.set(scope),
            TaskItem.halted.set(False),
            TaskItem.progress_sum.set(int(task.progress_sum) - 100 * moved),
            TaskItem.finished_base.set(rules.finished_count(new_counts)),
            TaskItem.started_at.remove(),
            TaskItem.queued_at.set(clock.now_iso()),  # a task with a concurrency key queues again
            TaskItem.plan_confirmed.remove(),  # a two-phase task plans again and needs a new confirmation
            TaskItem.awaiting_since.remove(),
            *count_actions,
        ],
    )
    logger.info("task retried", extra={"task_id": task.task_id, "attempt": attempt + 1, "scope": scope})
    return updated


def confirm(task: TaskItem, actor_id: str) -> TaskItem:
    """Hand an `apply_pending` task to the runner holding its plan (see twophase.confirm).
    Raises InvalidTransition, Conflict."""
    return twophase.confirm(task, actor_id)


def discard(task: TaskItem, actor_id: str) -> TaskItem:
    """Drop the plan of an `apply_pending` task. Raises InvalidTransition, Conflict."""
    return twophase.discard(task, actor_id)
