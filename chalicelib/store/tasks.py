"""The task repository: reads, creation, and transitions of the task table.

Every write of a task item goes through `transition` (or `commit` for the transactions that
change a task together with its run): the action's `Change` from domain/task_transitions.py
applied as one conditional write by the backend in use (store/backend.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pynamodb.expressions.condition import Condition

from chalicelib.domain.records import IdempotencyRecord, Task
from chalicelib.domain.task_transitions import TASK_TRANSITIONS, TaskInputs, task_change
from chalicelib.domain.writes import Change
from chalicelib.errors import Busy, ConditionFailed, Conflict, InvalidTransition, TaskNotFound
from chalicelib.store import backend, index_reads, run_partitions
from chalicelib.store.backend import EventBatch
from chalicelib.store.dynamo import TARGET_CHUNK_SIZE, task_record
from chalicelib.store.models import TaskItem, owner_tasks_pk

__all__ = [
    "TARGET_CHUNK_SIZE",
    "allowed_from",
    "change",
    "commit",
    "create",
    "find",
    "get",
    "idempotency_record",
    "iter_active",
    "load_targets",
    "load_targets_of",
    "parameters_of",
    "query_page",
    "transition",
    "update_quietly",
]


def get(task_id: str, consistent: bool = True) -> Task:
    """Raises TaskNotFound."""
    task = backend.current().get_task(task_id, consistent)
    if task is None:
        raise TaskNotFound(task_id)
    return task


def find(task_id: str, consistent: bool = True) -> Task | None:
    return backend.current().get_task(task_id, consistent)


def idempotency_record(owner: str, key: str) -> IdempotencyRecord | None:
    """What an owner's `Idempotency-Key` created, if anything."""
    return backend.current().get_idempotency(owner, key)


def load_targets(task_id: str) -> list[str]:
    return backend.current().load_targets(task_id)


def first_targets(task: Task) -> list[str]:
    """The targets of the task's first chunk only (at most 1,000): a bounded read for messages
    that cannot carry them all."""
    chunks = {task.task_id: min(1, int(task.target_chunks))}
    return backend.current().load_targets_of(chunks).get(task.task_id, [])


def load_targets_of(found: Sequence[Task]) -> dict[str, list[str]]:
    """The targets of each of `found` (a page of tasks), read together."""
    return backend.current().load_targets_of({task.task_id: int(task.target_chunks) for task in found})


def parameters_of(task: Task) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(task.parameters or "{}")
    return value


def iter_active() -> Iterator[str]:
    """Ids of every non-terminal task (sparse index; for the sweeper)."""
    return backend.current().active_task_ids()


def create(task: Task, targets: Sequence[str], idempotency: IdempotencyRecord | None, event: EventBatch,
           alongside: Sequence[Any] = ()) -> None:
    """Write a task, its targets, its first event and its idempotency record in one
    transaction (plus the writes `alongside` adds, such as the node a reclaim puts in
    maintenance). The task's target count, chunks and first free ordinal follow from `targets`. Raises
    IdempotencyRecordExists."""
    task.target_count = task.ordinal_next = len(targets)
    task.target_chunks = (len(targets) + TARGET_CHUNK_SIZE - 1) // TARGET_CHUNK_SIZE
    task.run_shards = run_partitions.shards_for(len(targets))
    backend.current().create_task(task, targets, idempotency, event, alongside)


def change(task: Task, action: str, now: str, *, error_message: str | None = None, **inputs: Any) -> Change:
    """The write of `action` on `task` (for `transition`, `commit` or a test)."""
    return task_change(action, task, TaskInputs(now=now, error_message=error_message, **inputs))


def transition(task: Task, action: str, now: str, *, error_message: str | None = None,
               event: EventBatch | None = None, **inputs: Any) -> Task:
    """Apply one transition of the table as one conditional write (with its event, atomically).

    Raises InvalidTransition when the task is not in an allowed source status, Conflict when
    its guard found it changed since it was read, Busy on a transaction conflict, TaskNotFound.
    """
    write = change(task, action, now, error_message=error_message, **inputs)
    try:
        if event is None:
            if backend.current().update(write) is not None:
                return get(task.task_id)
            raise ConditionFailed()
        backend.current().commit([write], [event])
    except ConditionFailed as failed:
        raise explain(task.task_id, write, failed) from None
    return get(task.task_id)


def update_quietly(task: Task, action: str, now: str, **inputs: Any) -> bool:
    """A transition whose lost race is no news (halt, window shift): False when its guard
    did not hold."""
    try:
        return backend.current().update(change(task, action, now, **inputs)) is not None
    except ConditionFailed:
        return False


def commit(changes: Sequence[Change], events: Sequence[EventBatch] = ()) -> None:
    """Several changes (a task and its run) and events in one transaction. Raises ConditionFailed."""
    backend.current().commit(changes, events)


def add_targets(task: Task, nodes: Sequence[str], ordinals: int, now: str, action: str = "grow_targets",
                **dispatch: Any) -> None:
    """Grow the task's targets by `nodes` and reserve `ordinals`, guarded against a racing
    dispatch (`reopen_targets`: a finished task runs again); `dispatch` records a chunked
    dispatch of the new nodes (services/dispatch_chunks.py). Raises Conflict."""
    chunks = (len(nodes) + TARGET_CHUNK_SIZE - 1) // TARGET_CHUNK_SIZE
    layout = run_partitions.Layout.of(task.task_id, task)
    history = run_partitions.grown(layout.history, int(task.target_count) + len(nodes))
    write = change(task, action, now, new_targets=len(nodes), ordinals=ordinals, chunks=chunks,
                   run_shards=history if history != layout.history else (), **dispatch)
    try:
        backend.current().add_targets(write, task.task_id, nodes, int(task.target_chunks))
    except ConditionFailed:
        raise Conflict(f"task {task.task_id} changed during dispatch; retry") from None
    run_partitions.remember(run_partitions.Layout(task.task_id, history))  # the runs made next use it


def explain(task_id: str, write: Change, failed: ConditionFailed) -> Exception:
    """The domain error a rejected task write stands for."""
    if failed.conflict:
        return Busy(f"task {task_id} is being changed by another request; retry")
    current = find(task_id)
    if current is None:
        return TaskNotFound(task_id)
    if write.sources is not None and current.status not in write.sources:
        return InvalidTransition("task", current.status, write.action, write.sources)
    return Conflict(f"task {task_id} changed while {write.action} was applied; retry")


def allowed_from(action: str) -> frozenset[str]:
    return TASK_TRANSITIONS[action].sources


# --- listing (DynamoDB only: the list and owner indexes) ------------------------------------
@dataclass(frozen=True)
class TaskFilter:
    """What a task listing asks for. Task ids are ULIDs: `ids_from`/`ids_to` bound creation time."""

    owner: str | None = None
    status: str | None = None
    type: str | None = None
    tag: str | None = None
    ids_from: str | None = None
    ids_to: str | None = None


#: the most index entries one filtered listing request reads (API.md: a page may be short or
#: even empty and still carry a `next_cursor`); an unfiltered page reads `limit` (≤ 200)
LIST_READ_BUDGET = 200


def query_page(wanted: TaskFilter, limit: int, start_key: dict[str, Any] | None) -> tuple[
        list[Task], dict[str, Any] | None]:
    """One page of tasks, newest first: at most `limit` tasks, read from at most
    `max(limit, LIST_READ_BUDGET)` index entries (`limit` without a filter). The key returned
    continues after the last entry read, matched or not; None at the end of the listing."""
    by_owner = wanted.owner is not None
    index: Any = TaskItem.owner_index if by_owner else TaskItem.list_index
    hash_key = owner_tasks_pk(wanted.owner) if wanted.owner is not None else "TASK"
    filters = _filters(wanted)
    range_condition = _id_range(TaskItem.owner_sk if by_owner else TaskItem.list_sk, wanted)
    budget = limit if filters is None else max(limit, LIST_READ_BUDGET)
    matched: list[Any] = []
    last_key = start_key
    while budget > 0:
        # one DynamoDB request: `Limit` bounds the entries it reads, before the filter
        size = budget if filters is not None else limit - len(matched)
        result = index.query(hash_key, range_condition, filter_condition=filters, scan_index_forward=False,
                             last_evaluated_key=last_key, page_size=size)
        page = next(result.page_iter)
        budget -= int(page.get("ScannedCount", len(page.get("Items", []))))
        entries = [TaskItem.from_raw_data(raw) for raw in page.get("Items", [])]
        wanted_more = limit - len(matched)
        if len(entries) >= wanted_more:
            matched += entries[:wanted_more]
            at_end = wanted_more == len(entries) and not page.get("LastEvaluatedKey")
            return _records(matched), None if at_end else _key_of(matched[-1], by_owner)
        matched += entries
        last_key = page.get("LastEvaluatedKey")
        if not last_key:
            return _records(matched), None
    return _records(matched), last_key


def _records(entries: list[Any]) -> list[Task]:
    return [task_record(item) for item in index_reads.hydrate(TaskItem, entries)]


def _filters(wanted: TaskFilter) -> Condition | None:
    found: list[Condition] = []
    if wanted.status is not None:
        found.append(TaskItem.status == wanted.status)
    if wanted.type is not None:
        found.append(TaskItem.type == wanted.type)
    if wanted.tag is not None:
        found.append(TaskItem.tags.contains(wanted.tag))
    if not found:
        return None
    condition = found[0]
    for more in found[1:]:
        condition &= more
    return condition


def _id_range(attribute: Any, wanted: TaskFilter) -> Condition | None:
    low, high = wanted.ids_from, wanted.ids_to
    if low and high:
        return attribute.between(low, high)  # type: ignore[no-any-return]
    if low:
        return attribute >= low  # type: ignore[no-any-return]
    if high:
        return attribute <= high  # type: ignore[no-any-return]
    return None


def _key_of(item: TaskItem, by_owner: bool) -> dict[str, Any]:
    key: dict[str, Any] = {"pk": {"S": item.pk}, "sk": {"S": item.sk}}
    if by_owner:
        key.update(owner_pk={"S": item.owner_pk}, owner_sk={"S": item.owner_sk})
    else:
        key.update(list_pk={"S": item.list_pk}, list_sk={"S": item.list_sk})
    return key


def iter_all(ids_from: str | None = None, ids_to: str | None = None,
             attributes: Sequence[str] | None = None) -> Iterator[Task]:
    """Every task (oldest first), or those whose id lies in [ids_from, ids_to]; `attributes`
    reads only those (the record's other fields keep their defaults)."""
    wanted = TaskFilter(ids_from=ids_from, ids_to=ids_to)
    required = ("pk", "sk", "task_id", "type", "owner", "status", "created_at", "updated_at", "max_concurrency")
    names = list(dict.fromkeys((*required, *attributes))) if attributes else None
    found: Any = TaskItem.list_index.query("TASK", _id_range(TaskItem.list_sk, wanted))
    for item in index_reads.iter_hydrated(TaskItem, found, names):
        yield task_record(item)
