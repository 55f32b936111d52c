"""Runs that can't hang: a node run nobody claims within its task's `claim_timeout_seconds`
after it became claimable (domain/claim_deadlines.py) ends `timed_out`, with the runner's
state as the reason (services/runner_state.py).

The sweeper calls `expire_unclaimed` for each task it looks at. Its cost stays bounded: a task
is read further only when it has pending runs and its next check time (`claim_check_at`, else
one timeout after its start) has come; then the pending runs of one group of its run
partitions (about jobs.RUNS_PER_JOB runs), one BatchGetItem for the runners of at most
MAX_PER_PASS runs that are due, and one write per run timed out. A larger task's other groups
are walked by claim-check jobs on the dispatch queue, one group each, as a cancel goes; the
last writes the next check time back, so a task whose runs are waiting legitimately is looked
at about once per timeout, not once per sweep, and no sweep reads more than a group of it.

Statistics stay exact: the timeout is a run transition (`claim_timeout`), counted by the
stream like any other, and it counts against `max_errors` as a lease that timed out does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

from chalicelib import clock
from chalicelib.domain import claim_deadlines
from chalicelib.domain.claim_deadlines import WindowState
from chalicelib.domain.records import NodeRun, Task
from chalicelib.domain.statuses import RunStatus, TaskStatus
from chalicelib.domain.task_types import SERVICE_NODE
from chalicelib.observability import logger
from chalicelib.services import jobs, runner_state
from chalicelib.services.service_events import service_event
from chalicelib.store import events, node_lookup, runs, tasks

#: runs timed out per task and sweep; the rest are due at once and go in the next pass
MAX_PER_PASS = 100


def due(task: Task, now: float) -> bool:
    """Whether the task may have runs past their claim deadline (no read beyond the task)."""
    if task.status != TaskStatus.RUNNING or task.halted or not task.counts.get(RunStatus.PENDING):
        return False
    if int(task.dispatched_attempt) != int(task.attempt) or not task.started_at:
        return False
    check_at = task.claim_check_at
    if check_at is None:
        check_at = clock.parse_rfc3339(task.started_at) + int(task.claim_timeout_seconds)
    return now >= float(check_at)


def expire_unclaimed(task: Task, now: float) -> int:
    """The sweeper's look: end `timed_out` the pending runs of `task` nobody claimed in time, of
    the first group of its run partitions; claim-check jobs walk the others. Returns how many.

    Each write is conditional on the run's attempt and task attempt as read, so a run claimed
    or offered again meanwhile is left alone (a harmless no-op). Raises what the store raises
    (the sweeper logs it and the next pass tries again).
    """
    if not due(task, now):
        return 0
    return _check_group(task, now, Walk(window_state(task)))


@dataclass(frozen=True)
class Walk:
    """Where a walk of a task's run partitions is: every group is judged by the window as the
    look that began it read it (a later move, such as the walk's own timeouts make, would push
    the deadlines of the groups after it back), and `ahead` is the earliest deadline still
    ahead that the groups before found."""

    state: WindowState
    partition: int = 0
    ahead: float | None = None


def run_job(task_id: str, attempt: int, walk: Walk) -> int:
    """The claim-check job: one group of the walk a look began. Returns how many runs timed out."""
    task = tasks.find(task_id)
    if task is None or int(task.attempt) != attempt or task.status != TaskStatus.RUNNING or task.halted:
        return 0
    return _check_group(task, clock.now_epoch(), walk)


def walk_of(job: dict[str, Any]) -> Walk:
    """The walk a claim-check job message carries (`_hand_on`)."""
    ahead = job.get("ahead")
    return Walk(WindowState(**job["state"]), int(job.get("partition", 0)), float(ahead) if ahead is not None else None)


def _check_group(task: Task, now: float, walk: Walk) -> int:
    """Time out the late runs of one group of run partitions (at most MAX_PER_PASS), then hand the
    walk on: this group again while late runs are left, else the next group, and after the last
    one schedule the next look at the earliest deadline ahead of them all."""
    state = walk.state
    group, shards = jobs.partition_group(task, walk.partition)
    waiting = [r for r in runs.iter_runs(task.task_id, RunStatus.PENDING, partitions=group)
               if r.runner != SERVICE_NODE]
    deadlines = {r.node: claim_deadlines.deadline(int(r.ordinal), r.claimable_at, state) for r in waiting}
    late = [r for r in waiting if _past(deadlines[r.node], now)]
    ended = _time_out(task, late[:MAX_PER_PASS], now)
    found = claim_deadlines.next_check(deadlines.values(), now, state.timeout)
    ahead = found if walk.ahead is None else min(walk.ahead, found)
    if len(late) > MAX_PER_PASS:
        _hand_on(task, replace(walk, ahead=ahead), now)
    elif group.stop < shards:
        _hand_on(task, replace(walk, partition=group.stop, ahead=ahead), now)
    else:
        _schedule_check(task, ahead)
    return len(ended)


def _hand_on(task: Task, walk: Walk, now: float) -> None:
    """The rest of the walk to a claim-check job. Then the look is put a timeout off, so the
    sweeper begins no other walk while this one goes on (its last job schedules the look; if
    the walk is lost, the look after the timeout begins it again; if the job could not be sent,
    the next pass does)."""
    state = {**asdict(walk.state), "counts": dict(walk.state.counts)}
    jobs.enqueue(jobs.CLAIM_CHECK, task.task_id, attempt=int(task.attempt), partition=walk.partition,
                 ahead=walk.ahead, state=state)
    if task.claim_check_at is None or float(task.claim_check_at) <= now:
        _schedule_check(task, now + float(task.claim_timeout_seconds))


def _past(deadline: float | None, now: float) -> bool:
    return deadline is not None and deadline <= now


def window_state(task: Task) -> WindowState:
    assert task.started_at is not None
    moved = clock.parse_rfc3339(task.window_moved_at) if task.window_moved_at else None
    return WindowState(
        max_concurrency=int(task.max_concurrency), counts=task.counts, finished_base=int(task.finished_base),
        timeout=float(task.claim_timeout_seconds), started_at=clock.parse_rfc3339(task.started_at),
        window_moved_at=moved,
    )


def _time_out(task: Task, late: list[NodeRun], now: float) -> list[NodeRun]:
    if not late:
        return []
    reasons = _reasons(task, late)
    stamp = clock.rfc3339(now)
    suffix = f"; nobody claimed the run within {int(task.claim_timeout_seconds)} s"
    calls = [partial(runs.transition, run, "claim_timeout", stamp, now_epoch=now, generation=int(run.generation),
                     error_message=reasons[run.runner] + suffix) for run in late]
    ended = [r for r in runs.run_concurrently(calls) if r is not None and r.status == RunStatus.TIMED_OUT]
    if ended:
        events.append(task.task_id, [_timed_out_event(run, reasons[run.runner]) for run in ended])
        logger.warning("node runs timed out unclaimed", extra={"task_id": task.task_id, "runs": len(ended)})
    return ended


def _reasons(task: Task, late: list[NodeRun]) -> dict[str, str]:
    """The reason of each runner of `late`: one batched read of the runners."""
    runners = sorted({run.runner for run in late})
    found = node_lookup.nodes(runners)
    return {runner: runner_state.why_unclaimed(runner, found.get(runner), _leased_by(task, runner))
            for runner in runners}


def _leased_by(task: Task, runner: str) -> int:
    """How many of this task's runs `runner` holds, from the counts (no read): a delegate runs
    every run of its task, a target only its own, which waits. Runs of other tasks are not
    counted: no index lists a node's leases, and reading them all would grow with the fleet."""
    return int(task.counts.get(RunStatus.RUNNING, 0)) if runner == task.runner_node else 0


def _timed_out_event(run: NodeRun, reason: str) -> dict[str, Any]:
    return service_event(
        "node.claim_timed_out", f"{run.node}: not claimed in time, {reason}", type_="warning", node=run.node,
        data={"attempt": int(run.attempt), "runner": run.runner, "status": run.status},
    )


def _schedule_check(task: Task, check_at: float) -> None:
    if task.claim_check_at is not None and float(task.claim_check_at) == check_at:
        return
    tasks.update_quietly(task, "schedule_claim_check", clock.now_iso(), claim_check_at=check_at)
