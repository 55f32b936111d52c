"""Stream consumer: push task changes and new events to WebSocket subscribers.

Per batch: one task message per task whose public representation changed (the latest state in
the batch, built from the stream's new image: no read per push), then the task's new events,
events first so a client that stops at a terminal status has already seen the event recording
it. Subscribers are found with one query per task (`WSSUB#<task id>`) plus one query for the
whole batch (`WSSUB#*`); `*` subscribers receive only tasks they may see (admins every task,
others their own). Best effort: a failure is logged and never fails the batch; a subscriber
that missed a message reads the REST API.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from chalicelib.domain.records import Task
from chalicelib.observability import logger
from chalicelib.services.realtime import sender
from chalicelib.services.views import task_view
from chalicelib.store import connections, events, run_partitions, tasks
from chalicelib.store.dynamo import task_from_image
from chalicelib.store.stream_records import Image, Record

#: tasks with more targets than this are pushed with the first that fit (`target_nodes_truncated`)
PUSH_TARGETS_MAX = 1000
#: a task message stays this far under API Gateway's WebSocket frame limit (`sender.FRAME_BYTES_MAX`)
MESSAGE_BYTES_MAX = 120 * 1024
#: fields whose change alone is not worth a push
_QUIET_FIELDS = ("updated_at", "revision")


@sender.stream_consumer("websocket push")
def push(records: list[Record]) -> None:
    """The `CONSUMERS` entry: never raises (sender.stream_consumer)."""
    changed, owners = _changed_tasks(records)
    new_events = _new_events(records)
    topics = sorted(set(changed) | set(new_events))
    if not topics:
        return
    wildcard = connections.subscribers(connections.ALL_TASKS)
    outbox: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for task_id in topics:
        recipients = {s.connection_id for s in connections.subscribers(task_id)}
        for subscriber in wildcard:
            if subscriber.connection_id not in recipients and (
                subscriber.admin or subscriber.user_id == _owner(task_id, owners)
            ):
                recipients.add(subscriber.connection_id)
        if not recipients:
            continue
        # event items of one task come on several shards: within a batch, in the log's order
        ordered = sorted(new_events.get(task_id, []), key=lambda event: str(event.get("event_id", "")))
        messages = [{"type": "event", "task_id": task_id, "event": event} for event in ordered]
        if task_id in changed:
            messages.append(task_message(changed[task_id]))
        for connection_id in recipients:
            outbox[connection_id].extend(messages)
    gone = sender.send_all(outbox)
    logger.debug("websocket push", extra={"connections": len(outbox), "gone": gone, "tasks": len(topics)})


def _changed_tasks(records: Iterable[Record]) -> tuple[dict[str, Task], dict[str, str]]:
    """Task id → its latest item, for tasks whose representation changed in the batch; and the
    owner of every task the batch shows."""
    first_old: dict[str, Image | None] = {}
    last_new: dict[str, Image] = {}
    for record in sorted(records, key=lambda r: r.seq):
        if record.sk != "META" or not record.pk.startswith("TASK#") or record.new is None:
            continue
        task_id = record.pk.removeprefix("TASK#")
        first_old.setdefault(task_id, record.old)
        last_new[task_id] = record.new
    changed: dict[str, Task] = {}
    owners: dict[str, str] = {}
    for task_id, image in last_new.items():
        item = task_from_image(image)
        owners[task_id] = item.owner
        old = first_old[task_id]
        if old is None or _visible(task_from_image(old)) != _visible(item):
            changed[task_id] = item
    return changed, owners


def _visible(item: Task) -> dict[str, Any]:
    view = task_view(item, [])
    for name in _QUIET_FIELDS:
        view.pop(name, None)
    return view


def _new_events(records: Iterable[Record]) -> dict[str, list[dict[str, Any]]]:
    """Events of newly inserted event items (a replay rewrites its items: MODIFY, not pushed again)."""
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r.seq):
        if record.event != "INSERT" or not record.sk.startswith("EVT#") or record.new is None:
            continue
        packed = record.new_value("packed")
        found[run_partitions.task_id_of(record.pk)].extend(
            events.body_of(record.new_value("events"), packed.value if packed is not None else None))
    return found


def _owner(task_id: str, owners: dict[str, str]) -> str | None:
    """The task's owner: from the batch when it shows the task, else one read (cached per batch)."""
    if task_id not in owners:
        task = tasks.find(task_id)
        owners[task_id] = task.owner if task is not None else ""
    return owners[task_id] or None


def task_message(item: Task) -> dict[str, Any]:
    """`{"type": "task", "task": ...}` with the representation of `GET /v1/tasks/{id}`; a task whose
    targets do not fit one message (API.md "Real time") carries the first that fit, with
    `"target_nodes_truncated": true` and `target_count`, all of them in `GET /v1/tasks/{id}`."""
    count = int(item.target_count)
    if count <= PUSH_TARGETS_MAX:
        targets = list(_targets(item.task_id, count))
        message = {"type": "task", "task": task_view(item, targets)}
        if len(sender.encode(message)) <= MESSAGE_BYTES_MAX:
            return message
    else:
        targets = tasks.first_targets(item)  # one chunk: bounded work whatever the task's size
    return _truncated(item, targets)


def _truncated(item: Task, first: list[str]) -> dict[str, Any]:
    view = {**task_view(item, []), "target_nodes_truncated": True, "target_count": int(item.target_count)}
    room = MESSAGE_BYTES_MAX - len(sender.encode({"type": "task", "task": view}))
    kept: list[str] = []
    for node in first:
        room -= len(json.dumps(node, ensure_ascii=False).encode()) + 1  # the node and its comma
        if room < 0:
            break
        kept.append(node)
    view["target_nodes"] = kept
    return {"type": "task", "task": view}


@lru_cache(maxsize=1024)
def _targets(task_id: str, target_count: int) -> tuple[str, ...]:
    """Targets only grow (dispatch), and `target_count` with them: a warm Lambda reads them once."""
    return tuple(tasks.load_targets(task_id))
