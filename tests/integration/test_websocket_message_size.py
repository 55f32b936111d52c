"""No WebSocket message passes API Gateway's 128 KiB frame limit (API.md "Real time"): the
subscribe answer and the pushes of a 10,000-node task carry the first targets that fit, say
`"target_nodes_truncated": true` and give the total `target_count`."""

from __future__ import annotations

import time
from typing import Any

from chalicelib.services.realtime.sender import FRAME_BYTES_MAX
from tests.harness import Fleet
from tests.integration.sockets import Sockets

NODES = 10_000


def big_task() -> dict[str, Any]:
    # target nodes need not be registered: their runs wait for the nodes (a create warning)
    return {"type": "shell", "target_nodes": [f"node-{i:05d}" for i in range(NODES)],
            "parameters": {"command": ["true"]}}


def record_sizes(ws: Sockets) -> list[int]:
    sizes: list[int] = []
    record = ws.recorder._record

    def measuring(connection_id: str, data: bytes) -> bool:
        sizes.append(len(data))
        return record(connection_id, data)

    ws.recorder._record = measuring  # type: ignore[method-assign]
    return sizes


def test_a_10000_node_task_is_subscribed_and_pushed_in_messages_under_128_kib(ws: Sockets, fleet: Fleet):
    began = time.monotonic()
    # GIVEN a task of 10,000 target nodes, and a client measuring every message it receives
    answer = fleet.submit(big_task())
    assert answer.status == 202, answer
    task_id = str(answer.body["task_id"])
    sizes = record_sizes(ws)
    connection_id = ws.open(subscribe=task_id)

    # WHEN it subscribes THEN the answer's task says its targets were cut to what fits
    subscribed = ws.recorder.take(connection_id) or []
    task = fleet.task(task_id)
    first = ws.send(connection_id, {"action": "subscribe", "task_id": task_id})
    (current,) = [m["task"] for m in first if m["type"] == "task"]
    assert current["target_nodes_truncated"] is True
    assert current["target_count"] == NODES
    assert 0 < len(current["target_nodes"]) < NODES
    assert current["target_nodes"] == task["target_nodes"][: len(current["target_nodes"])]

    # WHEN the task's creation is streamed THEN its push is cut the same way
    fleet.notifier.drain()
    pushed = [m["task"] for m in ws.received(connection_id) if m["type"] == "task"]
    assert pushed, subscribed
    assert all(p["target_nodes_truncated"] is True and p["target_count"] == NODES for p in pushed)

    # THEN no message passed 128 KiB
    assert sizes
    assert max(sizes) <= FRAME_BYTES_MAX
    assert time.monotonic() - began < 60
