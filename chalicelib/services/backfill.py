"""`POST /v1/tasks/{id}/dispatch`: make sure every listed node has a run in the task's
current attempt, adding new nodes to the task's targets (backfill)."""

from __future__ import annotations

from functools import partial
from typing import Any

from chalicelib import clock
from chalicelib.domain.records import Task
from chalicelib.domain.task_types import get_task_type
from chalicelib.errors import Conflict, InvalidTransition, ValidationFailed
from chalicelib.services.attempts import template
from chalicelib.services.service_events import service_event
from chalicelib.store import events, runs, tasks
from chalicelib.store.runs import NewRun


def dispatch_nodes(task: Task, nodes: list[str]) -> dict[str, Any]:
    """Make sure every listed node has a run in the task's current attempt.

    Raises InvalidTransition unless the task is pending or running, Conflict while the
    task's own dispatch is still in progress or when another dispatch raced this one.
    """
    growable = tasks.allowed_from("grow_targets")
    if task.status not in growable:
        raise InvalidTransition("task", task.status, "dispatch", growable)
    if task.halted:
        raise Conflict(f"task {task.task_id} is halted: more nodes failed than max_errors allows, no node starts")
    if int(task.dispatched_attempt) < int(task.attempt):
        raise Conflict(f"task {task.task_id} is still being dispatched; retry in a moment")
    targets = set(tasks.load_targets(task.task_id))
    unique = list(dict.fromkeys(nodes))
    new_nodes = [n for n in unique if n not in targets]
    if new_nodes and get_task_type(task.type).requires_confirmation:
        raise ValidationFailed(
            f"{task.type} plans and applies on its one runner; it takes no further nodes",
            [{"path": "$.target_nodes", "message": "two-phase tasks have exactly one target node"}],
        )
    listed = [n for n in unique if n in targets]
    # a listed target without a run can only be left by a crash between reserve and create
    found = runs.run_concurrently([partial(runs.find, task.task_id, n) for n in listed])
    orphans = [n for n, run in zip(listed, found, strict=True) if run is None]
    now = clock.now_iso()
    base = int(task.ordinal_next)
    to_create = new_nodes + orphans
    if to_create:
        tasks.add_targets(task, new_nodes, len(to_create), now)
    created, _ = runs.create_missing(template(task, f"{task.task_id}:route:{now}", now),
                                     [NewRun(n, base + i) for i, n in enumerate(to_create)])
    skipped = len(unique) - len(created)
    events.append(task.task_id, [service_event(
        "task.dispatched", f"dispatch request: {len(created)} created, {skipped} skipped",
        data={"created_count": len(created), "skipped_count": skipped, "nodes": unique[:100]},
    )])
    return {
        "triggered": True,
        "target_node_count": len(unique),
        "created_count": len(created),
        "skipped_count": skipped,
    }
