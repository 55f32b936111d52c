"""The sweeper: expired leases, runs nobody claimed in time, tasks never dispatched, stalled
windows, missed finishes, silent nodes, WebSocket connections whose token expired."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

from chalicelib import clock, config
from chalicelib.domain import window
from chalicelib.domain.records import NodeRun, Task
from chalicelib.domain.statuses import RunStatus, TaskStatus
from chalicelib.observability import logger, tracer
from chalicelib.services import claim_timeouts, finishing, jobs, liveness, recount, twophase, type_registry, work
from chalicelib.services.realtime import expiry
from chalicelib.services.service_events import service_event
from chalicelib.store import events, runs, tasks


@dataclass
class SweepReport:
    tasks_seen: int = 0
    redispatched: list[str] = field(default_factory=list)
    requeued_runs: int = 0
    timed_out_runs: int = 0
    #: pending runs nobody claimed within their task's claim_timeout_seconds
    unclaimed_timed_out: int = 0
    windows_reopened: int = 0
    nodes_offline: list[str] = field(default_factory=list)
    #: WebSocket connections closed because their token expired
    connections_closed: int = 0
    replanned: list[str] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)
    #: tasks whose counts a lost stream record left wrong, recounted from their runs
    recounted: list[str] = field(default_factory=list)

    def changed(self) -> bool:
        """Whether the pass did anything (`tasks_seen` alone is not a change)."""
        return any(value for name, value in self.__dict__.items() if name != "tasks_seen")


@tracer.capture_method
def sweep(now: float | None = None) -> SweepReport:
    """One pass over the active tasks (sparse index: cost grows with active work only)."""
    now = clock.now_epoch() if now is None else now
    report = SweepReport()
    for task_id in tasks.iter_active():
        task = tasks.find(task_id)
        if task is None:
            continue
        report.tasks_seen += 1
        try:
            _sweep_task(task, now, report)
        except Exception:
            logger.exception("sweep of task failed; next pass retries", extra={"task_id": task_id})
    try:
        report.nodes_offline = liveness.mark_silent_nodes_offline(now)
    except Exception:
        logger.exception("node liveness sweep failed; next pass retries")
    try:
        report.connections_closed = expiry.close_expired(now)
    except Exception:
        logger.exception("closing expired websocket connections failed; next pass retries")
    # an idle sweep (every 10 s locally, every minute in AWS) is no news
    (logger.info if report.changed() else logger.debug)("sweep done", extra=report.__dict__)
    return report


def _sweep_task(task: Task, now: float, report: SweepReport) -> None:
    stale = now - clock.parse_rfc3339(task.updated_at) > config.undispatched_grace_seconds()
    if task.status == TaskStatus.PENDING and int(task.dispatched_attempt) < int(task.attempt) and stale:
        jobs.enqueue(jobs.DISPATCH, task.task_id, attempt=int(task.attempt))
        report.redispatched.append(task.task_id)
    elif task.status == TaskStatus.CANCELLING and stale:
        jobs.enqueue(jobs.CANCEL, task.task_id, attempt=int(task.attempt))
    counts = task.counts
    if task.status == TaskStatus.RUNNING and task.halted and counts[RunStatus.PENDING] and stale:
        jobs.enqueue(jobs.HALT, task.task_id, attempt=int(task.attempt))
    if twophase.is_two_phase(task.type, int(task.type_version)):
        outcome = twophase.sweep_task(task, now)
        if outcome is not None:
            (report.replanned if outcome == "replanned" else report.discarded).append(task.task_id)
            return
    if task.status in (TaskStatus.RUNNING, TaskStatus.CANCELLING):
        _expire_leases(task, now, report)
    unclaimed = claim_timeouts.expire_unclaimed(task, now)
    report.unclaimed_timed_out += unclaimed
    if task.status == TaskStatus.RUNNING and counts[RunStatus.PENDING] and stale:
        work.wake_pending(task)  # service-executed runs whose wake-up was lost (no-op for agent types)
    if recount.due(task, now) and recount.repair(task):
        report.recounted.append(task.task_id)
        task = tasks.get(task.task_id)
        counts = task.counts
    if task.status == TaskStatus.RUNNING and not task.halted and not unclaimed:
        # (not after runs ended unclaimed in this pass: the counts read before would see a stall)
        _reopen_stalled_window(task, counts, report)
    finishing.settle(task)


def _expire_leases(task: Task, now: float, report: SweepReport) -> None:
    max_attempts = type_registry.task_type_of(task).max_attempts
    stamp = clock.rfc3339(now)
    expired = [r for r in runs.iter_runs(task.task_id, RunStatus.RUNNING) if (r.lease_expires_at or 0) < now
               # a lapsed apply goes back to plan (twophase.sweep_task), never to another apply
               and not (r.phase == "apply" and task.status == TaskStatus.RUNNING)]
    calls = []
    for run in expired:
        reason = _lapse_reason(task, run, max_attempts)
        if reason is None:
            calls.append(partial(runs.transition, run, "release", stamp, now_epoch=now))
        else:
            calls.append(partial(runs.transition, run, "time_out", stamp, now_epoch=now, error_message=reason))
    results = runs.run_concurrently(calls)
    released = [r for r in results if r is not None and r.status == RunStatus.PENDING]
    timed_out = [r for r in results if r is not None and r.status == RunStatus.TIMED_OUT]
    report.requeued_runs += len(released)
    report.timed_out_runs += len(timed_out)
    if released or timed_out:
        events.append(task.task_id, [_expiry_event(r) for r in released + timed_out])


def _lapse_reason(task: Task, run: NodeRun, max_attempts: int) -> str | None:
    """Why a run whose lease lapsed times out, or None when it is offered again."""
    if task.status != TaskStatus.RUNNING:
        return "lease expired while the task was cancelling"
    if run.cancel_requested:  # its node was deregistered: never offered again
        return "lease expired after it was asked to cancel"
    if int(run.attempt) >= max_attempts:
        return f"lease expired without heartbeat on attempt {int(run.attempt)} of {max_attempts}"
    return None


def _expiry_event(run: NodeRun) -> dict[str, Any]:
    outcome = f"offered again as attempt {int(run.attempt)}" if run.status == RunStatus.PENDING else "timed out"
    return service_event(
        "node.lease_expired", f"{run.node}: lease expired, {outcome}", type_="warning", node=run.node,
        data={"attempt": int(run.attempt), "status": run.status},
    )


def _reopen_stalled_window(task: Task, counts: dict[str, int], report: SweepReport) -> None:
    """A gap in ordinals (a crashed dispatch request) could stall the concurrency window
    (domain/window.py): when nothing runs but runs wait, release the lowest waiting ordinal."""
    if counts[RunStatus.RUNNING] or not counts[RunStatus.PENDING]:
        return
    if int(task.dispatched_attempt) != int(task.attempt):
        return
    waiting = [int(r.ordinal) for r in runs.iter_runs(task.task_id, RunStatus.PENDING)]
    shift = window.reopen_shift(task.max_concurrency, counts, task.finished_base, waiting)
    if not shift or not tasks.update_quietly(task, "reopen_window", clock.now_iso(), shift=shift):
        return
    report.windows_reopened += 1
    logger.warning("concurrency window reopened", extra={"task_id": task.task_id, "shift": shift})
