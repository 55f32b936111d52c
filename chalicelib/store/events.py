"""Task events: append-only items, one per writer call (an agent's batch is one write).

An event id is `<item ulid>-<index>`; ids sort in the order the events were written. The
events of a node (its agent's posts, the completion events moved from its run) go to its run's
partition, the service's own to the task's (store/run_partitions.py): a listing merges them.
"""

from __future__ import annotations

import heapq
import json
import zlib
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

from pynamodb.exceptions import PynamoDBException
from ulid import ULID

from chalicelib import clock
from chalicelib.domain import retention
from chalicelib.store import backend
from chalicelib.store.dynamo import run_concurrently
from chalicelib.store.models import EventItem, task_pk
from chalicelib.store.writes import is_condition_failure


def new_item(task_id: str, events: Sequence[dict[str, Any]], item_id: str | None = None, *,
             node: str | None = None, pk: str | None = None) -> EventItem:
    """An item holding `events` (each without id); ids are assigned here. It goes to the
    partition `pk`, else to the run partition of `node`, else to the task's own."""
    item_id = item_id or str(ULID())
    pk = pk or (_node_pk(task_id, node) if node is not None else task_pk(task_id))
    stamped = [{"event_id": f"{item_id}-{i:03d}", **event} for i, event in enumerate(events)]
    body = json.dumps(stamped, separators=(",", ":"))
    expires = retention.item_expiry(clock.now_epoch())  # API.md "Retention" (domain/retention.py)
    if len(body) > PACK_ABOVE:
        return EventItem(pk, f"EVT#{item_id}", task_id=task_id, events="", packed=zlib.compress(body.encode(), 6),
                         expires_at=expires)
    return EventItem(pk, f"EVT#{item_id}", task_id=task_id, events=body, expires_at=expires)


def _node_pk(task_id: str, node: str) -> str:
    return backend.current().run_layout(task_id).new_pk(node)


def body_of(events: str | None, packed: bytes | None) -> list[dict[str, Any]]:
    """The events of an item (or a stream image) from its two attributes."""
    value: list[dict[str, Any]] = json.loads(zlib.decompress(packed).decode() if packed else (events or "[]"))
    return value


def append(task_id: str, events: Sequence[dict[str, Any]], node: str | None = None) -> list[dict[str, Any]]:
    """Write `events` as one item: a node's (`node`) in its run's partition, else in the task's."""
    item = new_item(task_id, events, node=node)
    backend.current().put_events(item)
    return decode(item)


#: an item's events are stored compressed above this many bytes of JSON
PACK_ABOVE = 1024
#: events per item written by the stream (ids carry a 3-digit index)
STREAM_ITEM_EVENTS = 500


def put_from_stream(task_id: str, seed: str, events: Sequence[dict[str, Any]], pk: str | None = None) -> None:
    """Write events collected from a stream batch into partition `pk` (the runs' they came from;
    default the task's). Ids are taken at write time (not from the records' own time, which a
    follower's `after=` cursor may already have passed) and remembered per `seed` (the first
    run write of the batch that carries events), so a replayed batch overwrites its own items
    instead of adding copies."""
    pk = pk or task_pk(task_id)
    for chunk, start in enumerate(range(0, len(events), STREAM_ITEM_EVENTS)):
        item_id = _stream_item_id(pk, task_id, f"{seed}-{chunk}")
        new_item(task_id, events[start:start + STREAM_ITEM_EVENTS], item_id, pk=pk).save()


def _stream_item_id(pk: str, task_id: str, seed: str) -> str:
    marker = EventItem(pk, f"EVM#{seed}", task_id=task_id, events=str(ULID()),
                       expires_at=retention.item_expiry(clock.now_epoch()))
    try:
        marker.save(condition=EventItem.pk.does_not_exist())
        return marker.events
    except PynamoDBException as error:
        if not is_condition_failure(error):
            raise
    return str(EventItem.get(pk, f"EVM#{seed}", consistent_read=True).events)


def decode(item: EventItem) -> list[dict[str, Any]]:
    return body_of(item.events, item.packed)


def page(task_id: str, after: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """Events oldest first, strictly after the event id `after`; next cursor when more remain.
    The task's event partitions (its own, and its run partitions when it has several) are merged by item id, each read
    min(limit, 100) items a request: a page makes one request per partition, all at once (a
    64-partition task's page waits for one round trip, not 65), more only when its events come
    from few of them."""
    start = f"EVT#{after.split('-')[0]}" if after else "EVT#"
    pks = backend.current().run_layout(task_id).event_pks()
    size = max(1, min(limit, 100))
    firsts = run_concurrently([partial(_read_page, pk, start, size, None) for pk in pks])
    out: list[dict[str, Any]] = []
    partitions = [_items_from(pk, start, size, first) for pk, first in zip(pks, firsts, strict=True)]
    for _, item in heapq.merge(*partitions, key=lambda found: found[0]):
        for event in decode(item):
            if after is not None and event["event_id"] <= after:
                continue
            if len(out) == limit:
                return out, out[-1]["event_id"]
            out.append(event)
    return out, None


_Page = tuple[list[EventItem], dict[str, Any] | None]


def _read_page(pk: str, start: str, size: int, resume: dict[str, Any] | None) -> _Page:
    """One request's event items of a partition from `start` on, and the key to go on from."""
    result: Any = EventItem.query(pk, EventItem.sk.between(start, "EVT#~"), consistent_read=True, limit=size,
                                  last_evaluated_key=resume)
    return list(result), result.last_evaluated_key


def _items_from(pk: str, start: str, size: int, first: _Page) -> Iterator[tuple[str, EventItem]]:
    """The event items of one partition from `start` on, by id: its `first` page, then lazily a
    page at a time."""
    items, resume = first
    while True:
        yield from ((item.sk, item) for item in items)
        if resume is None:
            return
        items, resume = _read_page(pk, start, size, resume)
