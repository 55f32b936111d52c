"""The stream's counting consumer: node counts, progress and statistics from old/new images.

Per batch and per task: one read, the outbox (services/outbox.py), one transaction guarded by
the task's applied stream sequence (a replay is filtered out record by record), then the
finishing rules. Records of one task share a partition key, so they arrive in order on one
shard. How a retry's reset is counted once is said in domain/retry_counting.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import clock
from chalicelib.domain import rules
from chalicelib.domain.retry_counting import counted_by_retry
from chalicelib.domain.statuses import RUN_TERMINAL, TASK_FINISHED, TASK_TERMINAL
from chalicelib.observability import logger, tracer
from chalicelib.services import finishing, outbox
from chalicelib.store import counters, tasks
from chalicelib.store.counters import TaskDelta
from chalicelib.store.stream_records import Image, Record, attribute


@tracer.capture_method
def process_batch(raw_records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Apply a stream batch. Returns the sequence numbers to report as failed (at most one:
    the first record of the first task that failed; Lambda redelivers from there)."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for raw in raw_records:
        record = Record(raw)
        if record.pk.startswith("TASK#"):
            groups[record.pk.removeprefix("TASK#")].append(record)
    failures: list[Record] = []
    for task_id, records in groups.items():
        try:
            _apply(task_id, records)
        except Exception:
            logger.exception("stream aggregation failed", extra={"task_id": task_id})
            failures.append(records[0])
    if not failures:
        return []
    return [min(failures, key=lambda r: r.seq).raw_seq]


def _apply(task_id: str, records: list[Record], attempts: int = 3) -> None:
    for _ in range(attempts):
        task = tasks.find(task_id)
        if task is None:
            return
        fresh = [r for r in records if r.seq > (task.applied_seq or "")]
        # jobs go out before the counters move: a crash in between re-sends them on replay,
        # and a replay of records already applied sends nothing
        outbox.send_jobs(fresh)
        outbox.move_final_events(task_id, fresh)
        delta = _delta(fresh)
        if fresh and not delta.is_empty():
            try:
                counters.apply_task_delta(task_id, task.owner, task.type, task.applied_seq or "", fresh[-1].seq, delta)
            except ClientError as error:
                if error.response["Error"]["Code"] == "TransactionCanceledException":
                    continue  # another processor moved the sequence: re-read and filter again
                raise
            task = tasks.get(task_id)
        finishing.settle(task)
        return
    raise RuntimeError(f"could not apply stream records to task {task_id}")


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
        delta.stage = step


def _task_delta(record: Record, delta: TaskDelta) -> None:
    old_status, new_status = record.old_value("status"), record.new_value("status")
    if old_status == new_status:
        return
    task_type = record.new_value("type") or record.old_value("type")
    if old_status is None:
        delta.stats["total"] += 1
        delta.stats[f"ty_{task_type}"] += 1
    if new_status is None:
        delta.stats["total"] -= 1
        delta.stats[f"ty_{task_type}"] -= 1
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

