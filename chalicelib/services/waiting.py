"""Whom a task queued behind its concurrency key waits for: `waiting_for` on the task (the
holder of the key, or the task ahead of it while that one has not taken it yet) and one
`task.waiting` event per task waited for, so an admin can see why and act on that task."""

from __future__ import annotations

from typing import Any

from chalicelib import clock
from chalicelib.domain.records import Task
from chalicelib.errors import Busy, Conflict, InvalidTransition, TaskNotFound
from chalicelib.observability import logger
from chalicelib.services.service_events import service_event
from chalicelib.store import events, tasks


def record(task: Task, ahead_id: str, holding: bool) -> None:
    """Record that `task` waits for `ahead_id` (`holding`: it holds the key; else it is ahead in
    the queue), with one `task.waiting` event. Nothing is written when it already says so: a
    redelivered dispatch job adds no second event. A lost race (the task moved on, another job
    recorded it first) is no news and is only logged."""
    if task.waiting_for_task_id == ahead_id:
        return
    ahead = tasks.find(ahead_id, consistent=False)
    owner = ahead.owner if ahead is not None else None
    event = events.new_item(task.task_id, [_waiting_event(task, ahead_id, owner, holding)])
    try:
        tasks.transition(task, "wait_for_key", clock.now_iso(), event=event, holder_task_id=ahead_id,
                         holder_owner=owner)
    except (InvalidTransition, Conflict, Busy, TaskNotFound) as lost:
        logger.info("waiting_for not recorded: the task changed meanwhile",
                    extra={"task_id": task.task_id, "ahead": ahead_id, "reason": type(lost).__name__})


def _waiting_event(task: Task, ahead_id: str, owner: str | None, holding: bool) -> dict[str, Any]:
    whose = f" of {owner}" if owner else ""
    how = "held by" if holding else "queued behind"
    return service_event(
        "task.waiting", f"waits for concurrency key {task.concurrency_key!r}, {how} task {ahead_id}{whose}",
        data={"concurrency_key": task.concurrency_key, "task_id": ahead_id, "owner": owner, "holding": holding},
    )

