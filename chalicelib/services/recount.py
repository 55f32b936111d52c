"""Recounting a task from its runs: the repair of counts a lost stream record left wrong.

The aggregator counts each run write once, in any order (services/aggregation.py), but a record
that never arrives (a dead-lettered batch, a stream outage over 24 h) leaves a count behind: a
run shown `running` that ended, so the task never finishes. The sweeper recounts an active task
whose counters have not moved for `FLEETRUN_RECOUNT_GRACE_SECONDS` (and no sooner than that
after its last recount) — in its look, or for a large task in a job (services/run_looks.py) —
and the daily reconcile recounts every active task. A recount reads the
task's runs (one consistent query of its partition, paged) and, when they disagree with the
counters, sets the counts, the progress and each run's mark in one transaction guarded by the
task's `counted_ver`, with the statistics moved by the same difference: a record the
aggregator counts meanwhile makes the transaction fail and the next pass try again; a late
copy of a record already recounted is not counted again (its mark is set). Counts that disagree
also mean a record that may have started a lease went missing: every leased run the recount read
is watched again (services/lease_watch.py), so the lapsed lease of a lost claim record is found
once the recount has run.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from botocore.exceptions import ClientError

from chalicelib import clock, config
from chalicelib.domain import dispatch_progress, rules
from chalicelib.domain.records import NodeRun, Task
from chalicelib.domain.statuses import RUN_STATUSES, TaskStatus
from chalicelib.observability import logger
from chalicelib.services import lease_watch
from chalicelib.store import counters, retrying, runs
from chalicelib.store.counters import marker_sk

#: statuses whose counts a recount can repair: later ones no run changes
RECOUNTED = frozenset({TaskStatus.RUNNING, TaskStatus.CANCELLING})


def repairable(task: Task) -> bool:
    """Active, and its attempt dispatched, every chunk (until then a retry's counts are ahead of
    its runs: domain/retry_counting.py)."""
    return task.status in RECOUNTED and not dispatch_progress.in_progress(task)


def due(task: Task, now: float) -> bool:
    """Whether the sweeper should recount `task`: repairable, counters quiet for the grace
    period, and not recounted within it."""
    if not repairable(task):
        return False
    grace = config.recount_grace_seconds()
    quiet_since = max(_epoch(task.counted_at), _epoch(task.recounted_at), _epoch(task.updated_at))
    return now - quiet_since >= grace


def _epoch(stamp: str | None) -> float:
    return clock.parse_rfc3339(stamp) if stamp else 0.0


def repair(task: Task) -> bool:
    """Recount `task` from its runs; True when its counters were wrong and are now right."""
    recounted: dict[str, int] = dict.fromkeys(RUN_STATUSES, 0)
    progress = 0
    vers: dict[str, dict[str, int]] = defaultdict(dict)
    leased: list[NodeRun] = []
    for run in runs.iter_runs(task.task_id):
        recounted[run.status] += 1
        if run.status in lease_watch.LEASED:
            leased.append(run)
        progress += rules.run_progress_weight(run.status, int(run.progress or 0))
        vers[marker_sk(int(run.ordinal))][run.node] = int(run.ver)
    stored = {status: int(task.counts.get(status, 0)) for status in RUN_STATUSES}
    now = clock.now_iso()
    if recounted == stored and progress == int(task.progress_sum):
        counters.stamp_recount(task.task_id, now)
        return False
    # a lost record of a claim also left the run without its lease watch (services/lease_watch.py)
    lease_watch.watch_runs(leased)
    marks = counters.read_all_markers(task.task_id)
    changed_marks = {sk: nodes for sk, nodes in vers.items() if marks.get(sk, {}) != nodes}
    run_stats = {f"nr_{s}": Decimal(recounted[s] - stored[s]) for s in RUN_STATUSES}
    try:
        retrying.retry_writes(lambda: counters.replace_counts(
            task.task_id, task.owner, task.type, counted_ver=int(task.counted_ver), attempt=int(task.attempt),
            counts=recounted, progress_sum=progress, run_stats=run_stats, markers=changed_marks, now=now,
        ))
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
            raise
        logger.info("recount raced the aggregator; the next pass tries again", extra={"task_id": task.task_id})
        return False
    logger.warning("task counts recounted from its runs", extra={
        "task_id": task.task_id, "counts_before": {k: v for k, v in stored.items() if v},
        "counts_after": {k: v for k, v in recounted.items() if v},
    })
    return True
