"""Versions and heads of defined task types (see `models/task_types.py` for the layout).

A new version is one transaction: the head moves from version n to n + 1 only if it still
says n (optimistic: two admins updating at once cannot both make version n + 1), and the
version item is put only if it does not exist. Version items are never changed afterwards.
"""

from __future__ import annotations

from typing import Any

from pynamodb.exceptions import DoesNotExist, PynamoDBException
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from chalicelib.errors import Busy, Conflict
from chalicelib.store import index_reads
from chalicelib.store.models.task_types import (
    HEAD_SK,
    TYPES_LIST_PK,
    TaskTypeItem,
    task_type_pk,
    version_sk,
)
from chalicelib.store.retrying import retried
from chalicelib.store.writes import is_condition_failure, is_transaction_conflict


class VersionTaken(Conflict):
    """Another writer created or changed the type since it was read: read the head again."""

    def __init__(self, name: str) -> None:
        super().__init__(f"task type {name} was changed by another request; retry")


def head(name: str) -> TaskTypeItem | None:
    """The head of a type, read consistently (a retire or a new version counts at once)."""
    try:
        return TaskTypeItem.get(task_type_pk(name), HEAD_SK, consistent_read=True)
    except DoesNotExist:
        return None


def version(name: str, number: int) -> TaskTypeItem | None:
    """One version of a type (immutable once written, so any read is up to date)."""
    try:
        return TaskTypeItem.get(task_type_pk(name), version_sk(number))
    except DoesNotExist:
        return None


@retried
def add_version(name: str, number: int, definition: str, now: str, actor: str) -> None:
    """Write version `number` and move the head to it: the head must not exist for version 1
    and must still be at `number - 1` otherwise (retired or not: a new version revives it).

    Raises VersionTaken when another writer got there first, Busy on a transaction conflict.
    """
    fields: dict[str, Any] = {"name": name, "version": number, "definition": definition,
                              "created_at": now, "created_by": actor}
    item = TaskTypeItem(task_type_pk(name), version_sk(number), **fields)
    current = TaskTypeItem(task_type_pk(name), HEAD_SK, retired=False, list_pk=TYPES_LIST_PK, list_sk=name, **fields)
    guard = TaskTypeItem.pk.does_not_exist() if number == 1 else TaskTypeItem.version == number - 1
    try:
        with TransactWrite(connection=TaskTypeItem._get_connection().connection) as transaction:
            transaction.save(item, condition=TaskTypeItem.pk.does_not_exist())
            transaction.save(current, condition=guard)
    except PynamoDBException as error:
        if is_transaction_conflict(error):
            raise Busy(f"task type {name} is being changed by another request; retry") from None
        if is_condition_failure(error):
            raise VersionTaken(name) from None
        raise


@retried
def retire(name: str, number: int, now: str) -> bool:
    """Mark the head retired and take it off the listing, if it is still live at `number`.
    False when it changed since it was read (retired meanwhile, or a new version)."""
    guard = (TaskTypeItem.version == number) & (TaskTypeItem.retired == False)  # noqa: E712 (a condition)
    actions: list[Action] = [
        TaskTypeItem.retired.set(True), TaskTypeItem.list_pk.remove(), TaskTypeItem.list_sk.remove(),
    ]
    try:
        TaskTypeItem(task_type_pk(name), HEAD_SK).update(actions=actions, condition=guard)
    except PynamoDBException as error:
        if is_condition_failure(error):
            return False
        raise
    return True


def page(limit: int, start_key: dict[str, Any] | None) -> tuple[list[TaskTypeItem], Any]:
    """Heads of the live (not retired) types, by name."""
    result: Any = TaskTypeItem.list_index.query(TYPES_LIST_PK, limit=limit, last_evaluated_key=start_key)
    items = index_reads.hydrate(TaskTypeItem, result)
    return items, result.last_evaluated_key
