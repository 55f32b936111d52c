"""Two-phase tasks (plan → confirm → apply): the plan reservation and everything that ends it.

A two-phase task has exactly one node run (one workspace planned and applied by one
runner). The plan runs on the runner; the run and the task wait in `apply_pending` while
the runner keeps the plan context and heartbeats its reservation; `confirm` hands the
apply phase to that runner only. When the reservation lapses or the runner reports the
plan lost, the task plans again (`task.replan`) and waits for a new confirmation. The
conditional writes are in store/plans.py.
"""

from __future__ import annotations

from typing import Any

from chalicelib import clock, config
from chalicelib.domain.records import NodeRun, Task
from chalicelib.domain.statuses import RunStatus, TaskStatus
from chalicelib.domain.task_types import TaskType
from chalicelib.errors import Conflict, InvalidTransition, LeaseLost, ReservationLost
from chalicelib.observability import count, logger
from chalicelib.services import type_registry
from chalicelib.services.service_events import service_event
from chalicelib.store import events, plans, runs, tasks
from chalicelib.store.runs import run_id

#: a confirmation is one transaction over the task and its run: two-phase tasks have one run
MAX_TARGETS = 1


def is_two_phase(task_type: str, version: int = 1) -> bool:
    """Whether that version of the type plans, waits for confirm, then applies."""
    return type_registry.resolve(task_type, version).requires_confirmation


def confirmation_window(task_type: TaskType) -> int:
    return task_type.confirmation_window_seconds or config.confirmation_window_seconds()


def _planned_run(task: Task) -> NodeRun | None:
    return next(runs.iter_runs(task.task_id, RunStatus.APPLY_PENDING), None)


# --- the runner ---------------------------------------------------------------------------
def finish_plan(run: NodeRun, runner: str, completion: dict[str, Any]) -> NodeRun | None:
    """The plan step succeeded: the run waits in `apply_pending`, reserved to its runner."""
    now = clock.now_epoch()
    return plans.reserve(run, runner, clock.rfc3339(now), now + config.lease_seconds(), completion)


def heartbeat(run: Any, runner: str) -> dict[str, Any] | None:
    """Extend a live reservation; None when the run holds none for this runner and attempt."""
    now = clock.now_epoch()
    expires = now + config.lease_seconds()
    if plans.extend(run, runner, now, expires, clock.rfc3339(now)) is None:
        return None
    return {"lease_expires_at": clock.rfc3339(expires), "cancel_requested": False, "reserved": True}


def plan_lost(run: NodeRun, runner: str, attempt: int) -> None:
    """The runner no longer has the plan context: plan again. Raises InvalidTransition, LeaseLost."""
    if run.status != RunStatus.APPLY_PENDING:
        raise InvalidTransition("run", run.status, "report plan-lost for", {RunStatus.APPLY_PENDING})
    if int(run.attempt) != attempt or run.reservation_owner != runner:
        raise LeaseLost(run_id(run.task_id, run.node), run.status, int(run.attempt))
    task = tasks.get(run.task_id)
    if not _replan(task, run, "replan_lost", f"{runner} reported the plan context lost"):
        latest = runs.find(run.task_id, run.node)
        raise LeaseLost(run_id(run.task_id, run.node), latest.status if latest else None,
                        int(latest.attempt) if latest else None)


# --- the user -----------------------------------------------------------------------------
def confirm(task: Task, actor_id: str) -> Task:
    """Hand the apply phase to the runner holding the plan, while its reservation is live.

    Raises InvalidTransition (not `apply_pending`), Conflict (the reservation lapsed: the
    task plans again and will wait for a new confirmation; or a concurrent change).
    """
    if task.status != TaskStatus.APPLY_PENDING:
        raise InvalidTransition("task", task.status, "confirm", tasks.allowed_from("confirm"))
    run = _planned_run(task)
    now = clock.now_epoch()
    if run is None or (run.reservation_expires_at or 0) <= now:
        if run is not None:
            _replan(task, run, "replan_lapsed", "the plan reservation lapsed before the confirmation", now)
        raise Conflict(f"the plan of task {task.task_id} is no longer held by its runner; the task plans again "
                       "and will wait for a new confirmation", reason="plan_lost")
    event = events.new_item(task.task_id, [service_event(
        "task.confirmed", f"by {actor_id}: apply on {run.reservation_owner}", node=run.node,
        data={"runner": run.reservation_owner, "attempt": int(run.attempt)},
    )])
    try:
        plans.confirm(task, run, now, clock.rfc3339(now), event)
    except ReservationLost:
        current = tasks.get(task.task_id)
        if current.status != TaskStatus.APPLY_PENDING:
            raise InvalidTransition("task", current.status, "confirm", tasks.allowed_from("confirm")) from None
        raise Conflict(f"task {task.task_id} changed while it was confirmed; retry") from None
    logger.info("plan confirmed", extra={"task_id": task.task_id, "runner": run.reservation_owner})
    return tasks.get(task.task_id)


def discard(task: Task, actor_id: str, reason: str | None = None) -> Task:
    """Drop the plan: task → `discarded`, the run → `cancelled`, the reservation released.
    Raises InvalidTransition, Conflict."""
    if task.status != TaskStatus.APPLY_PENDING:
        raise InvalidTransition("task", task.status, "discard", tasks.allowed_from("discard"))
    message = reason or f"discarded by {actor_id}"
    event = events.new_item(task.task_id, [service_event(
        "task.discarded", message, type_="warning" if reason else "info",
    )])
    try:
        plans.discard(task, _planned_run(task), clock.now_iso(), message, event)
    except ReservationLost:
        current = tasks.get(task.task_id)
        if current.status != TaskStatus.APPLY_PENDING:
            raise InvalidTransition("task", current.status, "discard", tasks.allowed_from("discard")) from None
        raise Conflict(f"task {task.task_id} changed while it was discarded; retry") from None
    logger.info("task discarded", extra={"task_id": task.task_id, "reason": message})
    return tasks.get(task.task_id)


# --- the stream and the sweeper -----------------------------------------------------------
def await_confirmation(task: Task) -> bool:
    """Settle a running two-phase task whose run has planned: the task waits in
    `apply_pending`. Conditional on the counters it was decided from. Returns whether it moved."""
    counts = task.counts
    planned = counts[RunStatus.APPLY_PENDING]
    if task.plan_confirmed or not planned or counts[RunStatus.PENDING] or counts[RunStatus.RUNNING]:
        return False
    now = clock.now_iso()
    window = confirmation_window(type_registry.task_type_of(task))
    event = events.new_item(task.task_id, [service_event(
        "task.apply_pending", f"plan ready; confirm or discard within {window} s", type_="success",
        data={"attempt": int(task.attempt), "confirmation_window_seconds": window},
    )])
    try:
        tasks.transition(task, "await_confirmation", now, event=event)
    except (InvalidTransition, Conflict):
        return False
    count("TasksAwaitingConfirmation")
    logger.info("task waits for confirmation", extra={"task_id": task.task_id})
    return True


def _replan(task: Task, run: NodeRun, action: str, reason: str, now: float | None = None) -> bool:
    """Plan again (see plans.replan) when the run's `action` holds. Returns False when the run
    changed first (a lost race)."""
    event = events.new_item(task.task_id, [service_event(
        "task.replan", f"{run.node}: {reason}; planning again, a new confirmation will be needed",
        type_="warning", node=run.node,
        data={"run_attempt": int(run.attempt) + 1, "attempt": int(task.attempt) + 1, "reason": reason},
    )])
    try:
        attempt = plans.replan(task, run, action, clock.now_epoch() if now is None else now, clock.now_iso(), event)
    except ReservationLost:
        logger.info("replan lost a race; nothing to do", extra={"task_id": task.task_id, "node": run.node})
        return False
    count("TasksReplanned")
    logger.warning("task plans again", extra={"task_id": task.task_id, "attempt": attempt, "reason": reason})
    return True


def sweep_task(task: Task, now: float) -> str | None:
    """Lapsed reservations and apply leases → replan; an expired confirmation window →
    discard. Returns what was done (`replanned`, `discarded`) or None. Reads every run of the
    task: the sweeper finds lapsed runs through the due index instead (`sweep_run`)."""
    if task.status not in (TaskStatus.APPLY_PENDING, TaskStatus.RUNNING):
        return None
    if discard_unconfirmed(task, now):
        return "discarded"
    for run in runs.iter_runs(task.task_id):
        if sweep_run(task, run, now):
            return "replanned"
    return None


def confirmation_due(task: Task) -> float | None:
    """When the task's confirmation window closes (epoch), None when it waits for none."""
    if task.status != TaskStatus.APPLY_PENDING or not task.awaiting_since:
        return None
    return clock.parse_rfc3339(task.awaiting_since) + confirmation_window(type_registry.task_type_of(task))


def discard_unconfirmed(task: Task, now: float) -> bool:
    """Discard a plan not confirmed within its window. Returns whether this call discarded it."""
    closes = confirmation_due(task)
    if closes is None or now - closes <= 0:
        return False
    window = confirmation_window(type_registry.task_type_of(task))
    try:
        discard(task, "sweeper", f"not confirmed within the confirmation window of {window} s")
    except (InvalidTransition, Conflict):
        return False
    return True


def sweep_run(task: Task, run: NodeRun, now: float) -> bool:
    """Plan again when `run` (of `task`, both as read) lost its plan: a lapsed reservation, or a
    lapsed apply lease. Returns whether this call planned again."""
    if task.status not in (TaskStatus.APPLY_PENDING, TaskStatus.RUNNING):
        return False
    if run.status == RunStatus.APPLY_PENDING and (run.reservation_expires_at or 0) < now:
        reason = f"the plan reservation of {run.reservation_owner} lapsed (no heartbeat)"
        return _replan(task, run, "replan_lapsed", reason, now)
    if (run.status == RunStatus.RUNNING and run.phase == "apply" and task.status == TaskStatus.RUNNING
            and (run.lease_expires_at or 0) < now):
        reason = f"the apply lease of {run.lease_owner} lapsed (no heartbeat); the plan may be gone"
        return _replan(task, run, "replan_apply_lapsed", reason, now)
    return False
