"""The cancel and halt jobs of a task attempt: its runs that have not started are cancelled,
the running ones asked to stop (cancel) or left to finish (halt)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from chalicelib import clock
from chalicelib.domain.records import Task
from chalicelib.domain.statuses import RunStatus, TaskStatus
from chalicelib.observability import logger
from chalicelib.services import attempts
from chalicelib.store import runs, tasks


def cancel_runs(task_id: str, attempt: int, *, include_running: bool) -> int:
    """The cancel (or, without `include_running`, the halt) job of one attempt.

    A duplicate or late job is a no-op: it acts only while the task is still cancelling (or
    halted) in that attempt, and every run write is conditioned on the attempt's generation.
    """
    task = tasks.find(task_id)
    if task is None or int(task.attempt) != attempt:
        logger.info("cancel/halt job for another attempt; ignored", extra={"task_id": task_id, "attempt": attempt})
        return 0
    if include_running and task.status != TaskStatus.CANCELLING:
        return 0
    if not include_running and not (task.halted and task.status == TaskStatus.RUNNING):
        return 0
    if int(task.dispatched_attempt) < attempt and attempt > 1:
        # cancelled before the retry's dispatch ran: its counts already moved to pending, so
        # reset the runs first (the dispatch job will find the task no longer dispatchable)
        attempts.prepare_attempt(task, clock.now_iso())
    return cancel_each(task, include_running=include_running)


def cancel_each(task: Task, *, include_running: bool) -> int:
    now = clock.now_iso()
    calls: list[Callable[[], Any]] = []
    for run in runs.iter_runs(task.task_id):
        if int(run.generation) != int(task.attempt):
            continue
        if run.status in (RunStatus.PENDING, RunStatus.APPLY_PENDING):
            reason = "cancelled before it started" if run.status == RunStatus.PENDING else "cancelled"
            calls.append(partial(runs.transition, run, "cancel", now, error_message=reason,
                                 generation=int(task.attempt)))
        elif include_running and run.status == RunStatus.RUNNING and not run.cancel_requested:
            calls.append(partial(runs.transition, run, "request_cancel", now, runner=run.lease_owner or run.runner))
    return sum(1 for result in runs.run_concurrently(calls) if result is not None)
