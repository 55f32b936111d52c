"""The parts of the sweeper's look at a task that read its runs: the recount of counts a lost
stream record left wrong (services/recount.py) and the stalled-window check (domain/window.py).

A task whose runs fit one job's read (jobs.RUNS_PER_JOB) gets them in the look itself; a larger
one in `run_look` jobs on the dispatch queue, so that no sweep reads more runs than that of one
task and a large task's reads never hold up the leases of the others. Its recount reads one group
of its run partitions per job and hands the rest to the next (services/recount.py `Chunked`);
the window check follows the recount's last job, one group per job too (`stall`: the lowest
waiting ordinal and how many waiting runs the jobs before read).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib import clock
from chalicelib.domain import window
from chalicelib.domain.records import Task
from chalicelib.domain.statuses import RunStatus, TaskStatus
from chalicelib.observability import logger
from chalicelib.services import jobs, recount
from chalicelib.store import runs, tasks


def in_the_look(task: Task) -> bool:
    """Whether the sweeper's look reads the task's runs itself (they fit one job's read)."""
    return recount.in_one_read(task)


def may_stall(task: Task, counts: dict[str, int]) -> bool:
    """Whether the counts leave the window room to stall: nothing runs while runs wait."""
    if task.status != TaskStatus.RUNNING or task.halted:
        return False
    return not counts[RunStatus.RUNNING] and bool(counts[RunStatus.PENDING]) \
        and int(task.dispatched_attempt) == int(task.attempt)


def run_job(task_id: str, recounting: Mapping[str, Any] | None = None,
            stalling: Mapping[str, Any] | None = None) -> None:
    """The `run_look` job: a job of the recount in chunks, when one is due or under way
    (`recounting`: its continuation); once it ended, a job of the window check (`stalling`:
    its continuation)."""
    task = tasks.find(task_id)
    if task is None:
        return
    if stalling is None:
        chunk = recount.Chunked.of_job(recounting) if recounting is not None \
            else recount.Chunked.start(task) if recount.due(task, clock.now_epoch()) else None
        if chunk is not None:
            following, repaired = recount.step(task, chunk)
            if following is not None:  # the window check waits for the recount's last job
                jobs.enqueue(jobs.RUN_LOOK, task_id, recount=following.as_job())
                return
            if repaired:
                task = tasks.get(task_id)
    _stall_step(task, stalling)


def _stall_step(task: Task, stalling: Mapping[str, Any] | None) -> None:
    """One job of a large task's window check: the waiting runs of one group of its run
    partitions, what the jobs before read carried along. It stops when a released run waits (no
    stall), or when the counters or the window moved since its first job (its reading is out of
    date)."""
    first_closed = window.released(task.max_concurrency, task.counts, task.finished_base)
    partition, ver, closed, so_far = 0, int(task.counted_ver), first_closed, window.Scan()
    if stalling is not None:
        lowest = stalling["lowest"]
        partition, ver, closed = int(stalling["partition"]), int(stalling["ver"]), int(stalling["closed"])
        so_far = window.Scan(None if lowest is None else int(lowest), int(stalling["read"]))
    if (int(task.counted_ver), first_closed) != (ver, closed) or not may_stall(task, task.counts):
        return
    group, shards = jobs.partition_group(task, partition)
    waiting = (int(r.ordinal) for r in runs.iter_runs(task.task_id, RunStatus.PENDING, partitions=group))
    scan = window.scan_waiting(first_closed, waiting, so_far)
    if scan is None:
        return
    if group.stop < shards:
        jobs.enqueue(jobs.RUN_LOOK, task.task_id,
                     stall={"partition": group.stop, "lowest": scan.lowest, "read": scan.read, "ver": ver,
                            "closed": first_closed})
        return
    _reopen(task, window.shift_after(first_closed, task.counts, scan))


def reopen_stalled_window(task: Task, counts: dict[str, int]) -> bool:
    """A gap in ordinals (a crashed dispatch request) or a window narrowed too far could stall
    the concurrency window: when nothing runs but runs wait, release the lowest waiting ordinal
    (a task whose runs fit one job's read: the sweeper's look). Returns whether it did."""
    waiting = (int(r.ordinal) for r in runs.iter_runs(task.task_id, RunStatus.PENDING))  # read as needed
    return _reopen(task, window.reopen_shift(task.max_concurrency, counts, task.finished_base, waiting))


def _reopen(task: Task, shift: int) -> bool:
    if not shift or not tasks.update_quietly(task, "reopen_window", clock.now_iso(), shift=shift):
        return False
    logger.warning("concurrency window reopened", extra={"task_id": task.task_id, "shift": shift})
    return True
