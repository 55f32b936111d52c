"""Runs that can't hang: a node run nobody claims within its task's `claim_timeout_seconds`
after it became claimable (domain/claim_deadlines.py) ends `timed_out`, with the runner's
state as the reason (services/runner_state.py).

The sweeper calls `expire_unclaimed` for each running task. Its cost stays bounded: a task is
read further only when it has pending runs and its next check time (`claim_check_at`, else
one timeout after its start) has come; then one query of its pending runs, one BatchGetItem
for the runners of at most MAX_PER_PASS runs that are due, and one write per run timed out.
The next check time is written back, so a task whose runs are waiting legitimately is looked
at about once per timeout, not once per sweep.

Statistics stay exact: the timeout is a run transition (`claim_timeout`), counted by the
stream like any other, and it counts against `max_errors` as a lease that timed out does.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any

from chalicelib import clock
from chalicelib.domain import claim_deadlines
from chalicelib.domain.claim_deadlines import WindowState
from chalicelib.domain.node_states import NodeStatus
from chalicelib.domain.records import Node, NodeRun, Task
from chalicelib.domain.statuses import RunStatus, TaskStatus
from chalicelib.domain.task_types import SERVICE_NODE
from chalicelib.observability import logger
from chalicelib.services import runner_state
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
    """End `timed_out` the pending runs of `task` nobody claimed in time. Returns how many.

    Each write is conditional on the run's attempt and task attempt as read, so a run claimed
    or offered again meanwhile is left alone (a harmless no-op). Raises what the store raises
    (the sweeper logs it and the next pass tries again).
    """
    if not due(task, now):
        return 0
    state = window_state(task)
    waiting = [r for r in runs.iter_runs(task.task_id, RunStatus.PENDING) if r.runner != SERVICE_NODE]
    deadlines = {r.node: claim_deadlines.deadline(int(r.ordinal), r.claimable_at, state) for r in waiting}
    late = [r for r in waiting if _past(deadlines[r.node], now)]
    ended = _time_out(task, late[:MAX_PER_PASS], now)
    # a capped pass leaves runs that are due now: the next sweep takes them
    check_at = now if len(late) > MAX_PER_PASS else claim_deadlines.next_check(deadlines.values(), now, state.timeout)
    _schedule_check(task, check_at)
    return len(ended)


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
    """The reason of each runner of `late`: one batched read of the runners, and the task's
    running runs only when some runner is online (to tell a busy one)."""
    runners = sorted({run.runner for run in late})
    found = node_lookup.nodes(runners)
    leased = _leased_by(task) if any(_online(found.get(r)) for r in runners) else Counter[str]()
    return {runner: runner_state.why_unclaimed(runner, found.get(runner), leased[runner]) for runner in runners}


def _online(node: Node | None) -> bool:
    return node is not None and node.status not in (NodeStatus.OFFLINE, NodeStatus.MAINTENANCE)


def _leased_by(task: Task) -> Counter[str]:
    """How many of this task's runs each runner holds leased. Runs of other tasks are not
    counted: no index lists a node's leases, and reading them all would grow with the fleet."""
    return Counter(run.lease_owner for run in runs.iter_runs(task.task_id, RunStatus.RUNNING) if run.lease_owner)


def _timed_out_event(run: NodeRun, reason: str) -> dict[str, Any]:
    return service_event(
        "node.claim_timed_out", f"{run.node}: not claimed in time, {reason}", type_="warning", node=run.node,
        data={"attempt": int(run.attempt), "runner": run.runner, "status": run.status},
    )


def _schedule_check(task: Task, check_at: float) -> None:
    if task.claim_check_at is not None and float(task.claim_check_at) == check_at:
        return
    tasks.update_quietly(task, "schedule_claim_check", clock.now_iso(), claim_check_at=check_at)
