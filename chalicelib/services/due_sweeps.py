"""What a sweep reads: the task looks of the due index and the lease watches (domain/due.py), a
constant number of queries per page, and when a task needs its next look.

A pass reads every shard of each kind up to now (SHARDS queries per kind, concurrently), at
most a fixed number of entries per shard, oldest first; what is left is read the next pass.
An entry says which item to read, never what to do: the sweeper reads the item consistently
and acts with the conditional transitions, so an entry the index has not caught up with yet,
or a watch on a run that moved on, is a harmless no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from chalicelib import clock, config
from chalicelib.domain import dispatch_progress as progress
from chalicelib.domain import due
from chalicelib.domain.records import NodeRun, Task
from chalicelib.domain.statuses import TASK_TERMINAL, RunStatus, TaskStatus
from chalicelib.observability import logger
from chalicelib.services import recount, twophase, type_registry
from chalicelib.store import backend, runs, tasks
from chalicelib.store.backend import LeaseWatch

#: lease watches read per shard and page (each up to lease_watch.RUNS_PER_WATCH runs: a read each) ...
WATCHES_PER_SHARD = 20
#: ... and task looks (a read, the checks that are due, and one write to schedule the next)
LOOKS_PER_SHARD = 25


@dataclass(frozen=True)
class DueEntry:
    task_id: str
    #: None for a task's look
    node: str | None
    due_sk: str


def due_now(kind: str, now: float, per_shard: int) -> list[DueEntry]:
    """The entries of `kind` due at `now`: one query per shard (run concurrently)."""
    store = backend.current()
    calls = [partial(store.due_entries, due.due_pk(kind, n), due.upto(now), per_shard) for n in range(due.SHARDS)]
    found: list[DueEntry] = []
    for entries in runs.run_concurrently(calls, threads=due.SHARDS):
        found.extend(DueEntry(task_id, node, due_sk) for task_id, node, due_sk in entries)
    return found


def due_watches(now: float, per_shard: int) -> list[LeaseWatch]:
    """The lease watches due at `now`: one query per watch shard (run concurrently)."""
    store = backend.current()
    calls = [partial(store.lease_watches, n, due.upto(now), per_shard) for n in range(due.WATCH_SHARDS)]
    return [watch for watches in runs.run_concurrently(calls, threads=due.WATCH_SHARDS) for watch in watches]


def held(run: NodeRun, now: float) -> bool:
    """Whether `run` (read consistently) still holds a lease or plan reservation: not lapsed by
    the sweeper's guards (`expires < now` is lapsed)."""
    if run.status == RunStatus.RUNNING:
        return run.lease_expires_at is not None and run.lease_expires_at >= now
    if run.status == RunStatus.APPLY_PENDING:
        return run.reservation_expires_at is not None and run.reservation_expires_at >= now
    return False


def _after(at: float, now: float, period: float) -> float:
    """`at` when it is still ahead, else one `period` from now (the check just ran)."""
    return at if at > now else now + period


def next_look(task: Task, now: float) -> float | None:
    """When the sweeper must look at `task` again (epoch), None once it is terminal: the earliest
    moment one of its checks (services/sweeper.py `_sweep_task`) can be due."""
    if task.status in TASK_TERMINAL:
        return None
    grace = config.undispatched_grace_seconds()
    counts = task.counts
    waiting = _may_wait(task)
    stale_at = _after(_epoch(task.updated_at) + grace + 1, now, grace)  # re-sends wait for `now - updated > grace`
    looks: list[float] = []
    if progress.started(task) and progress.in_progress(task) and task.dispatch_progress_at:
        # a dispatch in chunks: its continuation is re-sent once its progress stamp is stale
        looks.append(_after(_epoch(task.dispatch_progress_at) + grace + 1, now, grace))
    if task.status in (TaskStatus.PENDING, TaskStatus.CANCELLING):
        looks.append(stale_at)  # dispatch or cancel job re-sent
    if task.status == TaskStatus.RUNNING and waiting and (
            task.halted or not int(counts.get(RunStatus.RUNNING, 0))
            or not type_registry.task_type_of(task).agent_executed):
        looks.append(stale_at)  # halt re-sent, a stalled window, service runs woken again
    if recount.repairable(task):  # also what finds a missed finish: its counters are quiet
        rgrace = config.recount_grace_seconds()
        quiet_since = max(_epoch(task.counted_at), _epoch(task.recounted_at), _epoch(task.updated_at))
        looks.append(_after(quiet_since + rgrace, now, rgrace))
    check_at = _claim_check_at(task)
    if check_at is not None:
        looks.append(max(check_at, now + 1))
    closes = twophase.confirmation_due(task)
    if closes is not None:
        looks.append(_after(closes + 1, now, grace))
    # a status with no timed check (apply_pending without a window start): now and then all the same
    return min(looks) if looks else now + max(grace, config.recount_grace_seconds())


def _may_wait(task: Task) -> int:
    """How many runs of `task` may be waiting for a claim, from its counts: the pending ones, and
    those the stream has not counted yet (a look right after the dispatch can come before the
    aggregator counted the runs it created, which are pending; the shard that delivers late must
    not push their claim check back to the recount's look)."""
    counts = task.counts
    return int(counts.get(RunStatus.PENDING, 0)) + max(0, int(task.target_count) - sum(counts.values()))


def _claim_check_at(task: Task) -> float | None:
    if task.status != TaskStatus.RUNNING or task.halted or not _may_wait(task):
        return None
    if int(task.dispatched_attempt) != int(task.attempt) or not task.started_at:
        return None
    if task.claim_check_at is not None:
        return float(task.claim_check_at)
    return clock.parse_rfc3339(task.started_at) + int(task.claim_timeout_seconds)


def _epoch(stamp: str | None) -> float:
    return clock.parse_rfc3339(stamp) if stamp else 0.0


def look_by(task_id: str, at: float, now: float) -> None:
    """Bring the task's next look forward to `at` when it is later: a run offered again starts
    its claim clock over (services/claim_timeouts.py), which the look a busy task was given
    (its recount) may not see. Guarded by the task's version: read again after a lost race."""
    for _ in range(3):
        task = tasks.find(task_id)
        if task is None or task.status in TASK_TERMINAL or task.due_sk is None or due.due_second(task.due_sk) <= at:
            return
        if tasks.update_quietly(task, "schedule_look", clock.rfc3339(now), look_at=at):
            return


def schedule_next_look(task_id: str, entry_sk: str, now: float) -> None:
    """Re-read the task after its look and write when the next one is due (no write when the
    entry already says so; a task changed meanwhile is due at once anyway: the write is guarded)."""
    task = tasks.find(task_id)
    if task is None:
        return
    at = next_look(task, now)
    if at is None:
        return
    if due.task_due_keys(task_id, at)[1] == entry_sk:
        return
    if not tasks.update_quietly(task, "schedule_look", clock.rfc3339(now), look_at=at):
        logger.debug("task changed during its look; due again at once", extra={"task_id": task_id})
