"""`concurrency_key`: tasks with the same key run one at a time, in the order they queued.

A task with a key is written together with its queue entry (store/keys.py). Its dispatch
job creates node runs only once the task holds the key: the holder item is taken with a
conditional write by the oldest queued task only. A task holds its key until it reaches a
terminal status (an `apply_pending` task holds it, like a Terraform workspace lock); the
stream consumer `release_settled` then releases it and wakes the next task's dispatch.
Crash-safe: a dispatch job that finds the key held by (or queued behind) a task that is
already terminal repairs the key first, and the sweeper re-sends the dispatch of every
task still waiting, so a release lost between two writes is repaired on the next pass.
"""

from __future__ import annotations

from typing import Any

from chalicelib.domain.records import Task
from chalicelib.domain.statuses import TASK_TERMINAL, TaskStatus
from chalicelib.observability import logger
from chalicelib.services import jobs, waiting
from chalicelib.store import keys, tasks

_REPAIRS = 5


def default_key(task_type: Any, parameters: dict[str, Any], given: str | None) -> str | None:
    """The request's key, else the type's key parameter (`iac.plan_apply`: the workspace)."""
    if given:
        return given
    name = task_type.concurrency_key_parameter
    value = parameters.get(name) if name else None
    return str(value) if value else None


def may_dispatch(task: Task) -> bool:
    """Whether the task holds its key (taking it when it is the oldest waiting task)."""
    key = task.concurrency_key
    if not key:
        return True
    keys.ensure_queued(task)  # a retried task queues again (behind the tasks already waiting)
    for _ in range(_REPAIRS):
        current = keys.holder(key)
        if current is not None and current.task_id == task.task_id:
            return True
        if current is not None:
            if not _repair_holder(key, current.task_id):
                return _waits(task, current.task_id, holding=True)
            continue
        first = keys.head(key)
        if first is not None and first.task_id != task.task_id:
            if not _settled(first.task_id):
                return _waits(task, first.task_id, holding=False)
            keys.drop(key, first.sk)  # a terminal task's entry a crash left behind
            continue
        if keys.acquire(task):
            logger.info("concurrency key acquired", extra={"task_id": task.task_id, "key": key})
            return True
    return False


def _waits(task: Task, before: str, holding: bool) -> bool:
    logger.info("task waits for its concurrency key",
                extra={"task_id": task.task_id, "key": task.concurrency_key, "behind": before})
    waiting.record(task, before, holding)
    return False


def _settled(task_id: str) -> bool:
    """Whether the task no longer needs its key: terminal, or gone."""
    task = tasks.find(task_id)
    return task is None or task.status in TASK_TERMINAL


def _repair_holder(key: str, holder_id: str) -> bool:
    """Release a key whose holder is terminal (its release was lost). Returns whether it did."""
    task = tasks.find(holder_id)
    if task is not None and task.status not in TASK_TERMINAL:
        return False
    attempt, entry = (int(task.attempt), keys.entry_sk(task)) if task is not None else (1 << 30, None)
    keys.release(key, holder_id, attempt, entry)
    logger.warning("concurrency key held by a terminal task; released", extra={"key": key, "holder": holder_id})
    return True


def release_settled(task_id: str, key: str, attempt: int, entry: str) -> None:
    """A task with a key reached a terminal status: release the key, wake the next task."""
    keys.release(key, task_id, attempt, entry)
    wake_next(key)


def wake_next(key: str) -> None:
    """Send the dispatch of the oldest waiting task (a duplicate dispatch job is harmless)."""
    for _ in range(_REPAIRS):
        first = keys.head(key)
        if first is None:
            return
        task = tasks.find(first.task_id)
        if task is None or task.status in TASK_TERMINAL:
            keys.drop(key, first.sk)
            continue
        if task.status == TaskStatus.PENDING and int(task.dispatched_attempt) < int(task.attempt):
            jobs.enqueue(jobs.DISPATCH, task.task_id, attempt=int(task.attempt))
        return


def release_on_terminal(records: list[Any]) -> None:
    """Stream consumer: release the key of every task that just reached a terminal status
    (stream records; a replayed record releases nothing twice)."""
    for record in records:
        if record.sk != "META" or record.new is None:
            continue
        key = record.new_value("concurrency_key")
        status, before = record.new_value("status"), record.old_value("status")
        if not key or status not in TASK_TERMINAL or before in TASK_TERMINAL:
            continue
        task_id = record.pk.removeprefix("TASK#")
        queued = record.new_value("queued_at") or record.new_value("created_at")
        release_settled(task_id, key, int(record.new_value("attempt") or 1), keys.queue_entry_sk(queued, task_id))
