"""Node items and allocation items: conditional node transitions, allocation records.

A node transition is one conditional update guarded by the table's sources (plus any extra
condition), alone or inside a transaction with the items that change together with it
(the allocation it opens or closes, the reclaim task it creates).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import DoesNotExist, PynamoDBException
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from chalicelib.domain.node_states import NodeChange, NodeStatus, node_transition
from chalicelib.errors import Busy, Conflict, InvalidTransition, NotFound
from chalicelib.store.models import AllocationItem, NodeItem, node_pk
from chalicelib.store.writes import field_actions, is_condition_failure, is_transaction_conflict, status_in

META = "META"
OPEN = "ALLOCEND#OPEN"

#: adds the other writes of a transaction (called with the open TransactWrite)
TxPart = Callable[[TransactWrite], None]


def create(node_id: str, labels: dict[str, str], slots: int, token_hash: str, now: str) -> NodeItem:
    """Register a node (idle). Raises Conflict when it exists."""
    node = NodeItem(
        node_pk(node_id), META, node_id=node_id, labels=labels, slots=slots, status=NodeStatus.IDLE,
        token_hash=token_hash, created_at=now, list_pk="NODE", list_sk=node_id,
    )
    try:
        node.save(condition=NodeItem.pk.does_not_exist())
    except PynamoDBException as error:
        if is_condition_failure(error):
            raise Conflict(f"node {node_id} is already registered") from None
        raise
    return node


def get(node_id: str, consistent: bool = True) -> NodeItem:
    """Raises NotFound."""
    try:
        return NodeItem.get(node_pk(node_id), META, consistent_read=consistent)
    except DoesNotExist:
        raise NotFound(f"node {node_id} not found") from None


def find(node_id: str, consistent: bool = True, attributes: Sequence[str] | None = None) -> NodeItem | None:
    try:
        return NodeItem.get(node_pk(node_id), META, consistent_read=consistent,
                            attributes_to_get=list(attributes) if attributes else None)
    except DoesNotExist:
        return None


@dataclass(frozen=True)
class NodeWrite:
    """One planned node transition: the update and its guard."""

    node_id: str
    action: str
    change: NodeChange
    condition: Condition
    #: non-status fields written together with the transition
    extra: tuple[Action, ...] = ()

    @property
    def item(self) -> NodeItem:
        return NodeItem(node_pk(self.node_id), META)

    def actions(self) -> list[Action]:
        return [*field_actions(NodeItem, self.change.fields), *self.extra]

    def add_to(self, tx: TransactWrite) -> None:
        tx.update(self.item, actions=self.actions(), condition=self.condition)


def plan(node_id: str, action: str, now: str, *, source: str | None = None, condition: Condition | None = None,
         extra: Sequence[Action] = (), **values: Any) -> NodeWrite:
    change = node_transition(action, now, source=source, **values)
    guard = NodeItem.pk.exists() & status_in(NodeItem, change.transition.sources)
    if condition is not None:
        guard &= condition
    return NodeWrite(node_id, action, change, guard, tuple(extra))


def apply(write: NodeWrite, parts: Sequence[TxPart] = ()) -> NodeItem:
    """Apply a planned transition (in one transaction with `parts`); returns the node after it.

    Raises NotFound, InvalidTransition (wrong source status), Conflict (its extra condition
    did not hold, or another writer was changing the node).
    """
    try:
        if not parts:
            write.item.update(actions=write.actions(), condition=write.condition)
        else:
            with TransactWrite(connection=NodeItem._get_connection().connection) as tx:
                write.add_to(tx)
                for part in parts:
                    part(tx)
    except PynamoDBException as error:
        raise explain(write, error) from None
    return get(write.node_id)


def explain(write: NodeWrite, error: PynamoDBException) -> Exception:
    """The domain error a failed node write stands for (the PynamoDB error itself when it is
    neither a failed condition nor a transaction conflict)."""
    if is_transaction_conflict(error):
        return Busy(f"node {write.node_id} is being changed by another request; retry")
    if not is_condition_failure(error):
        return error
    current = find(write.node_id)
    if current is None:
        return NotFound(f"node {write.node_id} not found")
    sources = write.change.transition.sources
    if current.status not in sources:
        return InvalidTransition("node", current.status, write.action, sources)
    return Conflict(f"node {write.node_id} changed while {write.action} was applied (it is {current.status})")


def update_quietly(node_id: str, actions: list[Action], condition: Condition) -> bool:
    """A guarded non-status update; False when the condition did not hold."""
    try:
        NodeItem(node_pk(node_id), META).update(actions=actions, condition=NodeItem.pk.exists() & condition)
    except PynamoDBException as error:
        if is_condition_failure(error):
            return False
        raise
    return True


def page(limit: int, start_key: dict[str, Any] | None) -> tuple[list[NodeItem], dict[str, Any] | None]:
    """Nodes in id order (the list-index's NODE partition)."""
    result: Any = NodeItem.list_index.query("NODE", limit=limit, last_evaluated_key=start_key)
    items: list[NodeItem] = list(result)
    return items, result.last_evaluated_key


def iter_nodes(attributes: Sequence[str] | None = None) -> Iterator[NodeItem]:
    """Every node (the list-index's NODE partition)."""
    found: Any = NodeItem.list_index.query("NODE", attributes_to_get=list(attributes) if attributes else None)
    yield from found


# --- allocations ------------------------------------------------------------------------
def month_of(timestamp: str) -> str:
    return timestamp[:7]


def allocation_sk(started_at: str, allocation_id: str) -> str:
    return f"ALLOC#{started_at}#{allocation_id}"


def new_allocation(node_id: str, allocation_id: str, user: str, now: str) -> AllocationItem:
    return AllocationItem(
        node_pk(node_id), allocation_sk(now, allocation_id), allocation_id=allocation_id, node_id=node_id,
        user=user, started_at=now, list_pk=OPEN, list_sk=f"{now}#{allocation_id}",
    )


def open_allocation_part(item: AllocationItem) -> TxPart:
    return lambda tx: tx.save(item, condition=AllocationItem.pk.does_not_exist())


def close_allocation_part(node_id: str, sk: str, now: str, ended_by: str) -> TxPart:
    """End an open allocation (a closed one is never reopened or ended twice)."""
    item = AllocationItem(node_pk(node_id), sk)
    actions: list[Action] = [
        AllocationItem.ended_at.set(now), AllocationItem.ended_by.set(ended_by),
        AllocationItem.list_pk.set(f"ALLOCEND#{month_of(now)}"),
    ]
    guard = AllocationItem.pk.exists() & AllocationItem.ended_at.does_not_exist()
    return lambda tx: tx.update(item, actions=actions, condition=guard)


def get_allocation(node_id: str, sk: str) -> AllocationItem | None:
    try:
        return AllocationItem.get(node_pk(node_id), sk, consistent_read=True)
    except DoesNotExist:
        return None


def node_allocations(node_id: str, limit: int, start_key: dict[str, Any] | None) -> tuple[
        list[AllocationItem], dict[str, Any] | None]:
    """A node's allocations, newest first."""
    result: Any = AllocationItem.query(node_pk(node_id), AllocationItem.sk.startswith("ALLOC#"),
                                       scan_index_forward=False, limit=limit, last_evaluated_key=start_key)
    items: list[AllocationItem] = list(result)
    return items, result.last_evaluated_key


def allocations_overlapping(start: str, end: str, months_until_now: Sequence[str]) -> Iterator[AllocationItem]:
    """Allocations that overlap [start, end): the open ones and those that ended in a month from
    `start`'s on (`months_until_now`), started before `end`. Older history is never read."""
    for partition in (OPEN, *(f"ALLOCEND#{month}" for month in months_until_now)):
        found: Any = AllocationItem.list_index.query(partition, AllocationItem.list_sk < end)
        for item in found:
            if item.ended_at is None or item.ended_at > start:
                yield item
