"""Node items and allocation items: conditional node transitions, allocation records.

A node transition is one conditional update guarded by the table's sources (plus any extra
condition), alone or inside a transaction with the items that change together with it
(the allocation it opens or closes, the reclaim task it creates).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from pynamodb.attributes import MapAttribute
from pynamodb.exceptions import DoesNotExist, PynamoDBException
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from chalicelib.domain.node_states import NodeInputs, NodeRef, NodeStatus, node_change
from chalicelib.domain.records import Node, from_values
from chalicelib.domain.writes import Change
from chalicelib.errors import Busy, ConditionFailed, Conflict, InvalidTransition, NotFound
from chalicelib.store import index_reads, label_index
from chalicelib.store.backend import TxPart
from chalicelib.store.dynamo import run_concurrently, write_of
from chalicelib.store.models import AllocationItem, NodeItem, node_pk
from chalicelib.store.retrying import retried
from chalicelib.store.writes import is_condition_failure, is_transaction_conflict

META = "META"
OPEN = "ALLOCEND#OPEN"



def node_record(item: NodeItem) -> Node:
    values = dict(item.attribute_values)
    labels = values.get("labels")
    values["labels"] = dict(labels.attribute_values) if isinstance(labels, MapAttribute) else dict(labels or {})
    record: Node = from_values(Node, values)
    return record


@retried
def create(node_id: str, labels: dict[str, str], slots: int, token_hash: str, now: str) -> Node:
    """Register a node (idle), with its label index items. Raises Conflict when it exists, Busy."""
    node = NodeItem(
        node_pk(node_id), META, node_id=node_id, labels=labels, slots=slots, status=NodeStatus.IDLE,
        token_hash=token_hash, created_at=now, list_pk="NODE", list_sk=node_id, selector_rev=1,
    )
    index = label_index.moves(node_id, None, label_index.Seen(labels, selectable=True))
    try:
        with TransactWrite(connection=NodeItem._get_connection().connection) as tx:
            tx.save(node, condition=NodeItem.pk.does_not_exist())
            for write in index:
                write(tx)
    except PynamoDBException as error:
        if is_transaction_conflict(error):
            raise Busy(f"node {node_id} is being changed by another request; retry") from None
        if is_condition_failure(error):
            raise Conflict(f"node {node_id} is already registered") from None
        raise
    return node_record(node)


def get(node_id: str, consistent: bool = True) -> Node:
    """Raises NotFound."""
    node = find(node_id, consistent)
    if node is None:
        raise NotFound(f"node {node_id} not found")
    return node


def find(node_id: str, consistent: bool = True) -> Node | None:
    try:
        return node_record(NodeItem.get(node_pk(node_id), META, consistent_read=consistent))
    except DoesNotExist:
        return None


def get_many(node_ids: Sequence[str]) -> list[Node]:
    """The nodes of `node_ids` that exist, in that order (BatchGetItem: 100 keys a request)."""
    found: dict[str, Node] = {}
    for item in NodeItem.batch_get([(node_pk(n), META) for n in node_ids], consistent_read=True):
        found[item.node_id] = node_record(item)
    return [found[n] for n in node_ids if n in found]


@dataclass(frozen=True)
class NodeKey:
    """A node known by its id only: for changes whose guard reads nothing else (a reclaim
    outcome is guarded by the reclaim task it names)."""

    node_id: str
    status: str = ""
    allocation_id: str | None = None
    offline_from: str | None = None
    last_seen_at: str | None = None
    reclaim_outcome: str | None = None


def change(node: NodeRef, action: str, now: str, **inputs: Any) -> Change:
    """The write of `action` on `node` as read (see domain/node_states.py)."""
    return node_change(action, node, NodeInputs(now=now, **inputs))


def part(write: Change) -> TxPart:
    """`write` as a part of another transaction (a reclaim is created with its task)."""
    item, actions, guard = write_of(write)
    return lambda tx: tx.update(item, actions=actions, condition=guard)


def parts_of(node: Node, write: Change) -> list[TxPart]:
    """`write` on `node` (as read) as parts of another transaction, with the label index writes
    it brings (a reclaim takes the node out of every selection)."""
    indexed = label_index.indexed(node, write) if label_index.touches(write) else None
    return [part(indexed.write), *indexed.parts] if indexed else [part(write)]


@retried
def transition(node: NodeRef, action: str, now: str, *, parts: Sequence[TxPart] = (), **inputs: Any) -> Node:
    """Apply one node transition (in one transaction with `parts`); returns the node after it.
    A transition that changes what selectors see (labels, maintenance) writes the label index in
    the same transaction (store/label_index.py), tried again when another such write came first.

    Raises NotFound, InvalidTransition (wrong source status), Conflict (its guard did not
    hold), Busy (another writer was changing the node).
    """
    write = change(node, action, now, **inputs)
    for attempt in range(label_index.ATTEMPTS):
        basis = _index_basis(node, write, fresh=attempt > 0)
        indexed = label_index.indexed(basis, write) if basis else None
        item, actions, guard = write_of(indexed.write if indexed else write)
        extras = [*parts, *(indexed.parts if indexed else ())]
        try:
            if not extras:
                item.update(actions=actions, condition=guard)
            else:
                with TransactWrite(connection=NodeItem._get_connection().connection) as tx:
                    tx.update(item, actions=actions, condition=guard)
                    for extra in extras:
                        extra(tx)
        except PynamoDBException as error:
            if indexed and _selector_rev_moved(indexed.basis):
                continue  # another label or maintenance write came first: redo the index from it
            raise explain(write, error) from None
        return get(node.node_id)
    raise Busy(f"node {node.node_id} is being changed by another request; retry")


def _index_basis(node: NodeRef, write: Change, fresh: bool) -> Node | None:
    """The node the index writes of `write` start from: as the caller read it, or read now (a
    NodeKey knows no labels; a retry needs the newer state). None when no index write can follow."""
    if not label_index.touches(write):
        return None
    return node if isinstance(node, Node) and not fresh else find(node.node_id)


def _selector_rev_moved(basis: Node) -> bool:
    current = find(basis.node_id)
    return current is not None and current.selector_rev != basis.selector_rev


def update_quietly(node: NodeRef, action: str, now: str, **inputs: Any) -> bool:
    """A node change whose lost race is no news (a contact, a reopened reclaim): False when
    its guard did not hold."""
    write = change(node, action, now, **inputs)
    if label_index.touches(write):  # it moves label index items: the full path
        try:
            transition(node, action, now, **inputs)
        except (Conflict, InvalidTransition, NotFound):
            return False
        return True
    item, actions, guard = write_of(write)
    try:
        item.update(actions=actions, condition=guard)
    except PynamoDBException as error:
        if is_condition_failure(error):
            return False
        raise
    return True


def index_if_unindexed(node: Node) -> bool:
    """Write the label index items of a node registered before the index existed (it has no
    `selector_rev`), guarded so that a node any index write has touched since is left alone.
    Returns whether it wrote them."""
    if node.selector_rev is not None:
        return False
    item = NodeItem(node_pk(node.node_id), META)
    guard = NodeItem.pk.exists() & NodeItem.selector_rev.does_not_exist()
    try:
        with TransactWrite(connection=NodeItem._get_connection().connection) as tx:
            tx.update(item, actions=[NodeItem.selector_rev.set(1)], condition=guard)
            for extra in label_index.moves(node.node_id, None, label_index.seen_of(node)):
                extra(tx)
    except PynamoDBException as error:
        if is_condition_failure(error) or is_transaction_conflict(error):
            return False  # deregistered, or indexed by a write of its own meanwhile
        raise
    return True


@retried
def remove(node: Node, now: str) -> None:
    """Deregister `node` as read: delete its item, and with it its token hash (the next request
    with the token finds no node), ending its open allocation in the same transaction.

    The one node write outside the transition table: the item goes away instead of changing
    status, so the id may be registered again. Raises NotFound, Conflict (the node changed
    since it was read), Busy.
    """
    item = NodeItem(node_pk(node.node_id), META)
    allocation, rev = NodeItem.allocation_id, NodeItem.selector_rev
    same = allocation == node.allocation_id if node.allocation_id else allocation.does_not_exist()
    # its label index items go with it: the labels they were written from are the ones read
    same &= rev == node.selector_rev if node.selector_rev is not None else rev.does_not_exist()
    guard = NodeItem.pk.exists() & same
    extras = label_index.moves(node.node_id, label_index.seen_of(node), None)
    if node.allocation_sk:
        extras.append(close_allocation_part(node.node_id, node.allocation_sk, now, "deregister"))
    try:
        with TransactWrite(connection=NodeItem._get_connection().connection) as tx:
            tx.delete(item, condition=guard)
            for extra in extras:
                extra(tx)
    except PynamoDBException as error:
        if is_transaction_conflict(error):
            raise Busy(f"node {node.node_id} is being changed by another request; retry") from None
        if not is_condition_failure(error):
            raise
        if find(node.node_id) is None:
            raise NotFound(f"node {node.node_id} not found") from None
        raise Conflict(f"node {node.node_id} changed while it was deregistered; retry") from None


def explain(write: Change, error: Exception) -> Exception:
    """The domain error a failed node write stands for (the error itself when it is neither a
    failed condition nor a transaction conflict)."""
    node_id = write.key[0]
    conflict = error.conflict if isinstance(error, ConditionFailed) else is_transaction_conflict(error)
    if conflict:
        return Busy(f"node {node_id} is being changed by another request; retry")
    if not isinstance(error, ConditionFailed) and not is_condition_failure(error):
        return error
    current = find(node_id)
    if current is None:
        return NotFound(f"node {node_id} not found")
    if write.sources is not None and current.status not in write.sources:
        return InvalidTransition("node", current.status, write.action, write.sources)
    return Conflict(f"node {node_id} changed while {write.action} was applied (it is {current.status})")


def page(limit: int, start_key: dict[str, Any] | None) -> tuple[list[Node], dict[str, Any] | None]:
    """Nodes in id order (the list-index's NODE partition)."""
    result: Any = NodeItem.list_index.query("NODE", limit=limit, last_evaluated_key=start_key)
    items = [node_record(item) for item in index_reads.hydrate(NodeItem, result)]
    return items, result.last_evaluated_key


def iter_nodes(attributes: Sequence[str] | None = None) -> Iterator[Node]:
    """Every node (the list-index's NODE partition); `attributes` reads only those (and what
    a record needs)."""
    required = ("pk", "sk", "node_id", "token_hash", "created_at")
    names = list(dict.fromkeys((*required, *attributes))) if attributes else None
    found: Any = NodeItem.list_index.query("NODE")
    for item in index_reads.iter_hydrated(NodeItem, found, names):
        yield node_record(item)


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
    `start`'s on (`months_until_now`), started before `end`. Older history is never read.

    The month partitions are read concurrently: a month years back is one query per month
    since, and the report is an API answer (API Gateway's 29 s)."""
    def overlapping(partition: str) -> list[AllocationItem]:
        found: Any = AllocationItem.list_index.query(partition, AllocationItem.list_sk < end)
        return [item for item in index_reads.iter_hydrated(AllocationItem, found)
                if item.ended_at is None or item.ended_at > start]

    partitions = (OPEN, *(f"ALLOCEND#{month}" for month in months_until_now))
    for items in run_concurrently([partial(overlapping, partition) for partition in partitions]):
        yield from items
