"""Concurrency keys: one item names the holder, the waiting tasks queue in the same partition.

`CKEY#<key>` / `HOLDER` — the task holding the key (task id, attempt it acquired in, its
queue entry); `CKEY#<key>` / `Q#<queued_at>#<task id>` — one entry per waiting or holding
task, so a query on the partition lists them oldest first. A key's partition holds only
its own tasks: the cost of a key grows with the tasks waiting for it, not with the table.
"""

from __future__ import annotations

from dataclasses import dataclass

from pynamodb.exceptions import DeleteError, DoesNotExist, PutError, PynamoDBException

from chalicelib.domain.records import Task
from chalicelib.store.key_parts import part
from chalicelib.store.models import ConcurrencyKeyItem
from chalicelib.store.retrying import retried
from chalicelib.store.writes import is_condition_failure

HOLDER = "HOLDER"
#: the sort-key prefix of the queue entries
QUEUED = "Q#"


@dataclass(frozen=True)
class Holder:
    task_id: str
    attempt: int


@dataclass(frozen=True)
class Entry:
    task_id: str
    sk: str


def key_pk(key: str) -> str:
    """A concurrency key is the user's string: escaped (`key_parts.part`)."""
    return f"CKEY#{part(key)}"


def queue_entry_sk(queued_at: str, task_id: str) -> str:
    """The sort key of a task's queue entry: `Q#<queued_at>#<task id>`, oldest first."""
    return f"{QUEUED}{queued_at}#{task_id}"


def entry_sk(task: Task) -> str:
    return queue_entry_sk(task.queued_at or task.created_at, task.task_id)


def queue_entry(task: Task) -> ConcurrencyKeyItem:
    """The task's place in its key's queue (written with the task, or by its dispatch after a retry)."""
    assert task.concurrency_key
    return ConcurrencyKeyItem(key_pk(task.concurrency_key), entry_sk(task), task_id=task.task_id)


@retried
def ensure_queued(task: Task) -> None:
    queue_entry(task).save()


def holder(key: str) -> Holder | None:
    try:
        item = ConcurrencyKeyItem.get(key_pk(key), HOLDER, consistent_read=True)
    except DoesNotExist:
        return None
    return Holder(item.task_id, int(item.attempt or 1))


def head(key: str) -> Entry | None:
    """The oldest queued task of the key."""
    for item in ConcurrencyKeyItem.query(key_pk(key), ConcurrencyKeyItem.sk.startswith(QUEUED), limit=1,
                                         consistent_read=True):
        return Entry(item.task_id, item.sk)
    return None


@retried
def acquire(task: Task) -> bool:
    """Become the holder unless another task holds the key. Returns whether the task holds it."""
    assert task.concurrency_key
    item = ConcurrencyKeyItem(key_pk(task.concurrency_key), HOLDER, task_id=task.task_id, attempt=int(task.attempt),
                      entry=entry_sk(task))
    try:
        item.save(condition=ConcurrencyKeyItem.pk.does_not_exist() | (ConcurrencyKeyItem.task_id == task.task_id))
    except PutError as error:
        if is_condition_failure(error):
            return False
        raise
    return True


@retried
def release(key: str, task_id: str, attempt: int, entry: str | None) -> bool:
    """Drop the task's queue entry and, when it holds the key from this attempt or an earlier
    one, the holder (a retry that re-acquired the key meanwhile keeps it). Returns whether
    the holder was released. Idempotent."""
    drop(key, entry)
    try:
        ConcurrencyKeyItem(key_pk(key), HOLDER).delete(
            condition=(ConcurrencyKeyItem.task_id == task_id) & (ConcurrencyKeyItem.attempt <= attempt),
        )
    except DeleteError as error:
        if is_condition_failure(error):
            return False
        raise
    return True


@retried
def drop(key: str, sk: str | None) -> None:
    if not sk:
        return
    try:
        ConcurrencyKeyItem(key_pk(key), sk).delete()
    except PynamoDBException as error:
        if not is_condition_failure(error):
            raise
