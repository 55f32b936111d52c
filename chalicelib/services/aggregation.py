"""The stream handler: node counts, progress and statistics from old/new images, the
outbox for jobs, and the one writer that finishes a task.

Per batch and per task: one read, one transaction guarded by the task's applied stream
sequence (a replay is filtered out record by record), then the finishing rules. Records
of one task share a partition key, so they arrive in order on one shard.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import clock
from chalicelib.domain import rules
from chalicelib.domain.statuses import RUN_TERMINAL, TASK_FINISHED, TASK_TERMINAL, TaskStatus
from chalicelib.observability import logger, tracer
from chalicelib.services import finishing, jobs
from chalicelib.services.agent import unpack_final_events
from chalicelib.store import counters, events, tasks
from chalicelib.store.counters import TaskDelta
from chalicelib.store.stream_records import Image, Record
from chalicelib.store.stream_records import attribute as _value

_RESET_ACTIONS = frozenset({"retry_failed", "retry_all"})


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


def _send_jobs(records: list[Record]) -> None:
    """The outbox: task changes that need work on the dispatch queue. Duplicates are harmless."""
    outgoing: list[dict[str, Any]] = []
    for record in records:
        if record.sk != "META" or record.new is None:
            continue
        task_id = record.pk.removeprefix("TASK#")
        old_status, new_status = record.old_value("status"), record.new_value("status")
        attempt = int(record.new_value("attempt") or 1)
        if new_status == TaskStatus.PENDING and (record.event == "INSERT" or old_status != TaskStatus.PENDING):
            outgoing.append({"job": jobs.DISPATCH, "task_id": task_id, "attempt": attempt})
        elif new_status == TaskStatus.CANCELLING and old_status != TaskStatus.CANCELLING:
            outgoing.append({"job": jobs.CANCEL, "task_id": task_id, "attempt": attempt})
        if record.new_value("halted") and not record.old_value("halted"):
            outgoing.append({"job": jobs.HALT, "task_id": task_id, "attempt": attempt})
    if outgoing:
        jobs.enqueue_batch(outgoing)


def _move_final_events(task_id: str, records: list[Record]) -> None:
    """Completion events ride on the run's own write; here they become event items. Written
    before the counters move, under ids derived from the first record: a replay overwrites."""
    collected: list[dict[str, Any]] = []
    for record in records:
        packed = record.new_value("final_events") if record.sk.startswith("RUN#") else None
        if packed and packed != record.old_value("final_events"):
            collected.extend(unpack_final_events(
                packed, record.new_value("node"), int(record.new_value("attempt") or 1),
                record.new_value("completed_at") or clock.now_iso(),
            ))
    if collected:
        events.put_from_stream(task_id, records[0].raw_seq, collected)


def _apply(task_id: str, records: list[Record], attempts: int = 3) -> None:
    for _ in range(attempts):
        task = tasks.find(task_id)
        if task is None:
            return
        fresh = [r for r in records if r.seq > (task.applied_seq or "")]
        # jobs go out before the counters move: a crash in between re-sends them on replay,
        # and a replay of records already applied sends nothing
        _send_jobs(fresh)
        _move_final_events(task_id, fresh)
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
    return delta


def _run_delta(record: Record, delta: TaskDelta) -> None:
    old_status, new_status = record.old_value("status"), record.new_value("status")
    old_weight = rules.run_progress_weight(old_status, int(record.old_value("progress") or 0)) if old_status else 0
    new_weight = rules.run_progress_weight(new_status, int(record.new_value("progress") or 0)) if new_status else 0
    reset_by_retry = (
        record.new_value("last_action") in _RESET_ACTIONS
        and old_status in RUN_TERMINAL
        and record.old_value("generation") != record.new_value("generation")
    )
    if not reset_by_retry:  # the retry write already moved these counts
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
    if _value(image, "status") not in TASK_FINISHED:
        return
    started, completed = _value(image, "started_at"), _value(image, "completed_at")
    if not started or not completed:
        return
    seconds = Decimal(str(round(clock.parse_rfc3339(completed) - clock.parse_rfc3339(started), 3)))
    stats["dur_sum"] += sign * seconds
    stats["dur_n"] += sign


def _hourly(image: Image | None, delta: TaskDelta, sign: int) -> None:
    """A terminal task counts in the hour of its `completed_at` (a retry takes it out again)."""
    status, completed = _value(image, "status"), _value(image, "completed_at")
    if status not in TASK_TERMINAL or not completed:
        return
    bucket = delta.hourly[counters.hour_of(completed)]
    bucket[f"st_{status}"] += sign
    _duration(image, bucket, sign)

