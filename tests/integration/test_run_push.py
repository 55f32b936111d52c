"""Pushes of node-run changes (`{"type": "runs"}`, README "Real time") through the app's real
stream and handlers on moto, to a recording `@connections` endpoint: what a task subscriber
hears equals what GET /v1/tasks/{id}/nodes shows, a batch is coalesced into few messages under
the WebSocket limit, and a failing push changes nothing the stream counts. The local gateway
refuses a post over 128 KiB as API Gateway does."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib import config
from chalicelib.services import stream
from chalicelib.services.realtime import run_push, sender
from chalicelib.services.realtime.push import MESSAGE_BYTES_MAX
from fleetrun.local.ws_gateway import WebSocketGateway, WsHandlers
from tests.harness import Fleet, assert_statistics_equal_recount

SHELL = {"type": "shell", "target_nodes": ["n1"], "parameters": {"command": ["true"]}}


def _runs(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == "runs"]


def _latest(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Node → the last pushed state of its run, as a client applying the pushes holds it."""
    held: dict[str, dict[str, Any]] = {}
    for message in _runs(messages):
        for run in message["runs"]:
            held[run["node"]] = run
    return held


def _recording(fleet: Fleet) -> list[dict[str, Any]]:
    """Every raw stream record the fleet's stream delivers from now on."""
    recorded: list[dict[str, Any]] = []
    handler = fleet.stream.handler

    def recording(event: dict[str, Any], context: Any) -> Any:
        recorded.extend(event["Records"])
        return handler(event, context)

    fleet.stream.handler = recording
    return recorded


class TestRunChangesReachTaskSubscribers:
    def test_the_pushed_runs_end_as_the_rest_api_shows_them(self, ws, fleet):
        # GIVEN a subscriber of a 4-node task, one node failing
        nodes = ["n1", "n2", "n3", "n4"]
        fleet.register(*nodes)
        task_id = fleet.submit({**SHELL, "target_nodes": nodes, "max_errors": 4}).body["task_id"]
        connection_id = ws.open(subscribe=task_id)
        # WHEN it runs to its end
        fleet.settle()
        fleet.run_agents(nodes, fail=frozenset({"n3"}))
        fleet.settle()
        # THEN the last pushed state of every run is the REST representation, updated_at included
        messages = ws.received(connection_id)
        assert all(m["task_id"] == task_id for m in _runs(messages))
        assert _latest(messages) == fleet.runs(task_id)
        assert {run["status"] for run in _latest(messages).values()} == {"succeeded", "failed"}
        # AND the last task message is the terminal one (run records come on other stream shards,
        # so a run message may follow it: within one batch, runs come first)
        assert [m["task"]["status"] for m in messages if m["type"] == "task"][-1] == fleet.task(task_id)["status"]

    def test_a_run_push_goes_to_subscribers_of_the_task_only(self, ws, fleet):
        # GIVEN an admin subscribed to every task, and a subscriber of the task
        fleet.register("n1")
        star = ws.open("root", ("admin",), subscribe="*")
        task_id = fleet.submit(SHELL).body["task_id"]
        mine = ws.open(subscribe=task_id)
        # WHEN its run is created and runs
        fleet.settle()
        fleet.run_agents(["n1"])
        # THEN task lists hear of the task, only the task's page of its runs
        assert _runs(ws.received(star)) == []
        assert _latest(ws.received(mine))["n1"]["status"] == "succeeded"

    def test_a_heartbeat_that_only_extends_the_lease_is_not_pushed(self, ws, fleet):
        # GIVEN a claimed run and its task's subscriber, progress 40 reported
        fleet.register("n1")
        task_id = fleet.submit(SHELL).body["task_id"]
        fleet.settle()
        [run] = fleet.claim("n1")
        fleet.agent("n1", f"/v1/runs/{run['run_id']}/heartbeat", {"attempt": 1, "progress": 40})
        fleet.settle()
        connection_id = ws.open(subscribe=task_id)
        ws.received(connection_id)
        # WHEN the agent beats again with the same progress, then with 70
        fleet.agent("n1", f"/v1/runs/{run['run_id']}/heartbeat", {"attempt": 1, "progress": 40})
        fleet.settle()
        quiet = _runs(ws.received(connection_id))
        fleet.agent("n1", f"/v1/runs/{run['run_id']}/heartbeat", {"attempt": 1, "progress": 70})
        fleet.settle()
        # THEN only the progress change is news
        assert quiet == []
        assert _latest(ws.received(connection_id))["n1"]["progress"] == 70


class TestCoalescing:
    def test_a_batch_of_a_whole_task_life_is_one_message_of_final_states(self, ws, fleet):
        # GIVEN every stream record of an 8-node task's whole life
        nodes = [f"n{i}" for i in range(8)]
        fleet.register(*nodes)
        recorded = _recording(fleet)
        task_id = fleet.submit({**SHELL, "target_nodes": nodes}).body["task_id"]
        fleet.settle()
        fleet.run_agents(nodes)
        # WHEN a subscriber's stream delivers it as one batch (and again: a replay)
        connection_id = ws.open(subscribe=task_id)
        ws.received(connection_id)
        assert stream.notify(recorded) == []
        assert stream.notify(recorded) == []
        # THEN each delivery is one runs message with each run once, in its final state
        first, replayed = _runs(ws.received(connection_id))
        assert first == replayed
        assert sorted(run["node"] for run in first["runs"]) == nodes
        assert {run["node"]: run for run in first["runs"]} == fleet.runs(task_id)

    def test_ten_thousand_runs_are_packed_into_few_messages_under_the_limit(self):
        # GIVEN the changes of 10,000 runs in one batch, one with a 300 KB error message
        views = [_view(i) for i in range(10_000)]
        views[5000]["error_message"] = "x" * 300_000
        # WHEN they are packed
        messages = run_push.run_messages("T1", views)
        # THEN every message fits the WebSocket limit, nearly full, every run once in order
        sizes = [len(sender.encode(m)) for m in messages]
        assert max(sizes) <= MESSAGE_BYTES_MAX
        assert len(messages) <= sum(sizes) // (MESSAGE_BYTES_MAX - 1024) + 1
        packed = [run for m in messages for run in m["runs"]]
        assert [run["node"] for run in packed] == [view["node"] for view in views]
        # AND only the run too large for any message has its texts cut, and says so
        assert [run["node"] for run in packed if run.get("texts_truncated")] == ["node-05000"]
        print(f"10,000 runs: {len(messages)} messages of at most {max(sizes)} bytes")


class TestIsolation:
    def test_a_failing_run_push_fails_nothing_and_the_counters_stay_exact(self, ws, fleet, monkeypatch):
        # GIVEN a subscriber, and a run push whose subscriber lookup fails
        fleet.register("n1", "n2")
        task_id = fleet.submit({**SHELL, "target_nodes": ["n1", "n2"]}).body["task_id"]
        connection_id = ws.open(subscribe=task_id)
        monkeypatch.setattr(run_push, "connections", _Broken())
        # WHEN the task runs
        fleet.settle()
        fleet.run_agents(["n1", "n2"])
        fleet.settle()
        # THEN it completed with exact counts, and task pushes still arrived
        task = fleet.task(task_id)
        assert (task["status"], task["node_counts"]["succeeded"]) == ("completed", 2)
        assert_statistics_equal_recount()
        messages = ws.received(connection_id)
        assert _runs(messages) == []
        assert [m["task"]["status"] for m in messages if m["type"] == "task"][-1] == "completed"


class _Broken:
    """A connections store that is throttled for every call."""

    def subscribers(self, topic: str) -> list[Any]:
        raise RuntimeError("throttled")


def _view(i: int) -> dict[str, Any]:
    return {"run_id": f"T1:node-{i:05d}", "task_id": "T1", "node": f"node-{i:05d}", "runner": f"node-{i:05d}",
            "status": "running", "attempt": 1, "progress": 40, "step": "deploy", "phase": "run",
            "error_message": None, "started_at": "2026-12-06T12:00:00.000Z", "completed_at": None,
            "updated_at": "2026-12-06T12:00:01.000Z", "lease_expires_at": "2026-12-06T12:01:00.000Z",
            "reservation": None}


def test_the_local_gateway_refuses_a_post_over_128_kib_as_api_gateway_does(fleet, monkeypatch):
    from websockets.sync.client import connect

    from tests.harness import token

    # GIVEN a client connected to the local gateway
    gateway = WebSocketGateway("127.0.0.1", 0)
    monkeypatch.setenv("FLEETRUN_WEBSOCKET_ENDPOINT", gateway.management_endpoint)
    config.reset()
    gateway.start(WsHandlers.of_app(fleet.app_module))
    try:
        with connect(f"{gateway.url}/?token={token()}", open_timeout=10) as socket:
            [connection_id] = _wait_connection(gateway)
            client = sender.management_client()
            # WHEN the app posts 128 KiB, then one byte more
            client.post_to_connection(ConnectionId=connection_id, Data=b"x" * (128 * 1024))
            assert len(socket.recv(timeout=10)) == 128 * 1024
            # THEN the larger one is refused with API Gateway's error, and nothing reaches the client
            with pytest.raises(client.exceptions.PayloadTooLargeException):
                client.post_to_connection(ConnectionId=connection_id, Data=b"x" * (128 * 1024 + 1))
            client.post_to_connection(ConnectionId=connection_id, Data=json.dumps({"type": "pong"}).encode())
            assert json.loads(socket.recv(timeout=10)) == {"type": "pong"}
    finally:
        gateway.stop()
        sender.reset()


def _wait_connection(gateway: WebSocketGateway) -> list[str]:
    from tests.waiting import wait_for

    wait_for(lambda: gateway.connection_count == 1, 10, "the gateway to register the connection")
    return list(gateway._connections)
