"""Stream consumer: push new live output chunks to the connections that subscribed with
`output_of` (API.md "Reading output"): `{"type": "output", "task_id", "node", "attempt",
"offset", "data"}`.

A subscription `{"task_id": t, "output_of": n}` is stored under its own topic (`output_topic`),
so a chunk costs one subscriber query for its (task, node) and plain task subscribers never see
output. A chunk's stream record carries its text (or its S3 key: one GET). Records of one run's
chunks share a partition key, so they arrive in order; clients still place a push by its
`offset` and fill a gap from the REST API. Best effort: a failure is logged, never raised.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from chalicelib.errors import ValidationFailed
from chalicelib.services.realtime import sender
from chalicelib.services.realtime.push import MESSAGE_BYTES_MAX
from chalicelib.store import connections, output_chunks
from chalicelib.store.output_chunks import Chunk
from chalicelib.store.stream_records import Record

_NODE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: a message's text is cut into pieces of at most this many characters before measuring
_PIECE_CHARS = 16 * 1024


def output_topic(task_id: str, node: str) -> str:
    """The subscription topic of one run's output; `|` never occurs in a task id, so no task
    subscription can spell it."""
    return f"{task_id}|output|{node}"


def parse_output_of(message: dict[str, Any]) -> str | None:
    """The `output_of` node of a subscribe/unsubscribe message, if any. Raises ValidationFailed."""
    node = message.get("output_of")
    if node is None:
        return None
    if not isinstance(node, str) or not _NODE.match(node):
        raise ValidationFailed("'output_of' must be a node id",
                               [{"path": "$.output_of", "message": "not a node id (^[A-Za-z0-9._:-]{1,128}$)"}])
    return node


@sender.stream_consumer("output push")
def push(records: list[Record]) -> None:
    """The stream consumer entry: never raises (sender.stream_consumer)."""
    by_topic: dict[str, list[Chunk]] = defaultdict(list)
    for chunk in _new_chunks(records):
        by_topic[output_topic(chunk.task_id, chunk.node)].append(chunk)
    outbox: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for topic, chunks in by_topic.items():
        recipients = [s.connection_id for s in connections.subscribers(topic)]
        if not recipients:
            continue
        messages = [m for chunk in chunks for m in output_messages(chunk, output_chunks.text(chunk))]
        for connection_id in recipients:
            outbox[connection_id].extend(messages)
    if outbox:
        sender.send_all(outbox)


def _new_chunks(records: Iterable[Record]) -> list[Chunk]:
    """Chunks inserted in the batch, in stream order (a replayed batch pushes again: clients
    place pushes by offset)."""
    return [
        output_chunks.from_item(dict(record.new))
        for record in sorted(records, key=lambda r: r.seq)
        if record.event == "INSERT" and output_chunks.is_output_key(record.pk) and record.new is not None
    ]


def output_messages(chunk: Chunk, text: str) -> list[dict[str, Any]]:
    """The push messages of one chunk, each under the WebSocket message limit. When the stored
    text is the agent's (same length), a split keeps exact offsets."""
    exact = len(text.encode()) == chunk.length
    messages: list[dict[str, Any]] = []
    offset = chunk.offset
    for piece in _pieces(text, chunk):
        messages.append({"type": "output", "task_id": chunk.task_id, "node": chunk.node,
                         "attempt": chunk.attempt, "offset": offset, "data": piece})
        if exact:
            offset += len(piece.encode())
    return messages


def _pieces(text: str, chunk: Chunk) -> list[str]:
    whole = {"type": "output", "task_id": chunk.task_id, "node": chunk.node, "attempt": chunk.attempt,
             "offset": chunk.offset, "data": text}
    if len(sender.encode(whole)) <= MESSAGE_BYTES_MAX:
        return [text]
    # JSON escapes a control character as 6 bytes: a 16 Ki-character piece is at most 96 KiB
    return [text[start:start + _PIECE_CHARS] for start in range(0, len(text), _PIECE_CHARS)]
