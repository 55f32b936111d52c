"""The one writer that halts and finishes tasks, from the aggregated node counts."""

from __future__ import annotations

from pynamodb.exceptions import PynamoDBException

from chalicelib import clock
from chalicelib.domain import rules
from chalicelib.domain.statuses import RunStatus, TaskStatus
from chalicelib.errors import Conflict, InvalidTransition
from chalicelib.observability import count, logger
from chalicelib.services import twophase
from chalicelib.services.views import counts_of, max_errors_value, service_event
from chalicelib.store import events, tasks
from chalicelib.store.models import TaskItem
from chalicelib.store.writes import is_condition_failure

_ACTIONS = {
    TaskStatus.COMPLETED: "complete",
    TaskStatus.PARTIAL_FAILURE: "partially_fail",
    TaskStatus.FAILED: "fail",
}


def settle(task: TaskItem) -> None:
    """Halt a task over its error budget; finish it when no node run is left to run.

    Every write is conditional on the counters it was decided from, so a late or
    concurrent caller (stream replay, sweeper) is a harmless no-op.
    """
    counts = counts_of(task)
    if task.status == TaskStatus.RUNNING:
        if twophase.is_two_phase(task.type) and twophase.await_confirmation(task):
            return
        _settle_running(task, counts)
    elif task.status == TaskStatus.CANCELLING and not any(
        counts[s] for s in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.APPLY_PENDING)
    ):
        _finish(task, "finish_cancel", TaskStatus.CANCELLED, None)


def _settle_running(task: TaskItem, counts: dict[str, int]) -> None:
    total = int(task.target_count)
    exceeded = rules.error_budget_exceeded(counts, max_errors_value(task.max_errors), total)
    if exceeded and not task.halted:
        _halt(task)
    dispatched = int(task.dispatched_attempt) == int(task.attempt)
    if dispatched and rules.in_flight(counts) == 0 and sum(counts.values()) == total:
        status, error = rules.final_status(counts, exceeded)
        _finish(task, _ACTIONS[status], status, error)


def _halt(task: TaskItem) -> None:
    guard = (TaskItem.status == TaskStatus.RUNNING) & (TaskItem.attempt == task.attempt) & (TaskItem.halted == False)  # noqa: E712
    try:
        tasks.update(task.task_id, [TaskItem.halted.set(True), TaskItem.updated_at.set(clock.now_iso())], guard)
    except PynamoDBException as error:
        if not is_condition_failure(error):
            raise
        return
    events.append(task.task_id, [service_event(
        "task.halted", "more nodes failed than max_errors allows; no further node starts", type_="warning",
    )])
    logger.info("task halted over its error budget", extra={"task_id": task.task_id})


def _finish(task: TaskItem, action: str, status: str, error: str | None) -> None:
    now = clock.now_iso()
    counts = counts_of(task)
    event = events.new_item(task.task_id, [service_event(
        f"task.{status}", error or f"all {counts[RunStatus.SUCCEEDED]} node run(s) succeeded",
        type_="success" if status == TaskStatus.COMPLETED else ("warning" if status != TaskStatus.FAILED else "error"),
        data={"node_counts": counts, "attempt": int(task.attempt)},
    )])
    guard = (
        (TaskItem.applied_seq == task.applied_seq)
        & (TaskItem.attempt == task.attempt)
        & (TaskItem.target_count == task.target_count)
    )
    try:
        tasks.transition(task.task_id, action, now, error_message=error, condition=guard, event=event)
    except (InvalidTransition, Conflict):
        logger.info("task changed before it could finish; left to the next record", extra={"task_id": task.task_id})
        return
    count("TasksFinished", status=status)
    logger.info("task finished", extra={"task_id": task.task_id, "status": status})
