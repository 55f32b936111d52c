"""Stream consumer: push node-run changes to the subscribers of their task,
`{"type": "runs", "task_id", "runs": [<run as GET /v1/tasks/{id}/nodes shows it>, ...]}`.

Per batch and task: the latest state of each run whose representation changed (a heartbeat that
only moves the lease is not news), built from the stream's new image (no read), packed into as
few messages as fit under the WebSocket limit: a batch of a 10,000-node task is a handful of
sends per subscriber, not one per run. Only subscribers of the task hear of its runs (`*` feeds
task lists, which show no runs). Records of one run arrive in order and a replayed batch pushes
the same or later states, so a client keeps, per node, the run with the higher
(`attempt`, `updated_at`) and compares a REST read the same way. Best effort, like push.py: a
failure is logged and never fails the batch or delays the counters (stream.py runs it before
aggregation and it never raises).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from chalicelib.observability import logger
from chalicelib.services.realtime import sender
from chalicelib.services.realtime.push import MESSAGE_BYTES_MAX
from chalicelib.services.views import run_view
from chalicelib.store import connections, run_partitions
from chalicelib.store.dynamo import run_from_image
from chalicelib.store.stream_records import Image, Record

#: fields whose change alone is not worth a push (a heartbeat without progress moves only these)
_QUIET_FIELDS = ("updated_at", "lease_expires_at")
#: a run too large for one message (a huge error message) is sent with its texts cut to this
_TEXT_CHARS_CUT = 2000


@sender.stream_consumer("run push")
def push(records: list[Record]) -> None:
    """The stream consumer entry: never raises (sender.stream_consumer)."""
    outbox: dict[str, list[dict[str, Any]]] = defaultdict(list)
    changed = changed_runs(records)
    for task_id, views in changed.items():
        recipients = [s.connection_id for s in connections.subscribers(task_id)]
        if not recipients:
            continue
        messages = run_messages(task_id, views)
        for connection_id in recipients:
            outbox[connection_id].extend(messages)
    if outbox:
        gone = sender.send_all(outbox)
        logger.debug("run push", extra={"connections": len(outbox), "gone": gone, "tasks": len(changed)})


def changed_runs(records: Iterable[Record]) -> dict[str, list[dict[str, Any]]]:
    """Task id → the latest representation of each of its runs that changed in the batch, in
    stream order of their last record."""
    first_old: dict[tuple[str, str], Image | None] = {}
    last_new: dict[tuple[str, str], Image] = {}
    for record in sorted(records, key=lambda r: r.seq):
        if not record.sk.startswith("RUN#") or not run_partitions.is_task_pk(record.pk) or record.new is None:
            continue
        key = (record.pk, record.sk)
        first_old.setdefault(key, record.old)
        last_new.pop(key, None)  # re-inserted: dicts keep insertion order, so this is the last record's place
        last_new[key] = record.new
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for key, image in last_new.items():
        view = run_view(run_from_image(image))
        old = first_old[key]
        if old is None or _visible(run_view(run_from_image(old))) != _visible(view):
            found[view["task_id"]].append(view)
    return found


def _visible(view: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in view.items() if name not in _QUIET_FIELDS}


def run_messages(task_id: str, views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`views` packed into `runs` messages, each at most MESSAGE_BYTES_MAX bytes encoded."""
    empty = len(sender.encode(_message(task_id, [])))
    messages: list[dict[str, Any]] = []
    batch: list[dict[str, Any]] = []
    size = empty
    for view in views:
        cost = len(sender.encode(view)) + 1  # and its comma
        if empty + cost > MESSAGE_BYTES_MAX:
            view = _cut(view)
            cost = len(sender.encode(view)) + 1
        if batch and size + cost > MESSAGE_BYTES_MAX:
            messages.append(_message(task_id, batch))
            batch, size = [], empty
        batch.append(view)
        size += cost
    if batch:
        messages.append(_message(task_id, batch))
    return messages


def _message(task_id: str, views: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "runs", "task_id": task_id, "runs": views}


def _cut(view: dict[str, Any]) -> dict[str, Any]:
    """A run whose texts alone pass the limit: its texts cut, and said so (`texts_truncated`)."""
    texts = {name: view[name][:_TEXT_CHARS_CUT] for name in ("error_message", "step") if isinstance(view[name], str)}
    return {**view, **texts, "texts_truncated": True}
