"""The one writer that halts and finishes tasks, from the aggregated node counts."""

from __future__ import annotations

from chalicelib import clock
from chalicelib.domain import rules
from chalicelib.domain.records import Task
from chalicelib.domain.statuses import RunStatus, TaskStatus
from chalicelib.domain.task_transitions import FINISH_ACTIONS
from chalicelib.errors import Conflict, InvalidTransition
from chalicelib.observability import count, logger
from chalicelib.services import twophase
from chalicelib.services.service_events import service_event
from chalicelib.store import events, tasks


def settle(task: Task) -> None:
    """Halt a task over its error budget; finish it when no node run is left to run.

    Every write is conditional on the counters it was decided from, so a late or
    concurrent caller (stream replay, sweeper) is a harmless no-op.
    """
    counts = task.counts
    if task.status == TaskStatus.RUNNING:
        if twophase.is_two_phase(task.type, int(task.type_version)) and twophase.await_confirmation(task):
            return
        _settle_running(task, counts)
    elif task.status == TaskStatus.CANCELLING and not rules.in_flight(counts):
        _finish(task, "finish_cancel", TaskStatus.CANCELLED, None)


def _settle_running(task: Task, counts: dict[str, int]) -> None:
    total = int(task.target_count)
    exceeded = rules.error_budget_exceeded(counts, rules.max_errors_value(task.max_errors), total)
    if exceeded and not task.halted:
        _halt(task)
    dispatched = int(task.dispatched_attempt) == int(task.attempt)
    if dispatched and rules.in_flight(counts) == 0 and sum(counts.values()) == total:
        status, error = rules.final_status(counts, exceeded)
        _finish(task, FINISH_ACTIONS[status], status, error)


def _halt(task: Task) -> None:
    if not tasks.update_quietly(task, "halt", clock.now_iso()):
        return
    events.append(task.task_id, [service_event(
        "task.halted", "more nodes failed than max_errors allows; no further node starts", type_="warning",
    )])
    logger.info("task halted over its error budget", extra={"task_id": task.task_id})


def _finish(task: Task, action: str, status: str, error: str | None) -> None:
    counts = task.counts
    event = events.new_item(task.task_id, [service_event(
        f"task.{status}", error or f"all {counts[RunStatus.SUCCEEDED]} node run(s) succeeded",
        type_="success" if status == TaskStatus.COMPLETED else ("warning" if status != TaskStatus.FAILED else "error"),
        data={"node_counts": dict(counts), "attempt": int(task.attempt)},
    )])
    try:
        tasks.transition(task, action, clock.now_iso(), error_message=error, event=event)
    except (InvalidTransition, Conflict):
        logger.info("task changed before it could finish; left to the next record", extra={"task_id": task.task_id})
        return
    count("TasksFinished", status=status)
    logger.info("task finished", extra={"task_id": task.task_id, "status": status})

