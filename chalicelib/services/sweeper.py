"""The sweeper: expired leases, runs nobody claimed in time, tasks never dispatched, stalled
windows, missed finishes, silent nodes, WebSocket connections whose token expired.

A pass costs what is due, not what is active: the lease watches that came due (domain/due.py,
services/lease_watch.py) and the tasks whose next look has come (the due index,
services/due_sweeps.py) — a constant number of queries and a bounded number of entries per
page, leases first — so a lapsed lease is acted on within one pass whatever the number of
active tasks. A heartbeat writes nothing for the sweeper: a watch comes due once a lease period,
and the pass writes a new watch for each run still held, at the expiry it read (one item per
second); lease pages go on while they come back full (LEASE_PASS_SECONDS). Each look
at a task runs its checks and schedules its next look; the checks that read a large task's runs
(claim deadlines after its first group, a recount, the stalled-window check) go to jobs on the
dispatch queue, so a pass reads at most about jobs.RUNS_PER_JOB runs of any task.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any

from chalicelib import clock, config
from chalicelib.domain import due
from chalicelib.domain.records import NodeRun, Task
from chalicelib.domain.statuses import TASK_TERMINAL, RunStatus, TaskStatus
from chalicelib.observability import logger, tracer
from chalicelib.services import (
    claim_timeouts,
    dispatch,
    due_backfill,
    due_sweeps,
    finishing,
    jobs,
    lease_watch,
    liveness,
    recount,
    run_looks,
    twophase,
    type_registry,
    work,
)
from chalicelib.services.due_sweeps import DueEntry
from chalicelib.services.realtime import expiry
from chalicelib.services.service_events import service_event
from chalicelib.store import backend, events, runs, tasks


@dataclass
class SweepReport:
    #: tasks read this pass (their look was due, or one of their runs' lease)
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
    #: runs watched again: still held (heartbeats moved their expiry), or not settled this pass
    leases_rearmed: int = 0
    #: (task id, when) of the tasks whose runs this pass offered again: their claim clocks' end
    claim_clocks: list[tuple[str, float]] = field(default_factory=list)

    def changed(self) -> bool:
        """Whether the pass did anything (reads and runs watched again alone are not a change)."""
        quiet = ("tasks_seen", "leases_rearmed", "claim_clocks")
        return any(value for name, value in self.__dict__.items() if name not in quiet)

    def merge(self, other: SweepReport) -> None:
        for name in (f.name for f in fields(self)):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(self, name, mine + theirs)


@tracer.capture_method
def sweep(now: float | None = None) -> SweepReport:
    """One pass over what is due (see the module text): lapsed leases and reservations, then
    the tasks whose look has come, then silent nodes and expired connections."""
    now = clock.now_epoch() if now is None else now
    report = sweep_leases(now)
    try:
        looks = due_sweeps.due_now(due.TASK, now, due_sweeps.LOOKS_PER_SHARD)
        for found in runs.run_concurrently([partial(_look, entry, now) for entry in looks], threads=8):
            report.merge(found)
    except Exception:
        logger.exception("task looks failed; next pass retries")
    for task_id, at in report.claim_clocks:  # after the looks, which scheduled from counts before them
        try:
            due_sweeps.look_by(task_id, at, now)
        except Exception:
            logger.exception("scheduling a look failed; its recount look comes later", extra={"task_id": task_id})
    try:  # items from before the due index (one-time; one read a pass once done)
        report.tasks_seen += due_backfill.step(now, partial(_sweep_the_old_way, report=report))
    except Exception:
        logger.exception("due index backfill failed; next pass retries")
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


def sweep_leases(now: float) -> SweepReport:
    """The lease part of a pass: the watches due at `now` (`_sweep_due_leases`)."""
    report = SweepReport()
    try:
        _sweep_due_leases(now, report)
    except Exception:
        logger.exception("lease sweep failed; next pass retries")
    return report


def _look(entry: DueEntry, now: float) -> SweepReport:
    """A task's look: its checks, then its next look scheduled. Failures are logged: the entry
    stays due and the next pass tries again."""
    report = SweepReport()
    try:
        task = tasks.find(entry.task_id)
        if task is None or task.status in TASK_TERMINAL:
            return report  # the index has not caught up with a terminal write yet
        report.tasks_seen += 1
        _sweep_task(task, now, report)
        due_sweeps.schedule_next_look(entry.task_id, entry.due_sk, now)
    except Exception:
        logger.exception("sweep of task failed; next pass retries", extra={"task_id": entry.task_id})
    return report


#: how long a pass goes on reading lease watches while pages come back full: a held run is
#: watched again about once a lease period, so 10,000 long runs on 60 s leases are about 10,000
#: runs a one-minute pass (a read each, and a watch write per second)
LEASE_PASS_SECONDS = 30.0


def _sweep_due_leases(now: float, report: SweepReport) -> None:
    """The due lease watches, a page of each shard at a time, for as long as a shard's page came
    back full, within LEASE_PASS_SECONDS. Each page: the runs read and acted on, the runs that
    need another look watched again, then the page's watches deleted (a crash in between leaves
    a watch read twice, never a run unwatched)."""
    deadline = time.monotonic() + LEASE_PASS_SECONDS
    while True:
        watches = due_sweeps.due_watches(now, due_sweeps.WATCHES_PER_SHARD)
        if not watches:
            return
        again = _sweep_leases(sorted({run for watch in watches for run in watch.runs}), now, report)
        report.leases_rearmed += len(again)
        lease_watch.watch(again, tag=lease_watch.fresh_tag())
        backend.current().delete_lease_watches(watches)
        per_shard = Counter(watch.shard for watch in watches)
        if max(per_shard.values()) < due_sweeps.WATCHES_PER_SHARD or time.monotonic() > deadline:
            return


def _sweep_leases(keys: Sequence[tuple[str, str]], now: float, report: SweepReport) -> list[tuple[str, str, int]]:
    """Act on the watched runs (each read consistently) whose lease or reservation lapsed.
    Returns the runs to watch again, (task id, node, due second): the runs still held, at the
    expiry they have now, and the lapsed runs this pass did not settle (a conflict, a throttle, a
    failure), next second. A run that is gone, not leased, or of a task that ended needs none."""
    found_runs = runs.find_many(keys)
    again = [lease_watch.due_at_expiry(run) for run in found_runs if due_sweeps.held(run, now)]
    lapsed = [run for run in found_runs if run.status in lease_watch.LEASED and not due_sweeps.held(run, now)]
    task_ids = sorted({run.task_id for run in lapsed})
    found_tasks = dict(zip(task_ids, runs.run_concurrently([partial(tasks.find, t) for t in task_ids]), strict=True))
    by_task: dict[str, list[NodeRun]] = {}
    for run in lapsed:
        task = found_tasks.get(run.task_id)
        if task is not None and task.status not in TASK_TERMINAL:
            by_task.setdefault(run.task_id, []).append(run)
    report.tasks_seen += len(by_task)
    next_second = int(now) + 1
    for task_id, runs_of_task in by_task.items():
        task = found_tasks[task_id]
        assert task is not None
        try:
            settled = _sweep_lapsed(task, runs_of_task, now, report)
        except Exception:
            logger.exception("lease sweep of task failed; next pass retries", extra={"task_id": task_id})
            settled = set()
        again += [(task_id, run.node, next_second) for run in runs_of_task if run.node not in settled]
    return again


def _sweep_lapsed(task: Task, lapsed: Iterable[NodeRun], now: float, report: SweepReport) -> set[str]:
    """Act on `lapsed` runs of `task`; returns the nodes of those this pass changed."""
    settled: set[str] = set()
    leased = []
    for run in lapsed:
        if twophase.sweep_run(task, run, now):  # a lost plan: the task plans again
            report.replanned.append(task.task_id)
            settled.add(run.node)
        elif run.status == RunStatus.RUNNING:
            leased.append(run)
    if leased and task.status in (TaskStatus.RUNNING, TaskStatus.CANCELLING):
        settled.update(run.node for run in _expire_leases(task, now, report, leased))
    return settled


def _sweep_the_old_way(task: Task, now: float, report: SweepReport) -> None:
    """A task's lapsed leases and reservations from a query of its runs (the backfill's walk).
    Its runs still held are watched here: one claimed under the old code has no watch."""
    held = [run for status in lease_watch.LEASED
            for run in runs.iter_runs(task.task_id, status) if due_sweeps.held(run, now)]
    report.leases_rearmed += lease_watch.watch_runs(held)
    if twophase.is_two_phase(task.type, int(task.type_version)):
        outcome = twophase.sweep_task(task, now)
        if outcome is not None:
            (report.replanned if outcome == "replanned" else report.discarded).append(task.task_id)
            return
    if task.status in (TaskStatus.RUNNING, TaskStatus.CANCELLING):
        _expire_leases(task, now, report)


def _sweep_task(task: Task, now: float, report: SweepReport) -> None:
    stale = now - clock.parse_rfc3339(task.updated_at) > config.undispatched_grace_seconds()
    if task.status == TaskStatus.PENDING and int(task.dispatched_attempt) < int(task.attempt) and stale:
        jobs.enqueue(jobs.DISPATCH, task.task_id, attempt=int(task.attempt))
        report.redispatched.append(task.task_id)
    elif task.status == TaskStatus.CANCELLING and stale:
        jobs.enqueue(jobs.CANCEL, task.task_id, attempt=int(task.attempt))
    if dispatch.resend_if_stalled(task, now):  # a dispatch in chunks whose progress stamp went stale
        report.redispatched.append(task.task_id)
    counts = task.counts
    if task.status == TaskStatus.RUNNING and task.halted and counts[RunStatus.PENDING] and stale:
        jobs.enqueue(jobs.HALT, task.task_id, attempt=int(task.attempt))
    if twophase.is_two_phase(task.type, int(task.type_version)) and twophase.discard_unconfirmed(task, now):
        report.discarded.append(task.task_id)
        return
    # (lapsed leases and reservations have entries of their own: `_sweep_leases`)
    unclaimed = claim_timeouts.expire_unclaimed(task, now)
    report.unclaimed_timed_out += unclaimed
    if task.status == TaskStatus.RUNNING and counts[RunStatus.PENDING] and stale:
        work.wake_pending(task)  # service-executed runs whose wake-up was lost (no-op for agent types)
    # (no stalled window after runs ended unclaimed in this pass: the counts read before would see one)
    stall = not unclaimed and run_looks.may_stall(task, counts)
    recount_due = recount.due(task, now)
    if (recount_due or stall) and not run_looks.in_the_look(task):
        jobs.enqueue(jobs.RUN_LOOK, task.task_id)  # a large task's runs are read off the sweeper
    else:
        if recount_due and recount.repair(task):
            report.recounted.append(task.task_id)
            task = tasks.get(task.task_id)
            stall = not unclaimed and run_looks.may_stall(task, task.counts)
        if stall and run_looks.reopen_stalled_window(task, task.counts):
            report.windows_reopened += 1
    finishing.settle(task)


def _expire_leases(task: Task, now: float, report: SweepReport,
                   running: Iterable[NodeRun] | None = None) -> list[NodeRun]:
    """Offer again (or time out) the runs of `running` (default: every running run of the task,
    one query) whose lease lapsed. Returns the runs changed."""
    max_attempts = type_registry.task_type_of(task).max_attempts
    stamp = clock.rfc3339(now)
    candidates = runs.iter_runs(task.task_id, RunStatus.RUNNING) if running is None else running
    expired = [r for r in candidates if r.status == RunStatus.RUNNING and (r.lease_expires_at or 0) < now
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
    if released:  # their claim clocks start now: the task's look comes then (`sweep`)
        report.claim_clocks.append((task.task_id, now + int(task.claim_timeout_seconds)))
    return released + timed_out


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
