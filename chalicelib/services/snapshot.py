"""The monitoring snapshot: node counts by status, running tasks, node runs in flight (claimed
and not finished) and node runs waiting (nobody has claimed them yet: a run on a node that is
not registered waits, it is not in flight).

One cached item answers every read (a GetItem, whatever the size of the fleet):
- node counts are moved by the stream (`consume`), per node from what was counted to its
  newest status, guarded by the node's last applied stream sequence, so replays, bisected
  batches and duplicates change nothing;
- the task and run figures are copied from the statistics counters (`STATS#all`, a fixed
  number of shards) whenever the copy is older than MAX_AGE_SECONDS at read time;
- `repair` (daily, with the statistics reconcile) recounts the nodes by scanning them and
  fixes what differs: the only place whose cost grows with the fleet.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from botocore.exceptions import ClientError

from chalicelib import clock
from chalicelib.domain.node_states import NODE_STATUSES
from chalicelib.domain.statuses import TASK_ACTIVE, TASK_STATUSES, RunStatus, TaskStatus
from chalicelib.observability import logger
from chalicelib.store import counters, inventory, retrying
from chalicelib.store import snapshot as store
from chalicelib.store.stream_records import Record
from chalicelib.store.writes import is_retry_later

MAX_AGE_SECONDS: Final = 10
#: run statuses of unfinished work, as counted by the statistics (`nr_<status>`): `node_runs`
UNFINISHED: Final = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.APPLY_PENDING)
#: claimed and not finished (an apply_pending run's runner holds its plan)
IN_FLIGHT: Final = (RunStatus.RUNNING, RunStatus.APPLY_PENDING)
#: waiting for a runner to claim them
WAITING: Final = (RunStatus.PENDING,)
_ACTIVE_TASKS: Final = tuple(s for s in TASK_STATUSES if s in TASK_ACTIVE)
_ATTEMPTS: Final = 5


def read(now: float | None = None) -> dict[str, Any]:
    """The snapshot, copied figures no older than MAX_AGE_SECONDS. Constant cost: one GetItem,
    plus (at most once per MAX_AGE_SECONDS) one query of the statistics shards and one update."""
    now = clock.now_epoch() if now is None else now
    item = store.get() or {}
    as_of = store.number(item, "as_of")
    if as_of is None or float(as_of) < now - MAX_AGE_SECONDS:
        figures = _figures(counters.read_stats("all"))
        store.save_figures(figures, now)  # False: a concurrent reader stored a copy as fresh as ours
        item = {**item, **{name: {"N": str(value)} for name, value in figures.items()}}
        as_of = Decimal(str(now))
    return render(item, float(as_of))


def render(item: dict[str, Any], as_of: float) -> dict[str, Any]:
    def n(name: str) -> int:
        value = store.number(item, name)
        return int(value) if value is not None else 0

    counted = store.node_counts(item)
    by_status = {status: counted.get(status, 0) for status in NODE_STATUSES}
    by_status.update({status: count for status, count in sorted(counted.items()) if count})
    runs = {status: n(f"nr_{status}") for status in UNFINISHED}
    return {
        "nodes": by_status,
        "total_nodes": sum(by_status.values()),
        "running_tasks": n(f"st_{TaskStatus.RUNNING}"),
        "active_tasks": {status: n(f"st_{status}") for status in _ACTIVE_TASKS},
        "node_runs_in_flight": sum(runs[status] for status in IN_FLIGHT),
        "node_runs_waiting": sum(runs[status] for status in WAITING),
        "node_runs": runs,
        "as_of": clock.rfc3339(as_of),
    }


def _figures(totals: dict[str, Decimal]) -> dict[str, int]:
    names = [f"st_{status}" for status in _ACTIVE_TASKS] + [f"nr_{status}" for status in UNFINISHED]
    return {name: int(totals.get(name, 0)) for name in names}


# --- the stream consumer -----------------------------------------------------------------------
def consume(records: list[Record]) -> None:
    """Stream consumer: move the node counts of the nodes whose status changed in this batch.

    Idempotent: per node, only records newer than its last applied sequence count, and the
    count moves from what was counted (not from the record's old image) to the newest status.
    """
    changes: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        if record.pk.startswith("NODE#") and record.sk == "META" \
                and record.old_value("status") != record.new_value("status"):
            changes[record.pk.removeprefix("NODE#")].append(record)
    if not changes:
        return
    for attempt in range(_ATTEMPTS):
        if attempt:
            time.sleep(retrying.delay(attempt))  # racing writers spread out (full jitter, capped)
        counted = store.counted(changes)
        recounts = []
        for node_id, node_records in changes.items():
            before = counted[node_id]
            fresh = [r for r in node_records if before.seq is None or r.seq > before.seq]
            if fresh:
                newest = fresh[-1]
                status = newest.new_value("status") if newest.new is not None else None
                expires = int(clock.now_epoch()) + store.REMOVED_TTL_SECONDS if newest.new is None else None
                recounts.append(store.Recount(before, status, newest.seq, expires))
        try:
            store.apply(recounts)
            return
        except ClientError as error:
            if error.response["Error"]["Code"] != "TransactionCanceledException" and not is_retry_later(error):
                raise
            # a concurrent batch or the repair moved a node: re-read and filter again (a chunk
            # that was applied before the failure is now filtered out by its sequence)
    raise RuntimeError("could not apply node status changes to the snapshot")


# --- the repair ------------------------------------------------------------------------------
@dataclass
class RepairReport:
    nodes: int = 0
    fixed: dict[str, str] = field(default_factory=dict)
    skipped: int = 0


def repair() -> RepairReport:
    """Recount the nodes by status and fix every counted node that differs (daily job).

    A node changed while this runs makes its conditional fix fail: skipped, the stream (or
    the next repair) settles it.
    """
    report = RepairReport()
    counted = {record.node_id: record for record in store.all_counted()}
    actual: dict[str, str | None] = {}
    for node in inventory.iter_nodes(["pk", "sk", "node_id", "status"]):
        actual[node.node_id] = node.status
    report.nodes = len(actual)
    for node_id in set(counted) - set(actual):
        actual[node_id] = None
    fixes = []
    for node_id, status in actual.items():
        before = counted.get(node_id) or store.Counted(node_id, None, None, False)
        if before.status != status:
            gone = int(clock.now_epoch()) + store.REMOVED_TTL_SECONDS if status is None else None
            fixes.append(store.Recount(before, status, before.seq, gone))
            report.fixed[node_id] = f"{before.status} -> {status}"
    for fix in fixes:  # one by one: a lost race skips one node, not 99
        try:  # a transaction conflict or a throttle is tried again; a node that changed is skipped
            retrying.retry_writes(functools.partial(store.apply, [fix]))
        except ClientError as error:
            if error.response["Error"]["Code"] != "TransactionCanceledException" and not is_retry_later(error):
                raise
            report.skipped += 1
            report.fixed.pop(fix.before.node_id, None)
    logger.info("snapshot node counts repaired", extra={"nodes": report.nodes, "fixed": report.fixed,
                                                         "skipped": report.skipped})
    return report
