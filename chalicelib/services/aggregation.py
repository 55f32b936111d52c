"""The stream's counting consumer: node counts, progress and statistics from old/new images.

Exact on DynamoDB Streams' own terms (ARCHITECTURE.md, invariant 8): records are ordered per
item only, so the records of one task may come on several shards at once, interleaved, in
batches of any size, replayed, or never. Each write of a run or a task carries `ver`, its
number among that item's writes; a record counts when its `ver` is newer than the one marked
for its item, and the counters move in the same transaction as the marks (store/counters.py).
Any order, interleaving or replay therefore gives the same counts; a record that never comes is
repaired by the recount (services/recount.py). Records that move no counter need no mark.

Per batch and per task: one read (the task and its marker items), the outbox
(services/outbox.py), one transaction, then the finishing rules. A transaction that loses a
race (a record counted meanwhile, or TransactionConflict) is read and filtered again after a
jittered backoff. How a retry's reset is counted once is said in domain/retry_counting.py.

How often the task item is written, whatever its node count: once per batch that shows the
task's records (one counter transaction per MAX_MARKER_ITEMS marker items, and a batch's runs
touch at most ceil(nodes / MARKER_BUCKET) of them: one transaction up to 10,240 nodes), plus its
own status changes. So at most (stream shards x ParallelizationFactor) concurrent batches x
batches/s each, e.g. 8 processors x ~4 batches/s = 32 writes/s, far below a partition's 1,000
(tests/integration/test_write_sharding.py counts it; bench/scale_partitions.py measures it). Runs,
their events and the marker items are spread over the task's run partitions (store/run_partitions.py):
records of a sharded task arrive with `TASK#<id>#R<s>` keys, grouped here by task id.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import clock
from chalicelib.domain import rules
from chalicelib.domain.records import Task
from chalicelib.domain.retry_counting import counted_by_retry
from chalicelib.domain.statuses import RUN_TERMINAL, TASK_FINISHED, TASK_TERMINAL
from chalicelib.observability import logger, tracer
from chalicelib.services import finishing, outbox, reconcile
from chalicelib.services.usage import Month
from chalicelib.store import counters, retrying, run_partitions, tasks
from chalicelib.store.counters import MAX_MARKER_ITEMS, TaskDelta, marker_sk
from chalicelib.store.dynamo import task_record
from chalicelib.store.models import TaskItem
from chalicelib.store.stream_records import Image, Record, attribute
from chalicelib.store.writes import is_retry_later

#: attempts at one task's records before the batch is handed back to Lambda
ATTEMPTS = 8


@tracer.capture_method
def process_batch(raw_records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Apply a stream batch. Returns the sequence numbers to report as failed (at most one:
    the first record of the first task that failed; Lambda redelivers from there)."""
    groups: dict[str, list[Record]] = defaultdict(list)
    expired: list[Record] = []
    for raw in raw_records:
        record = Record(raw)
        if not (run_partitions.is_task_pk(record.pk) and (record.sk == "META" or record.sk.startswith("RUN#"))):
            continue
        if record.expired:  # statistics keep counting what the TTL removes (API.md "Retention")
            expired += [record] if record.sk == "META" else []
            continue
        groups[run_partitions.task_id_of(record.pk)].append(record)  # a sharded task's runs too
    failures: list[Record] = []
    for record in expired:
        try:
            reconcile.tally_expired(run_partitions.task_id_of(record.pk), record.old)
        except Exception:
            logger.exception("tally of an expired task failed", extra={"pk": record.pk})
            failures.append(record)
    for task_id, records in groups.items():
        try:
            _apply(task_id, records)
        except Exception:
            logger.exception("stream aggregation failed", extra={"task_id": task_id})
            failures.append(records[0])
    if not failures:
        return []
    return [min(failures, key=lambda r: r.seq).raw_seq]


def _apply(task_id: str, records: list[Record]) -> None:
    sks = {marker_sk(_ordinal(r)) for r in records if r.sk.startswith("RUN#")}
    for attempt in range(ATTEMPTS):
        raw_task, marks = counters.read_markers(task_id, sks)
        if raw_task is None:
            return
        task = task_record(TaskItem.from_raw_data(raw_task))
        fresh = [r for r in records if _fresh(r, task, marks)]
        # jobs go out before the counters move: a crash in between re-sends them on replay, and a
        # replay of status changes already counted sends nothing (a duplicate job is harmless)
        outbox.send_jobs([r for r in records if r.sk == "META" and (r in fresh or not _task_changes_status(r))])
        try:
            counted = _count(task, fresh)
        except ClientError as error:
            if not _lost_race(error) or attempt == ATTEMPTS - 1:
                raise
            time.sleep(retrying.delay(attempt + 1))
            continue
        finishing.settle(tasks.get(task_id) if counted else task)
        return


def _lost_race(error: ClientError) -> bool:
    """A record counted by another processor meanwhile, a conflicting transaction, a throttle."""
    code = error.response.get("Error", {}).get("Code")
    return code in ("TransactionCanceledException", "ConditionalCheckFailedException") or is_retry_later(error)


def _ordinal(record: Record) -> int:
    return int(record.new_value("ordinal") or record.old_value("ordinal") or 0)


def _ver(record: Record) -> int:
    """The number of the write a record shows (a deletion: one past the last write)."""
    if record.new is None:
        return int(record.old_value("ver") or 0) + 1
    return int(record.new_value("ver") or 0)


def _fresh(record: Record, task: Task, marks: Mapping[str, Mapping[str, int]]) -> bool:
    """Whether the record moves counters and is not counted yet."""
    if record.sk == "META":
        return _task_changes_status(record) and _ver(record) > int(task.stats_ver)
    if _delta([record]).is_empty():
        return False
    node = record.sk.removeprefix("RUN#")
    return _ver(record) > marks.get(marker_sk(_ordinal(record)), {}).get(node, -1)


def _task_changes_status(record: Record) -> bool:
    return bool(record.old_value("status") != record.new_value("status"))


def _count(task: Task, fresh: list[Record]) -> bool:
    """Move the counters by `fresh`, marking each record counted, in one transaction per group of
    at most MAX_MARKER_ITEMS marker items (a group is exact on its own). False when none was fresh."""
    runs_by_item: dict[str, list[Record]] = defaultdict(list)
    for record in fresh:
        if record.sk.startswith("RUN#"):
            runs_by_item[marker_sk(_ordinal(record))].append(record)
    meta = [r for r in fresh if r.sk == "META"]
    item_names = sorted(runs_by_item)
    groups = [item_names[i:i + MAX_MARKER_ITEMS] for i in range(0, len(item_names), MAX_MARKER_ITEMS)] or [[]]
    now = clock.now_iso()
    for index, group in enumerate(groups):
        records = [r for name in group for r in runs_by_item[name]] + (meta if index == 0 else [])
        if not records:
            continue
        markers: dict[str, dict[str, int]] = defaultdict(dict)
        for record in records:
            if record.sk.startswith("RUN#"):
                node = record.sk.removeprefix("RUN#")
                item = markers[marker_sk(_ordinal(record))]
                item[node] = max(item.get(node, -1), _ver(record))
        stats_ver = max((_ver(r) for r in records if r.sk == "META"), default=None)
        delta = _delta(records)
        if delta.stage is not None and (task.stage_at or "") > (delta.stage_at or ""):
            delta.stage = None  # a run entered a step later than this one: the task shows that
        outbox.move_final_events(task.task_id, records)  # before the counters: a replay moves them again
        counters.apply_task_delta(task.task_id, task.owner, task.type, delta,
                                  markers=markers, stats_ver=stats_ver, now=now)
        if delta.nonzero_created():
            _note_usage_counted()
    return bool(fresh)


def _note_usage_counted() -> None:
    try:
        counters.note_usage_counted(str(Month.of(clock.now_epoch()).next()))
    except ClientError:  # the month scopes count regardless; the next count says it again
        logger.warning("could not note that tasks are counted per month", exc_info=True)


def _delta(records: list[Record]) -> TaskDelta:
    delta = TaskDelta()
    for record in records:
        if record.sk.startswith("RUN#"):
            _run_delta(record, delta)
        elif record.sk == "META":
            _task_delta(record, delta)
    if sum(delta.counts.get(status, 0) for status in RUN_TERMINAL) > 0:
        # each run that ends lets one more start (domain/window.py): its claim timeout counts from now
        delta.window_moved_at = clock.now_iso()
    return delta


def _run_delta(record: Record, delta: TaskDelta) -> None:
    old_status, new_status = record.old_value("status"), record.new_value("status")
    old_weight = rules.run_progress_weight(old_status, int(record.old_value("progress") or 0)) if old_status else 0
    new_weight = rules.run_progress_weight(new_status, int(record.new_value("progress") or 0)) if new_status else 0
    before = {name: record.old_value(name) for name in ("status", "generation")} if record.old else None
    after = {name: record.new_value(name) for name in ("last_action", "generation")} if record.new else None
    if not counted_by_retry(before, after):  # the retry write already moved these counts
        if old_status != new_status:
            if old_status:
                delta.counts[old_status] -= 1
            if new_status:
                delta.counts[new_status] += 1
        delta.progress += new_weight - old_weight
    if old_status != new_status:  # every run status: the monitoring snapshot reads runs in flight
        if old_status:
            delta.stats[f"nr_{old_status}"] -= 1
        if new_status:
            delta.stats[f"nr_{new_status}"] += 1
    step = record.new_value("step")
    if step and step != record.old_value("step"):
        at = str(record.new_value("updated_at") or "")
        if delta.stage_at is None or at >= delta.stage_at:
            delta.stage, delta.stage_at = step, at


def _task_delta(record: Record, delta: TaskDelta) -> None:
    old_status, new_status = record.old_value("status"), record.new_value("status")
    if old_status == new_status:
        return
    task_type = record.new_value("type") or record.old_value("type")
    if old_status is None:
        delta.stats["total"] += 1
        delta.stats[f"ty_{task_type}"] += 1
        delta.created[counters.month_of(str(record.new_value("created_at")))] += 1
    if new_status is None:
        delta.stats["total"] -= 1
        delta.stats[f"ty_{task_type}"] -= 1
        delta.created[counters.month_of(str(record.old_value("created_at")))] -= 1
    if old_status:
        delta.stats[f"st_{old_status}"] -= 1
        _duration(record.old, delta.stats, -1)
        _hourly(record.old, delta, -1)
    if new_status:
        delta.stats[f"st_{new_status}"] += 1
        _duration(record.new, delta.stats, +1)
        _hourly(record.new, delta, +1)


def _duration(image: Image | None, stats: dict[str, Decimal], sign: int) -> None:
    if attribute(image, "status") not in TASK_FINISHED:
        return
    started, completed = attribute(image, "started_at"), attribute(image, "completed_at")
    if not started or not completed:
        return
    seconds = Decimal(str(round(clock.parse_rfc3339(completed) - clock.parse_rfc3339(started), 3)))
    stats["dur_sum"] += sign * seconds
    stats["dur_n"] += sign


def _hourly(image: Image | None, delta: TaskDelta, sign: int) -> None:
    """A terminal task counts in the hour of its `completed_at` (a retry takes it out again)."""
    status, completed = attribute(image, "status"), attribute(image, "completed_at")
    if status not in TASK_TERMINAL or not completed:
        return
    bucket = delta.hourly[counters.hour_of(completed)]
    bucket[f"st_{status}"] += sign
    _duration(image, bucket, sign)

