"""The stream consumer that turns task status changes into queued notification deliveries.

For each task `META` record whose status changed into a notified status (or that is a
retry), the subscribers are found through the per-event index (two queries per event and
owner, cached for the batch), filtered by type and tag, and one message per subscriber goes
to the notify queue. The delivery id is derived from the subscription, the task, the event
and the record's stream sequence number: a replayed batch derives the same ids, and an id
queued before (a mark per delivery, written after the message is queued) is not queued again;
a crash between the two queues it twice, and the worker does not send an id already delivered
(notify/delivery.py). Nothing here talks to a destination.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from chalicelib import config, queues
from chalicelib.domain.records import Task
from chalicelib.domain.statuses import TaskStatus
from chalicelib.domain.task_transitions import TASK_TRANSITIONS
from chalicelib.notify.events import RETRIED, STATUS_EVENTS
from chalicelib.observability import count, logger
from chalicelib.store import subscriptions as store
from chalicelib.store.dynamo import task_from_image
from chalicelib.store.models import SubscriptionEventItem
from chalicelib.store.stream_records import Record

MESSAGE_VERSION = 1
#: a change out of one of these into `pending` with a new attempt is a retry
_RETRY_SOURCES = TASK_TRANSITIONS["retry"].sources


def consume(records: list[Record]) -> None:
    """Stream consumer (services/stream.py CONSUMERS)."""
    found: dict[tuple[str, str], list[SubscriptionEventItem]] = {}
    messages: list[dict[str, Any]] = []
    for record, event, task in _changes(records):
        key = (event, task["owner"])
        if key not in found:
            found[key] = store.subscribers(event, task["owner"])
        for subscriber in found[key]:
            if _matches(subscriber, task):
                messages.append(_message(subscriber.subscription_id, event, task, record))
    if messages:
        _enqueue(messages)


def delivery_id(subscription_id: str, task_id: str, event: str, sequence: str) -> str:
    digest = hashlib.sha256(f"{subscription_id}|{task_id}|{event}|{sequence}".encode()).hexdigest()
    return f"dlv_{digest[:32]}"


def event_of(old: Task | None, new: Task) -> str | None:
    """The notification a change from `old` to `new` raises, if any."""
    if old is None or old.status == new.status:
        return None
    if new.status == TaskStatus.PENDING and old.status in _RETRY_SOURCES and int(new.attempt) > int(old.attempt):
        return RETRIED
    return STATUS_EVENTS.get(new.status)


def snapshot(task: Task) -> dict[str, Any]:
    """What a notification says about a task: never its parameters."""
    return {
        "task_id": task.task_id, "type": task.type, "name": task.name, "owner": task.owner,
        "status": task.status, "stage": task.stage, "attempt": int(task.attempt), "tags": list(task.tags or []),
        "node_counts": dict(task.counts), "target_node_count": int(task.target_count),
        "error_message": task.error_message, "created_at": task.created_at, "started_at": task.started_at,
        "completed_at": task.completed_at, "updated_at": task.updated_at,
    }


def _changes(records: list[Record]) -> Iterator[tuple[Record, str, dict[str, Any]]]:
    for record in records:
        if record.event != "MODIFY" or record.sk != "META" or not record.pk.startswith("TASK#"):
            continue
        if record.old_value("status") == record.new_value("status"):
            continue
        assert record.new is not None
        new = task_from_image(record.new)
        old = task_from_image(record.old) if record.old else None
        event = event_of(old, new)
        if event is not None:
            yield record, event, snapshot(new)


def _matches(subscriber: SubscriptionEventItem, task: dict[str, Any]) -> bool:
    if subscriber.filter_type and subscriber.filter_type != task["type"]:
        return False
    return not subscriber.filter_tag or subscriber.filter_tag in task["tags"]


def _message(subscription_id: str, event: str, task: dict[str, Any], record: Record) -> dict[str, Any]:
    return {
        "v": MESSAGE_VERSION,
        "delivery_id": delivery_id(subscription_id, task["task_id"], event, record.raw_seq),
        "subscription_id": subscription_id,
        "event": event,
        "occurred_at": task["updated_at"],
        "task": task,
    }


def _enqueue(messages: list[dict[str, Any]]) -> None:
    queue_url = config.notify_queue_url()
    if not queue_url:
        logger.warning("notifications not sent: FLEETRUN_NOTIFY_QUEUE_URL is not set", extra={"count": len(messages)})
        return
    pairs = [(m["subscription_id"], m["delivery_id"]) for m in messages]
    seen = store.already_queued(pairs)
    fresh = [m for m in messages if m["delivery_id"] not in seen]
    if not fresh:
        return
    queues.send_batch(queue_url, fresh, "notification message")
    store.mark_queued([(m["subscription_id"], m["delivery_id"]) for m in fresh])  # after: a crash re-sends
    count("NotificationsQueued", len(fresh))
