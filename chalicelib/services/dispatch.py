"""The dispatch job: once the task holds its concurrency key, make the runs of its attempt
(services/attempts.py), then start it."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from chalicelib import clock
from chalicelib.domain.records import Task
from chalicelib.domain.statuses import TaskStatus
from chalicelib.errors import Busy, Conflict, InvalidTransition
from chalicelib.observability import count, logger, metrics, tracer
from chalicelib.services import attempts, cancellation, concurrency, type_registry, work
from chalicelib.services.service_events import service_event
from chalicelib.store import events, tasks


@tracer.capture_method
def run_dispatch_job(task_id: str, attempt: int) -> None:
    """Create (attempt 1) or reset (retry) the runs of a task's attempt, then start it.

    Idempotent: a duplicate, late or resumed job creates only what is missing and records
    the same figures.
    """
    task = tasks.find(task_id)
    if task is None or int(task.attempt) != attempt or int(task.dispatched_attempt) >= attempt:
        logger.info("dispatch job is stale or done; ignored", extra={"task_id": task_id, "attempt": attempt})
        return
    if task.status not in tasks.allowed_from("start"):
        logger.info("task not dispatchable", extra={"task_id": task_id, "status": task.status})
        return
    if not concurrency.may_dispatch(task):
        return  # waits in `pending`; the key's release (or the sweeper) sends this job again
    now = clock.now_iso()
    created, skipped, ordinal_next = attempts.prepare_attempt(task, now)
    dispatched = events.new_item(task_id, [service_event(
        "task.dispatched", f"attempt {attempt}: {len(created)} node run(s) created, {len(skipped)} skipped",
        data={"attempt": attempt, "created_count": len(created), "skipped_count": len(skipped)},
    )])
    if not _start(task, now, dispatched, created_count=len(created), skipped_count=len(skipped),
                  ordinal_next=ordinal_next):
        return
    if not type_registry.task_type_of(task).agent_executed:
        # service-executed runs: a wake-up on the work queue (the sweeper re-sends lost ones)
        work.enqueue(task_id, created, attempt)
    count("NodeRunsDispatched", value=len(created))
    if attempt == 1:
        lag = clock.now_epoch() - clock.parse_rfc3339(task.created_at)
        metrics.add_metric(name="DispatchLag", unit=MetricUnit.Seconds, value=lag)
    logger.info("task dispatched", extra={"task_id": task_id, "created_count": len(created),
                                          "skipped_count": len(skipped)})


#: start writes tried on a task that is still pending after a lost one (each is itself retried)
_START_ROUNDS = 3


def _start(task: Task, now: str, dispatched: Any, **figures: Any) -> bool:
    """The attempt's `start` write. A lost one re-reads the task and goes on from what it says —
    never by making the runs again: started by this dispatch (a write that landed although its
    answer was lost) → go on; started by another → nothing left to do; still pending → write
    `start` again; cancelled meanwhile → cancel the runs just made. Returns whether to go on."""
    attempt = int(task.attempt)
    for _ in range(_START_ROUNDS):
        try:
            tasks.transition(task, "start", now, event=dispatched, **figures)
            return True
        except (InvalidTransition, Conflict) as lost:
            current = tasks.get(task.task_id)
            if int(current.attempt) == attempt and int(current.dispatched_attempt) >= attempt:
                mine = current.started_at == now
                logger.info("start already written; not dispatching again",
                            extra={"task_id": task.task_id, "by_this_dispatch": mine, "lost": type(lost).__name__})
                return mine
            if current.status == TaskStatus.CANCELLING and int(current.attempt) == attempt:
                # cancelled while we created runs: the cancel job may have missed the new ones
                cancellation.cancel_runs(task.task_id, attempt, include_running=True)
                return False
            if current.status == TaskStatus.CANCELLED:
                logger.warning("runs created for a task cancelled meanwhile; cancelling them",
                               extra={"task_id": task.task_id})
                cancellation.cancel_each(current, include_running=True)
                return False
            if current.status != TaskStatus.PENDING or int(current.attempt) != attempt:
                raise
            task = current  # still ours to start: write `start` again on what the task says now
    raise Busy(f"task {task.task_id} kept changing while its dispatch started it; retry")
