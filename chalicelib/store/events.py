"""Task events: append-only items, one per writer call (an agent's batch is one write).

An event id is `<item ulid>-<index>`; ids sort in the order the events were written.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from typing import Any

from pynamodb.exceptions import PynamoDBException
from ulid import ULID

from chalicelib.store import backend
from chalicelib.store.models import EventItem, task_pk
from chalicelib.store.writes import is_condition_failure


def new_item(task_id: str, events: Sequence[dict[str, Any]], item_id: str | None = None) -> EventItem:
    """An item holding `events` (each without id); ids are assigned here."""
    item_id = item_id or str(ULID())
    stamped = [{"event_id": f"{item_id}-{i:03d}", **event} for i, event in enumerate(events)]
    body = json.dumps(stamped, separators=(",", ":"))
    if len(body) > PACK_ABOVE:
        return EventItem(task_pk(task_id), f"EVT#{item_id}", task_id=task_id, events="",
                         packed=zlib.compress(body.encode(), 6))
    return EventItem(task_pk(task_id), f"EVT#{item_id}", task_id=task_id, events=body)


def body_of(events: str | None, packed: bytes | None) -> list[dict[str, Any]]:
    """The events of an item (or a stream image) from its two attributes."""
    value: list[dict[str, Any]] = json.loads(zlib.decompress(packed).decode() if packed else (events or "[]"))
    return value


def append(task_id: str, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    item = new_item(task_id, events)
    backend.current().put_events(item)
    return decode(item)


#: an item's events are stored compressed above this many bytes of JSON
PACK_ABOVE = 1024
#: events per item written by the stream (ids carry a 3-digit index)
STREAM_ITEM_EVENTS = 500


def put_from_stream(task_id: str, seed: str, events: Sequence[dict[str, Any]]) -> None:
    """Write events collected from a stream batch. Ids are taken at write time (a follower's
    `after=` cursor never skips them) and remembered per `seed` (the first run write of the
    batch that carries events), so a replayed batch overwrites its own items instead of adding copies."""
    for chunk, start in enumerate(range(0, len(events), STREAM_ITEM_EVENTS)):
        item_id = _stream_item_id(task_id, f"{seed}-{chunk}")
        new_item(task_id, events[start:start + STREAM_ITEM_EVENTS], item_id).save()


def _stream_item_id(task_id: str, seed: str) -> str:
    marker = EventItem(task_pk(task_id), f"EVM#{seed}", task_id=task_id, events=str(ULID()))
    try:
        marker.save(condition=EventItem.pk.does_not_exist())
        return marker.events
    except PynamoDBException as error:
        if not is_condition_failure(error):
            raise
    return str(EventItem.get(task_pk(task_id), f"EVM#{seed}", consistent_read=True).events)


def decode(item: EventItem) -> list[dict[str, Any]]:
    return body_of(item.events, item.packed)


def page(task_id: str, after: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """Events oldest first, strictly after the event id `after`; next cursor when more remain."""
    start = f"EVT#{after.split('-')[0]}" if after else "EVT#"
    out: list[dict[str, Any]] = []
    for item in EventItem.query(task_pk(task_id), EventItem.sk.between(start, "EVT#~"), consistent_read=True):
        for event in decode(item):
            if after is not None and event["event_id"] <= after:
                continue
            if len(out) == limit:
                return out, out[-1]["event_id"]
            out.append(event)
    return out, None
