"""The cancel and halt jobs of a task attempt: its runs that have not started are cancelled,
the running ones asked to stop (cancel) or left to finish (halt).

A job goes through at most about jobs.RUNS_PER_JOB runs: a large task's run partitions
(store/run_partitions.py) are taken a group at a time, and each job hands the next group to a
job of its own (`partition`, the continuation), as a dispatch hands on its chunks; a retry
cancelled before its dispatch started goes a dispatch part at a time (`part`). A job that
crashed is delivered again and does its group again: every run write is guarded, so what it
already did is skipped. The sweeper re-sends a task stuck in `cancelling` from the first group."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

from chalicelib import clock
from chalicelib.domain.records import NodeRun, Task
from chalicelib.domain.statuses import RunStatus, TaskStatus
from chalicelib.observability import logger
from chalicelib.services import attempts, jobs
from chalicelib.store import runs, tasks


def cancel_runs(task_id: str, attempt: int, *, include_running: bool, partition: int = 0,
                part: int | None = None) -> int:
    """The cancel (or, without `include_running`, the halt) job of one attempt, for the group of
    run partitions that starts at `partition`; the next group goes to a job of its own. A retry
    cancelled before its dispatch started goes by dispatch part instead (`part`, from 0:
    `_cancel_undispatched`). Returns how many runs this job changed.

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
        return _cancel_undispatched(task, part or 0)
    group, shards = jobs.partition_group(task, partition)
    changed = cancel_each(task, include_running=include_running, partitions=group)
    if group.stop < shards:
        jobs.enqueue(jobs.CANCEL if include_running else jobs.HALT, task_id, attempt=attempt, partition=group.stop)
    logger.info("cancel job done" if include_running else "halt job done",
                extra={"task_id": task_id, "partitions": f"{group.start}-{group.stop - 1} of {shards}",
                       "changed": changed})
    return changed


def _cancel_undispatched(task: Task, part: int) -> int:
    """A retry cancelled before its dispatch ran: its counts already moved to pending, so its
    runs are reset as the dispatch would have, one dispatch part per job, and cancelled at once;
    the next part goes to a job of its own. (The dispatch job finds the task no longer
    dispatchable; one that started meanwhile sends this job itself: services/dispatch.py.)"""
    nodes, parts = attempts.prepare_attempt_part(task, part, clock.now_iso())
    changed = cancel_nodes(task, nodes)
    if part + 1 < parts:
        jobs.enqueue(jobs.CANCEL, task.task_id, attempt=int(task.attempt), part=part + 1)
    logger.info("cancel job done", extra={"task_id": task.task_id, "part": f"{part} of {parts}", "changed": changed})
    return changed


def cancel_each(task: Task, *, include_running: bool, partitions: range | None = None) -> int:
    """Cancel the attempt's runs that have not started (and, with `include_running`, ask the
    running ones to stop), of the run partitions `partitions` or of all. Returns how many changed."""
    return _cancel(task, runs.iter_runs(task.task_id, partitions=partitions), include_running=include_running)


def cancel_nodes(task: Task, nodes: Sequence[str]) -> int:
    """Cancel (or ask to stop) the attempt's runs of `nodes`: those a dispatch chunk just made for
    a task cancelled meanwhile. Reads only those runs. Returns how many changed."""
    return _cancel(task, runs.find_many([(task.task_id, node) for node in nodes]), include_running=True)


def _cancel(task: Task, found: Iterable[NodeRun], *, include_running: bool) -> int:
    now = clock.now_iso()
    calls: list[Callable[[], Any]] = []
    for run in found:
        if int(run.generation) != int(task.attempt):
            continue
        if run.status in (RunStatus.PENDING, RunStatus.APPLY_PENDING):
            reason = "cancelled before it started" if run.status == RunStatus.PENDING else "cancelled"
            calls.append(partial(runs.transition, run, "cancel", now, error_message=reason,
                                 generation=int(task.attempt)))
        elif include_running and run.status == RunStatus.RUNNING and not run.cancel_requested:
            calls.append(partial(runs.transition, run, "request_cancel", now, runner=run.lease_owner or run.runner))
    return sum(1 for result in runs.run_concurrently(calls) if result is not None)
