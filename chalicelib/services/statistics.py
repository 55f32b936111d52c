"""Statistics: O(1) reads of the stream-maintained counters, and the reconcile job."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from chalicelib import clock
from chalicelib.auth import Actor
from chalicelib.domain.records import Task
from chalicelib.domain.statuses import RUN_TERMINAL, TASK_FINISHED, TASK_STATUSES, TASK_TERMINAL, TaskStatus
from chalicelib.errors import Forbidden
from chalicelib.services import reconcile as reconcile_steps
from chalicelib.store import counters, tasks


def scope_for(actor: Actor, task_type: str | None, owner: str | None) -> str:
    """The scope `actor` may read: their own unless an admin. Built like the stream's
    (`counters.stats_scope`), so a `sub` holding `|type:` never names another user's scope.
    Raises Forbidden for another user's owner."""
    if owner is not None and owner != actor.user_id and not actor.is_admin:
        raise Forbidden("only admins may read other users' statistics")
    if owner is None and not actor.is_admin:
        owner = actor.user_id
    return counters.stats_scope(owner=owner or None, task_type=task_type or None)


def statistics(actor: Actor, task_type: str | None, owner: str | None) -> dict[str, Any]:
    totals = counters.read_stats(scope_for(actor, task_type, owner))
    return render(totals)


def render(totals: dict[str, Decimal]) -> dict[str, Any]:
    def n(name: str) -> int:
        return int(totals.get(name, 0))

    by_status = {status: n(f"st_{status}") for status in TASK_STATUSES}
    finished = sum(by_status[s] for s in TASK_FINISHED)
    dur_n = n("dur_n")
    return {
        "total_tasks": n("total"),
        "by_status": by_status,
        "running_tasks": by_status[TaskStatus.RUNNING],
        "completed_tasks": by_status[TaskStatus.COMPLETED],
        "failed_tasks": by_status[TaskStatus.FAILED],
        "type_stats": {k.removeprefix("ty_"): int(v) for k, v in sorted(totals.items()) if k.startswith("ty_") and v},
        "success_rate": round(by_status[TaskStatus.COMPLETED] * 100 / finished, 2) if finished else None,
        "avg_duration_seconds": round(float(totals.get("dur_sum", 0)) / dur_n, 2) if dur_n else None,
        "node_runs": {status: n(f"nr_{status}") for status in sorted(RUN_TERMINAL)},
        "as_of": clock.now_iso(),
    }


def recount() -> dict[str, dict[str, Decimal]]:
    """What every scope should hold, recounted from the task items (whose node counts
    `reconcile` first recounts from the runs of every active task)."""
    expected: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for task in tasks.iter_all():
        contribution: dict[str, Decimal] = defaultdict(Decimal)
        contribution["total"] += 1
        contribution[f"ty_{task.type}"] += 1
        contribution[f"st_{task.status}"] += 1
        for status, value in task.counts.items():  # every run status, terminal or not
            contribution[f"nr_{status}"] += Decimal(value)
        if task.status in TASK_FINISHED and task.started_at and task.completed_at:
            seconds = clock.parse_rfc3339(task.completed_at) - clock.parse_rfc3339(task.started_at)
            contribution["dur_sum"] += Decimal(str(round(seconds, 3)))
            contribution["dur_n"] += 1
        for scope in counters.scopes_of(task.owner, task.type):
            for name, amount in contribution.items():
                expected[scope][name] += amount
        _recount_hour(task, expected)
    return expected


def _recount_hour(task: Task, expected: dict[str, dict[str, Decimal]]) -> None:
    if task.status not in TASK_TERMINAL or not task.completed_at:
        return
    contribution: dict[str, Decimal] = {f"st_{task.status}": Decimal(1)}
    if task.status in TASK_FINISHED and task.started_at:
        seconds = clock.parse_rfc3339(task.completed_at) - clock.parse_rfc3339(task.started_at)
        contribution["dur_sum"] = Decimal(str(round(seconds, 3)))
        contribution["dur_n"] = Decimal(1)
    hour = counters.hour_of(task.completed_at)
    for scope in counters.scopes_of(task.owner, task.type):
        for name, amount in contribution.items():
            expected[counters.hour_scope(scope, hour)][name] += amount


def reconcile() -> dict[str, dict[str, str]]:
    """A whole reconcile pass in this process, step after step (tests, local tools): recount,
    compare with the counters, and repair the drift. Returns the drift found. The nightly
    schedule runs the same steps one per invocation instead (`start_reconcile`)."""
    drift = reconcile_steps.run_pass()
    return {scope: {k: str(v) for k, v in sorted(diff.items())} for scope, diff in sorted(drift.items())}


def start_reconcile() -> str:
    """Open a reconcile pass whose steps run on the dispatch queue (services/reconcile.py)."""
    return reconcile_steps.start()
