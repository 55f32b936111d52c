"""Task items: creation with its idempotency record, conditional transitions, reads, listing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pynamodb.exceptions import DoesNotExist, PynamoDBException
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from chalicelib.domain.statuses import TASK_TERMINAL
from chalicelib.domain.transitions import TASK_TRANSITIONS, task_transition
from chalicelib.errors import ConditionFailed, Conflict, IdempotencyRecordExists, InvalidTransition, TaskNotFound
from chalicelib.store.models import EventItem, IdempotencyItem, TargetChunk, TaskItem, task_pk
from chalicelib.store.writes import field_actions, is_condition_failure, is_transaction_conflict, status_in

META = "META"
TARGET_CHUNK_SIZE = 1000
ACTIVE = "ACTIVE"


def _connection() -> Any:
    return TaskItem._get_connection().connection


def chunk_targets(task_id: str, nodes: Sequence[str], first_chunk: int = 0) -> list[TargetChunk]:
    return [
        TargetChunk(task_pk(task_id), f"TGT#{first_chunk + i:05d}", nodes=list(nodes[start:start + TARGET_CHUNK_SIZE]))
        for i, start in enumerate(range(0, len(nodes), TARGET_CHUNK_SIZE))
    ]


def create(task: TaskItem, targets: Sequence[str], idempotency: IdempotencyItem | None, event: EventItem,
           alongside: Sequence[Callable[[TransactWrite], None]] = ()) -> None:
    """Write a task, its targets, its first event and its idempotency record in one transaction
    (plus the writes `alongside` adds, such as the node a reclaim task puts in maintenance).

    Raises IdempotencyRecordExists when the idempotency record already exists.
    """
    task.active_pk, task.active_sk = ACTIVE, task.task_id
    try:
        with TransactWrite(connection=_connection()) as tx:
            if idempotency is not None:
                tx.save(idempotency, condition=IdempotencyItem.pk.does_not_exist())
            tx.save(task, condition=TaskItem.pk.does_not_exist())
            for chunk in chunk_targets(task.task_id, targets):
                tx.save(chunk)
            tx.save(event)
            for part in alongside:
                part(tx)
    except PynamoDBException as error:
        # racing requests with one key: the loser sees the record (condition) or the winner's
        # transaction in flight (conflict); either way the answer is the winner's task
        if idempotency is not None and (is_condition_failure(error) or is_transaction_conflict(error)):
            raise IdempotencyRecordExists from error
        raise


def get(task_id: str, consistent: bool = True) -> TaskItem:
    try:
        return TaskItem.get(task_pk(task_id), META, consistent_read=consistent)
    except DoesNotExist:
        raise TaskNotFound(task_id) from None


def find(task_id: str) -> TaskItem | None:
    try:
        return get(task_id)
    except TaskNotFound:
        return None


def load_targets(task_id: str) -> list[str]:
    nodes: list[str] = []
    for chunk in TargetChunk.query(task_pk(task_id), TargetChunk.sk.startswith("TGT#"), consistent_read=True):
        nodes.extend(str(node) for node in chunk.nodes)
    return nodes


def transition(
    task_id: str,
    action: str,
    now: str,
    *,
    error_message: str | None = None,
    condition: Condition | None = None,
    extra: Sequence[Action] = (),
    event: EventItem | None = None,
) -> TaskItem:
    """Apply one transition of the table as one conditional write (plus its event, atomically).

    Raises InvalidTransition when the task is not in an allowed source status, Conflict when
    another writer changed it in between, TaskNotFound.
    """
    item, actions, guard = transition_write(task_id, action, now, error_message=error_message, condition=condition,
                                            extra=extra)
    change = task_transition(action, now, error_message)
    try:
        if event is None:
            item.update(actions=actions, condition=guard)
            return item
        with TransactWrite(connection=_connection()) as tx:
            tx.update(item, actions=actions, condition=guard)
            tx.save(event)
    except PynamoDBException as error:
        if is_transaction_conflict(error):
            raise Conflict(f"task {task_id} is being changed by another request; retry") from None
        if not is_condition_failure(error):
            raise
        current = get(task_id)
        if current.status not in change.transition.sources:
            raise InvalidTransition("task", current.status, action, change.transition.sources) from None
        raise Conflict(f"task {task_id} changed while {action} was applied; retry") from None
    return get(task_id)


def transition_write(
    task_id: str, action: str, now: str, *, error_message: str | None = None, condition: Condition | None = None,
    extra: Sequence[Action] = (),
) -> tuple[TaskItem, list[Action], Condition]:
    """The item, actions and guard of one task transition, for `transition` or a transaction."""
    change = task_transition(action, now, error_message)
    fields = dict(change.fields)
    if action == "start":
        fields["started_at"] = now
    terminal = change.target in TASK_TERMINAL
    fields["active_pk"] = None if terminal else ACTIVE
    fields["active_sk"] = None if terminal else task_id
    actions = [*field_actions(TaskItem, fields), *extra]
    guard = TaskItem.pk.exists() & status_in(TaskItem, change.transition.sources)
    if condition is not None:
        guard &= condition
    return TaskItem(task_pk(task_id), META), actions, guard


def allowed_from(action: str) -> frozenset[str]:
    return TASK_TRANSITIONS[action].sources


def update(task_id: str, actions: list[Action], condition: Condition | None = None) -> TaskItem:
    """A non-status update (counters, flags). Raises the PynamoDB error when the condition fails."""
    item = TaskItem(task_pk(task_id), META)
    guard = TaskItem.pk.exists() if condition is None else TaskItem.pk.exists() & condition
    item.update(actions=actions, condition=guard)
    return item


def query_page(
    *, owner: str | None, filters: Condition | None, range_condition: Condition | None,
    limit: int, start_key: dict[str, Any] | None,
) -> tuple[list[TaskItem], dict[str, Any] | None]:
    """One page of tasks, newest first, filled up to `limit` across DynamoDB pages."""
    if owner is not None:
        index: Any = TaskItem.owner_index
        hash_key = f"OWNER#{owner}"
    else:
        index = TaskItem.list_index
        hash_key = "TASK"
    items: list[TaskItem] = []
    last_key = start_key
    while True:
        result = index.query(
            hash_key, range_condition, filter_condition=filters, scan_index_forward=False,
            limit=limit * 2 if filters is not None else limit, last_evaluated_key=last_key,
            page_size=max(limit, 25),
        )
        for task in result:
            items.append(task)
            if len(items) == limit:
                return items, _key_of(task, owner is not None)
        last_key = result.last_evaluated_key
        if not last_key:
            return items, None


def _key_of(task: TaskItem, by_owner: bool) -> dict[str, Any]:
    key: dict[str, Any] = {"pk": {"S": task.pk}, "sk": {"S": task.sk}}
    if by_owner:
        key.update(owner_pk={"S": task.owner_pk}, owner_sk={"S": task.owner_sk})
    else:
        key.update(list_pk={"S": task.list_pk}, list_sk={"S": task.list_sk})
    return key


def update_with_chunks(task_id: str, actions: list[Action], condition: Condition, chunks: list[TargetChunk]) -> None:
    """A guarded task update together with new target chunks. Raises ConditionFailed."""
    try:
        with TransactWrite(connection=_connection()) as tx:
            tx.update(TaskItem(task_pk(task_id), META), actions=actions, condition=TaskItem.pk.exists() & condition)
            for chunk in chunks:
                tx.save(chunk)
    except PynamoDBException as error:
        if is_condition_failure(error):
            raise ConditionFailed from error
        raise


def iter_active() -> Iterator[str]:
    """Ids of every non-terminal task (sparse index; for the sweeper)."""
    for item in TaskItem.active_index.query(ACTIVE):
        yield item.pk.removeprefix("TASK#")


def parameters_of(task: TaskItem) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(task.parameters or "{}")
    return value
