"""The sweeper's watch on leases and plan reservations (domain/due.py, kind `lease`).

A run write that starts a lease (a claim, an apply claim, a run offered again and claimed) or a
plan reservation (plan ready) writes nothing for the sweeper: the counting stream consumer reads
its record and notes the run in a watch item due the second the lease lapses, one item per
second of a batch. A batch of 100 claims costs a write or two of about 4 KB (and as many deletes
once the sweeper read them) instead of the 200 index writes per-run entries cost (one in at the
claim, one out at the run's end).

Order and replays: a watch only makes the sweeper read the run when it comes due; what the
sweeper does follows the run as it reads it then. So a record delivered late, twice or after the
run's end writes at most a watch the sweeper reads for nothing. A watch's id is the smallest
sequence number of its records: a batch delivered again writes the same items.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Final

from chalicelib.domain import due
from chalicelib.domain.records import NodeRun
from chalicelib.domain.statuses import RunStatus
from chalicelib.store import backend
from chalicelib.store.backend import LeaseWatch
from chalicelib.store.stream_records import Record

#: the expiry a leased status is watched by
EXPIRY_OF: Final = {RunStatus.RUNNING: "lease_expires_at", RunStatus.APPLY_PENDING: "reservation_expires_at"}
#: the statuses that hold a lease or a plan reservation
LEASED: Final = frozenset(EXPIRY_OF)
#: runs per watch item (about 40 bytes each: an item stays a few write units)
RUNS_PER_WATCH: Final = 100


def consume(records: list[Record]) -> None:
    """The `CONSUMERS` entry (services/stream.py): watch the leases and reservations the batch's
    records start (a status change into `running` or `apply_pending`)."""
    started: set[tuple[str, str, int]] = set()
    first: Record | None = None
    for record in records:
        if not record.sk.startswith("RUN#") or record.new is None:
            continue
        status = record.new_value("status")
        name = EXPIRY_OF.get(status)
        if name is None or record.old_value("status") == status:
            continue
        expiry = record.new_value(name)
        if expiry is None:
            continue
        started.add((str(record.new_value("task_id")), str(record.new_value("node")), due.lapse_second(float(expiry))))
        first = record if first is None or record.seq < first.seq else first
    if first is not None:
        watch(started, tag=first.raw_seq)


def expiry_of(run: NodeRun) -> float:
    """The expiry a leased run (`running` or `apply_pending`) is watched by; 0 when it has none."""
    return float(getattr(run, EXPIRY_OF.get(run.status, "lease_expires_at")) or 0)


def due_at_expiry(run: NodeRun) -> tuple[str, str, int]:
    """(task id, node, due second) of a leased run watched at its current expiry (`watch`)."""
    return run.task_id, run.node, due.lapse_second(expiry_of(run))


def watch_runs(found: Iterable[NodeRun]) -> int:
    """Watch the leased runs of `found` (read from the table) at their expiry; returns how many."""
    leased = [due_at_expiry(run) for run in found if run.status in LEASED]
    watch(leased, tag=fresh_tag())
    return len(leased)


def fresh_tag() -> str:
    """A watch id of the sweeper's own (never the same twice, never a sequence number)."""
    return f"s{uuid.uuid4().hex[:16]}"


def watch(runs: Iterable[tuple[str, str, int]], tag: str) -> int:
    """Write watches for `runs` ((task id, node, due second)): one item per second (split every
    RUNS_PER_WATCH runs), ids `<tag>.<second>.<n>`, each in the shard of its id. Returns the
    items written."""
    groups: dict[int, set[tuple[str, str]]] = defaultdict(set)
    for task_id, node, second in runs:
        groups[second].add((task_id, node))
    watches = []
    for second, members in sorted(groups.items()):
        ordered = sorted(members)
        for start in range(0, len(ordered), RUNS_PER_WATCH):
            watch_id = f"{tag}.{second}.{start // RUNS_PER_WATCH}"
            part = tuple(ordered[start:start + RUNS_PER_WATCH])
            watches.append(LeaseWatch(due.watch_shard(watch_id), due.watch_sk(second, watch_id), part))
    if watches:
        backend.current().put_lease_watches(watches)
    return len(watches)
