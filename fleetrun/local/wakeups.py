"""Which pump has work now: the local runtime's pumps sleep until a write concerns them.

On AWS an event source mapping long-polls its queue and a stream's poller is told of new
records within a second; locally, pumps that polled every 0.2 s cost about half of the stand-in's
requests on an idle stack and competed with the app for its lock under load. The stand-in
reports each write it acknowledged (`durable.Store.wrap(app, observer=...)`): a write to a
DynamoDB table wakes the stream pump, a message sent (or made visible again) on a queue wakes
that queue's pump. A pump still polls every `interval` without a wake-up, for what no write
announces (a delayed message, a visibility timeout running out).
"""

from __future__ import annotations

import json
import threading

STREAM = "stream"
#: DynamoDB writes: each one can put a record on the table's stream
_TABLE_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
#: SQS calls that can make a message receivable
_QUEUE_WRITES = frozenset({"SendMessage", "SendMessageBatch", "ChangeMessageVisibility",
                           "ChangeMessageVisibilityBatch"})


class Wakeups:
    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def event(self, name: str) -> threading.Event:
        """The event a pump waits on: `STREAM`, or the queue's URL."""
        with self._lock:
            return self._events.setdefault(name, threading.Event())

    def queue(self, url: str) -> threading.Event:
        return self.event(_queue_name(url))

    def observe(self, action: str | None, body: bytes) -> None:
        """A write the stand-in acknowledged (`action` as `durable.action_of` reads it)."""
        if action in _TABLE_WRITES:
            self._set(STREAM)
        elif action in _QUEUE_WRITES:
            try:
                url = json.loads(body).get("QueueUrl")
            except (ValueError, AttributeError):
                url = None
            if isinstance(url, str):
                self._set(_queue_name(url))
            else:  # a form-encoded (query protocol) request: wake every queue's pump
                self.wake_all()

    def wake_all(self) -> None:
        with self._lock:
            events = list(self._events.values())
        for event in events:
            event.set()

    def _set(self, name: str) -> None:
        event = self._events.get(name)
        if event is not None:
            event.set()


def _queue_name(url: str) -> str:
    """Queue URLs differ in host spelling (`localhost`, `127.0.0.1`, moto's own): the path names it."""
    account, name = url.rstrip("/").rsplit("/", 2)[-2:]
    return f"queue:{account}/{name}"
