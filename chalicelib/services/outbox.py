"""The outbox of the stream: task changes that need work become jobs on the dispatch queue,
and completion events that rode on a run's write become event items."""

from __future__ import annotations

from typing import Any

from chalicelib import clock
from chalicelib.domain.statuses import TaskStatus
from chalicelib.services import jobs
from chalicelib.services.run_output import unpack_final_events
from chalicelib.store import events, run_partitions


def send_jobs(records: list[Any]) -> None:
    """The outbox: task changes that need work on the dispatch queue. Duplicates are harmless."""
    outgoing: list[dict[str, Any]] = []
    for record in records:
        if record.sk != "META" or record.new is None:
            continue
        task_id = run_partitions.task_id_of(record.pk)
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


def move_final_events(task_id: str, records: list[Any]) -> None:
    """Completion events ride on the run's own write; here they become event items in the run's
    partition (one item per partition: a sharded task's runs are spread, store/run_partitions.py).
    Written before the counters move, under ids derived from the first run write of the partition
    that carries events (`<node>#<ver>`: the same on a replay, whatever the batch around it): a
    replay overwrites."""
    collected: dict[str, list[dict[str, Any]]] = {}
    seeds: dict[str, str] = {}
    for record in records:
        packed = record.new_value("final_events") if record.sk.startswith("RUN#") else None
        if packed and packed != record.old_value("final_events"):
            seeds.setdefault(record.pk, f"{record.sk.removeprefix('RUN#')}#{int(record.new_value('ver') or 0)}")
            collected.setdefault(record.pk, []).extend(unpack_final_events(
                packed, record.new_value("node"), int(record.new_value("attempt") or 1),
                record.new_value("completed_at") or clock.now_iso(),
            ))
    for pk, found in collected.items():
        events.put_from_stream(task_id, seeds[pk], found, pk=pk)
