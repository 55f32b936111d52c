"""Recounting a task from its runs: the repair of counts a lost stream record left wrong.

The aggregator counts each run write once, in any order (services/aggregation.py), but a record
that never arrives (a dead-lettered batch, a stream outage over 24 h) leaves a count behind: a
run shown `running` that ended, so the task never finishes. The sweeper recounts an active task
whose counters have not moved for `FLEETRUN_RECOUNT_GRACE_SECONDS` (and no sooner than that
after its last recount) — in its look, or for a large task in jobs (services/run_looks.py) —
and the daily reconcile recounts every active task that fits one job's read. A recount reads the
task's runs and, when they disagree with the counters, sets the counts, the progress and each
run's mark in one transaction guarded by the task's `counted_ver` (as read before the first
run), with the statistics moved by the same difference: a record the aggregator counts
meanwhile makes the transaction fail and the next pass try again; a late copy of a record
already recounted is not counted again (its mark is set). Counts that disagree also mean a
record that may have started a lease went missing: every leased run the recount read is watched
again (services/lease_watch.py), so the lapsed lease of a lost claim record is found once the
recount has run.

A task whose runs do not fit one job's read (jobs.RUNS_PER_JOB) is recounted in chunks
(`Chunked`, ARCHITECTURE.md invariant 9): each `run_look` job reads one group of its run
partitions and sends the next job the continuation. A first pass only adds up counts and
progress (carried in the job): when they agree, as they almost always do, it stamps the
recount and nothing was written. When they disagree, a second pass reads the runs again and
keeps, per job, what it read (store/recount_parts.py); its last job adds the parts up, from the
first partition to the last, and commits them as above. Either pass stops as soon as a job finds
the task's `counted_ver` or attempt moved: the counters are not quiet, and a recount is moot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError
from ulid import ULID

from chalicelib import clock, config
from chalicelib.domain import dispatch_progress, rules
from chalicelib.domain.records import NodeRun, Task
from chalicelib.domain.statuses import RUN_STATUSES, TaskStatus
from chalicelib.observability import logger
from chalicelib.services import jobs, lease_watch
from chalicelib.store import counters, recount_parts, retrying, runs
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
    """Recount `task` from all its runs, in this call (a task whose runs fit one job's read:
    `in_one_read`); True when its counters were wrong and are now right."""
    tally = Tally.of(runs.iter_runs(task.task_id))
    if tally.agrees_with(task):
        counters.stamp_recount(task.task_id, clock.now_iso())
        return False
    return _replace(task, tally)


def in_one_read(task: Task) -> bool:
    """Whether the task's runs fit one job's read (jobs.RUNS_PER_JOB): recounted in one call."""
    group, shards = jobs.partition_group(task, 0)
    return group.stop >= shards


@dataclass
class Tally:
    """What a recount read of a task's runs: counts, progress, each run's mark (the write it was
    read at, by marker item and node) and the leases to watch again ((node, due second))."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RUN_STATUSES, 0))
    progress: int = 0
    marks: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    leased: list[tuple[str, int]] = field(default_factory=list)

    @classmethod
    def of(cls, found: Iterable[NodeRun]) -> Tally:
        tally = cls()
        for run in found:
            tally.counts[run.status] += 1
            tally.progress += rules.run_progress_weight(run.status, int(run.progress or 0))
            tally.marks[marker_sk(int(run.ordinal))][run.node] = int(run.ver)
            if run.status in lease_watch.LEASED:
                tally.leased.append(lease_watch.due_at_expiry(run)[1:])
        return tally

    def agrees_with(self, task: Task) -> bool:
        return _agrees(task, self.counts, self.progress)

    def add(self, other: Tally) -> None:
        for status, n in other.counts.items():
            self.counts[status] += n
        self.progress += other.progress
        for sk, nodes in other.marks.items():
            self.marks[sk].update(nodes)
        self.leased += other.leased

    def as_json(self) -> dict[str, Any]:
        return {"counts": {s: n for s, n in self.counts.items() if n}, "progress": self.progress,
                "marks": self.marks, "leased": self.leased}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Tally:
        tally = cls(progress=int(value["progress"]), leased=[(str(n), int(s)) for n, s in value["leased"]])
        tally.counts.update({str(s): int(n) for s, n in value["counts"].items()})
        tally.marks.update({str(sk): dict(nodes) for sk, nodes in value["marks"].items()})
        return tally


def _stored(task: Task) -> dict[str, int]:
    return {status: int(task.counts.get(status, 0)) for status in RUN_STATUSES}


def _agrees(task: Task, counts: Mapping[str, int], progress: int) -> bool:
    return {s: counts.get(s, 0) for s in RUN_STATUSES} == _stored(task) and progress == int(task.progress_sum)


def _replace(task: Task, tally: Tally) -> bool:
    """Set the task's counts, progress and marks to `tally`, guarded by the `counted_ver` of
    `task` as read before the runs were: False when the aggregator counted a record meanwhile."""
    stored, now = _stored(task), clock.now_iso()
    # a lost record of a claim also left the run without its lease watch (services/lease_watch.py)
    lease_watch.watch([(task.task_id, node, second) for node, second in tally.leased], tag=lease_watch.fresh_tag())
    marks = counters.read_all_markers(task.task_id)
    changed_marks = {sk: nodes for sk, nodes in tally.marks.items() if marks.get(sk, {}) != nodes}
    run_stats = {f"nr_{s}": Decimal(tally.counts[s] - stored[s]) for s in RUN_STATUSES}
    try:
        retrying.retry_writes(lambda: counters.replace_counts(
            task.task_id, task.owner, task.type, counted_ver=int(task.counted_ver), attempt=int(task.attempt),
            counts=tally.counts, progress_sum=tally.progress, run_stats=run_stats, markers=changed_marks, now=now,
        ))
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
            raise
        logger.info("recount raced the aggregator; the next pass tries again", extra={"task_id": task.task_id})
        return False
    logger.warning("task counts recounted from its runs", extra={
        "task_id": task.task_id, "counts_before": {k: v for k, v in stored.items() if v},
        "counts_after": {k: v for k, v in tally.counts.items() if v},
    })
    return True


# --- a large task: one group of run partitions per job ------------------------------------------
@dataclass(frozen=True)
class Chunked:
    """A recount of a task whose runs do not fit one job's read, as the `run_look` job carries
    it from one job to the next (see the module text)."""

    pass_id: str
    #: the task's `counted_ver` and attempt before the first run was read: the pass stops when
    #: either moves, and its commit is guarded by them
    counted_ver: int
    attempt: int
    #: the first run partition the next job reads (jobs.partition_group)
    partition: int = 0
    #: the second pass: the first found the counts wrong; this one keeps what it reads
    keep: bool = False
    #: what the jobs before read (the first pass only)
    counts: Mapping[str, int] = field(default_factory=dict)
    progress: int = 0

    @classmethod
    def start(cls, task: Task) -> Chunked:
        return cls(str(ULID()), int(task.counted_ver), int(task.attempt))

    def as_job(self) -> dict[str, Any]:
        return {"pass": self.pass_id, "ver": self.counted_ver, "attempt": self.attempt,
                "partition": self.partition, "keep": self.keep, "counts": dict(self.counts),
                "progress": self.progress}

    @classmethod
    def of_job(cls, fields: Mapping[str, Any]) -> Chunked:
        return cls(str(fields["pass"]), int(fields["ver"]), int(fields["attempt"]), int(fields["partition"]),
                   bool(fields["keep"]), {str(s): int(n) for s, n in fields["counts"].items()},
                   int(fields["progress"]))


def step(task: Task, chunk: Chunked) -> tuple[Chunked | None, bool]:
    """One job of a recount in chunks: read the next group of the task's run partitions. Returns
    the continuation (None once the recount ended) and whether the counts were repaired."""
    if int(task.counted_ver) != chunk.counted_ver or int(task.attempt) != chunk.attempt or not repairable(task):
        logger.info("recount stopped: the task's counters moved; the next look tries again",
                    extra={"task_id": task.task_id, "pass": chunk.pass_id})
        return None, False
    group, shards = jobs.partition_group(task, chunk.partition)
    tally = Tally.of(runs.iter_runs(task.task_id, partitions=group))
    if chunk.keep:
        recount_parts.save(task.task_id, chunk.pass_id, group, tally.as_json())
    counts = {s: n for s in RUN_STATUSES if (n := chunk.counts.get(s, 0) + tally.counts[s])}
    progress = chunk.progress + tally.progress
    if group.stop < shards:
        return replace(chunk, partition=group.stop, counts=counts, progress=progress), False
    if not chunk.keep:
        if _agrees(task, counts, progress):
            counters.stamp_recount(task.task_id, clock.now_iso())
            return None, False
        # wrong (or still settling): a second pass (under the same `counted_ver` and attempt,
        # checked above) reads the runs again and keeps their marks
        return replace(Chunked.start(task), keep=True), False
    kept = _kept(task.task_id, chunk.pass_id, shards)
    return None, kept is not None and _replace(task, kept)


def _kept(task_id: str, pass_id: str, shards: int) -> Tally | None:
    """What the pass kept, from partition 0 to the last one part after part (None when the parts
    do not follow each other: a job ran twice across a change of the task's partitions)."""
    parts, whole, first = recount_parts.read(task_id, pass_id), Tally(), 0
    while first < shards:
        if first not in parts:
            logger.warning("recount parts do not cover the task; the next look tries again",
                           extra={"task_id": task_id, "pass": pass_id, "missing": first})
            return None
        first, part = parts[first]
        whole.add(Tally.from_json(part))
    return whole
