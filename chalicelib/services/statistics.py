"""Statistics: O(1) reads of the stream-maintained counters, and the reconcile job."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from chalicelib import clock
from chalicelib.auth import Actor
from chalicelib.domain.statuses import RUN_TERMINAL, TASK_FINISHED, TASK_STATUSES, TaskStatus
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
        for scope, amounts in reconcile_steps.contribution(task, None).items():
            for name, amount in amounts.items():
                expected[scope][name] += amount
    return expected


def reconcile() -> dict[str, dict[str, str]]:
    """A whole reconcile pass in this process, step after step (tests, local tools): recount,
    compare with the counters, and repair the drift. Returns the drift found. The nightly
    schedule runs the same steps one per invocation instead (`start_reconcile`)."""
    drift = reconcile_steps.run_pass()
    return {scope: {k: str(v) for k, v in sorted(diff.items())} for scope, diff in sorted(drift.items())}


def start_reconcile() -> str:
    """Open a reconcile pass whose steps run on the dispatch queue (services/reconcile.py)."""
    return reconcile_steps.start()
