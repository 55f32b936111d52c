"""The label index: `LABEL#<part(key)>#<part(value)>` / `<node id>`, one item per label of a node.

A selector reads the partition of one of its pairs (a Query, paged) and filters on what the
items carry - the node's whole label map and whether it is selectable - so resolving never
reads node items and never scans the table. The items change only together with their node,
in the node write's own transaction (store/inventory.py): registration puts them,
`PATCH /v1/nodes/{id}` moves them, entering or leaving maintenance flips `selectable`,
deregistration deletes them. Such a node write bumps the node's `selector_rev` and is guarded
by the value it read, so two of them never interleave into a stale index.

Both key parts go through `key_parts.part`, which escapes `#`: the label `a#b` = `c` and the
label `a` = `b#c` are two partitions, whatever else the strings hold (`=`, `:`, `|`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from pynamodb.attributes import MapAttribute

from chalicelib.domain.records import Node
from chalicelib.domain.selectors import selectable
from chalicelib.domain.writes import CLEAR, Change, eq
from chalicelib.store.backend import TxPart
from chalicelib.store.key_parts import part
from chalicelib.store.models import LabelItem

#: items per Query page: a page of label items stays far below DynamoDB's 1 MB response (an
#: item is ~100 bytes with a few labels, ~7 KB with MAX_LABELS of the longest), and the number
#: of requests of a resolution is predictable: ceil(members / PAGE_ITEMS)
PAGE_ITEMS: Final = 1000


def label_pk(key: str, value: str) -> str:
    return f"LABEL#{part(key)}#{part(value)}"


@dataclass(frozen=True)
class Seen:
    """What selectors see of a node: its labels and whether it may be picked."""

    labels: Mapping[str, str]
    selectable: bool


@dataclass(frozen=True)
class Member:
    """One item of a pair's partition: a node holding the pair, as selectors see it."""

    node_id: str
    labels: dict[str, str]
    selectable: bool


def seen_of(node: Node) -> Seen:
    return Seen(dict(node.labels), selectable(node.status, node.offline_from))


def moves(node_id: str, before: Seen | None, after: Seen | None) -> list[TxPart]:
    """The index writes that take `node_id` from `before` to `after` (None: not registered):
    a delete for each pair it no longer holds, a put for each pair it holds after (every item
    carries the whole map, so a changed map rewrites them all)."""
    old = dict(before.labels) if before else {}
    new = dict(after.labels) if after else {}
    gone = [(key, value) for key, value in old.items() if new.get(key) != value]
    parts: list[TxPart] = [_delete(node_id, key, value) for key, value in gone]
    if after is not None and after != before:
        parts += [_put(node_id, key, value, after) for key, value in new.items()]
    return parts


def _delete(node_id: str, key: str, value: str) -> TxPart:
    item = LabelItem(label_pk(key, value), node_id)
    return lambda tx: tx.delete(item)


def _put(node_id: str, key: str, value: str, seen: Seen) -> TxPart:
    item = LabelItem(label_pk(key, value), node_id, node_id=node_id, labels=dict(seen.labels),
                     selectable=seen.selectable)
    return lambda tx: tx.save(item)


def members(key: str, value: str) -> Iterator[Member]:
    """Every node holding `key` = `value`, in node id order, read a page at a time (strongly
    consistent: a PATCH just answered is seen)."""
    found: Any = LabelItem.query(label_pk(key, value), consistent_read=True, page_size=PAGE_ITEMS)
    for item in found:
        yield _member(item)


def members_page(key: str, value: str, limit: int, start_key: dict[str, Any] | None) -> tuple[
        list[Member], dict[str, Any] | None]:
    """At most `limit` nodes holding `key` = `value` after `start_key`, and where to go on."""
    found: Any = LabelItem.query(label_pk(key, value), consistent_read=True, limit=limit,
                                 last_evaluated_key=start_key)
    items = [_member(item) for item in found]
    return items, found.last_evaluated_key


def _member(item: LabelItem) -> Member:
    labels = item.labels
    plain = dict(labels.attribute_values) if isinstance(labels, MapAttribute) else dict(labels or {})
    return Member(item.node_id, {str(k): str(v) for k, v in plain.items()}, bool(item.selectable))


# --- the index as part of a node write ---------------------------------------------------------
#: how often a node write is tried again when another index write moved `selector_rev` in between
ATTEMPTS: Final = 3
_SEEN_FIELDS: Final = frozenset({"labels", "status", "offline_from"})


@dataclass(frozen=True)
class IndexedWrite:
    """A node write that changes what selectors see: the write guarded by and bumping the
    `selector_rev` of `basis` (the node as read), and the index writes that go with it."""

    basis: Node
    write: Change
    parts: list[TxPart]


def touches(write: Change) -> bool:
    """Whether `write` may change what selectors see of its node."""
    return write.kind == "node" and not _SEEN_FIELDS.isdisjoint(write.fields)


def indexed(basis: Node, write: Change) -> IndexedWrite | None:
    """`write` (on `basis`, the node as read) with its index writes; None when it leaves what
    selectors see as it is."""
    before, after = seen_of(basis), _seen_after(basis, write)
    if before == after:
        return None
    rev = int(basis.selector_rev or 0)
    guarded = replace(write, fields={**write.fields, "selector_rev": rev + 1},
                      guard=(*write.guard, eq("selector_rev", basis.selector_rev)))
    return IndexedWrite(basis, guarded, moves(basis.node_id, before, after))


def _seen_after(basis: Node, write: Change) -> Seen:
    def after(name: str) -> Any:
        value = write.fields.get(name, getattr(basis, name))
        return None if value is CLEAR else value

    return Seen(dict(after("labels") or {}), selectable(after("status"), after("offline_from")))
