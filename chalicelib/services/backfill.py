"""`POST /v1/tasks/{id}/dispatch`: make sure every listed node has a run in the task's
current attempt, adding new nodes to the task's targets (backfill). Up to
`INLINE_DISPATCH_LIMIT` new nodes inside the request; more are created by the dispatch queue
in chunks (services/dispatch.py) and the answer says `"state": "in_progress"`."""

from __future__ import annotations

from functools import partial
from typing import Any

from chalicelib import clock
from chalicelib.domain import dispatch_progress as progress
from chalicelib.domain.records import Task
from chalicelib.domain.task_transitions import REOPENABLE
from chalicelib.domain.task_types import refuse_service_node
from chalicelib.errors import Conflict, InvalidTransition, ValidationFailed
from chalicelib.services import attempts, jobs, type_registry
from chalicelib.services.service_events import service_event
from chalicelib.store import events, runs, tasks
from chalicelib.store.runs import NewRun


def require_growable(task: Task, *, reopen: bool = False) -> None:
    """Raises InvalidTransition unless the task may take more nodes: pending or running, or
    (`reopen`: a selector dispatch) completed or partially failed without a concurrency key,
    whose release the task no longer holds."""
    growable = tasks.allowed_from("grow_targets")
    if reopen and not task.concurrency_key:
        growable = growable | REOPENABLE
    if task.status not in growable:
        raise InvalidTransition("task", task.status, "dispatch", growable)


def dispatch_nodes(task: Task, nodes: list[str], *, reopen: bool = False) -> dict[str, Any]:
    """Make sure every listed node has a run in the task's current attempt. With `reopen` (a
    selector dispatch, the backfill of a reused release) a completed or partially failed task
    that gets new runs is running again, in the same write that adds its targets.

    Raises InvalidTransition unless the task is pending or running (or may reopen), Conflict
    while the task's own dispatch is still in progress or when another dispatch raced this one,
    ValidationFailed for the reserved node id `service`.
    """
    refuse_service_node(nodes, "$.target_nodes")
    require_growable(task, reopen=reopen)
    if task.halted:
        raise Conflict(f"task {task.task_id} is halted: more nodes failed than max_errors allows, no node starts")
    if progress.in_progress(task):
        raise Conflict(f"task {task.task_id} is still being dispatched; retry in a moment")
    targets = set(tasks.load_targets(task.task_id))
    unique = list(dict.fromkeys(nodes))
    new_nodes = [n for n in unique if n not in targets]
    if new_nodes and type_registry.task_type_of(task).requires_confirmation:
        raise ValidationFailed(
            f"{task.type} plans and applies on its one runner; it takes no further nodes",
            [{"path": "$.target_nodes", "message": "two-phase tasks have exactly one target node"}],
        )
    listed = [n for n in unique if n in targets]
    # a listed target without a run can only be left by a crash between reserve and create
    found = runs.run_concurrently([partial(runs.find, task.task_id, n) for n in listed])
    orphans = [n for n, run in zip(listed, found, strict=True) if run is None]
    now = clock.now_iso()
    if len(new_nodes) > progress.INLINE_DISPATCH_LIMIT:
        return _dispatch_in_chunks(task, unique, new_nodes, orphans, now)
    base = int(task.ordinal_next)
    to_create = new_nodes + orphans
    if to_create:
        grow = "reopen_targets" if task.status in REOPENABLE else "grow_targets"
        tasks.add_targets(task, new_nodes, len(to_create), now, grow)
    created, _ = runs.create_missing(attempts.template(task, f"{task.task_id}:route:{now}", now),
                                     [NewRun(n, base + i) for i, n in enumerate(to_create)])
    skipped = len(unique) - len(created)
    events.append(task.task_id, [service_event(
        "task.dispatched", f"dispatch request: {len(created)} created, {skipped} skipped",
        data={"created_count": len(created), "skipped_count": skipped, "nodes": unique[:100]},
    )])
    return {
        "triggered": True,
        "state": progress.DONE,
        "target_node_count": len(unique),
        "created_count": len(created),
        "skipped_count": skipped,
    }


def _dispatch_in_chunks(task: Task, unique: list[str], new_nodes: list[str], orphans: list[str],
                        now: str) -> dict[str, Any]:
    """Reserve the new nodes and their ordinals with a dispatch in chunks recorded on the task
    (one write), create the orphans here, and send the first chunk to the dispatch queue. A
    lost send is re-sent by the sweeper once the dispatch's progress stamp is stale."""
    dispatch_id = f"{task.task_id}:route:{now}"
    base = int(task.ordinal_next)
    chunks = attempts.chunks_for(len(new_nodes))
    grow = "reopen_targets" if task.status in REOPENABLE else "grow_targets"
    tasks.add_targets(task, new_nodes, len(new_nodes) + len(orphans), now, grow, dispatch_id=dispatch_id,
                      first_ordinal=base + len(orphans), dispatch_total=len(new_nodes), dispatch_chunks=chunks)
    created, _ = runs.create_missing(attempts.template(task, dispatch_id, now),
                                     [NewRun(n, base + i) for i, n in enumerate(orphans)])
    skipped = len(unique) - len(new_nodes) - len(created)
    events.append(task.task_id, [service_event(
        "task.dispatched", f"dispatch request: {len(new_nodes)} new node(s) being created in {chunks} chunk(s), "
                           f"{len(created)} created, {skipped} skipped",
        data={"created_count": len(created), "skipped_count": skipped, "in_progress_count": len(new_nodes),
              "nodes": unique[:100]},
    )])
    jobs.enqueue(jobs.DISPATCH, task.task_id, attempt=int(task.attempt), chunk=0, dispatch_id=dispatch_id)
    return {
        "triggered": True,
        "state": progress.IN_PROGRESS,
        "target_node_count": len(unique),
        "created_count": len(created),
        "skipped_count": skipped,
    }
