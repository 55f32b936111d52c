"""The dispatch job: once the task holds its concurrency key, make the runs of its attempt
(services/attempts.py), then start it."""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit

from chalicelib import clock
from chalicelib.domain.statuses import TaskStatus
from chalicelib.errors import Conflict, InvalidTransition
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
    try:
        tasks.transition(task, "start", now, event=dispatched, created_count=len(created),
                         skipped_count=len(skipped), ordinal_next=ordinal_next)
    except (InvalidTransition, Conflict):
        current = tasks.get(task_id)
        if current.status == TaskStatus.CANCELLING and int(current.attempt) == attempt:
            # cancelled while we created runs: the cancel job may have missed the new ones
            cancellation.cancel_runs(task_id, attempt, include_running=True)
            return
        if current.status == TaskStatus.CANCELLED:
            logger.warning("runs created for a task cancelled meanwhile; cancelling them", extra={"task_id": task_id})
            cancellation.cancel_each(current, include_running=True)
            return
        raise
    if not type_registry.task_type_of(task).agent_executed:
        # service-executed runs: a wake-up on the work queue (the sweeper re-sends lost ones)
        work.enqueue(task_id, created, attempt)
    count("NodeRunsDispatched", value=len(created))
    if attempt == 1:
        lag = clock.now_epoch() - clock.parse_rfc3339(task.created_at)
        metrics.add_metric(name="DispatchLag", unit=MetricUnit.Seconds, value=lag)
    logger.info("task dispatched", extra={"task_id": task_id, "created_count": len(created),
                                          "skipped_count": len(skipped)})


