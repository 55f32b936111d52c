"""The local WebSocket gateway (fleetrun/local/ws_gateway.py) in front of the app's real handlers:
a real WebSocket client, the app posting through its own apigatewaymanagementapi client to the
gateway's `@connections` endpoint, moto behind the app — the code path of AWS."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from chalicelib import auth, config
from chalicelib.services import sweeper
from chalicelib.store import connections
from fleetrun.local.ws_gateway import WebSocketGateway, WsHandlers
from tests.harness import SECRET, Fleet, token
from tests.waiting import wait_for

SHELL = {"type": "shell", "target_nodes": ["n1"], "parameters": {"command": ["true"]}}


@pytest.fixture
def gateway(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebSocketGateway]:
    served = WebSocketGateway("127.0.0.1", 0)
    monkeypatch.setenv("FLEETRUN_WEBSOCKET_ENDPOINT", served.management_endpoint)
    config.reset()
    served.start(WsHandlers.of_app(fleet.app_module))
    yield served
    served.stop()


def _client(gateway: WebSocketGateway, user: str = "alice", roles: tuple[str, ...] = ("operator",)) -> ClientConnection:
    return connect(f"{gateway.url}/?token={token(user, roles)}", open_timeout=10)


def _receive(socket: ClientConnection, timeout: float = 10) -> dict:
    return json.loads(socket.recv(timeout=timeout))


def _connection_id(gateway: WebSocketGateway) -> str:
    """The only open connection (registered just after the handshake the client saw)."""
    wait_for(lambda: gateway.connection_count == 1, 10, "the gateway to register the connection")
    [connection_id] = gateway._connections
    return connection_id


def test_a_bad_token_is_refused_at_the_handshake_with_the_handlers_status(gateway):
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{gateway.url}/?token=nope", open_timeout=10)
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["error"]["code"] == "unauthenticated"
    assert gateway.connection_count == 0


def test_subscribe_is_answered_and_a_stream_change_is_pushed_to_the_client(gateway, fleet):
    task_id = fleet.submit(SHELL).body["task_id"]
    with _client(gateway) as socket:
        socket.send(json.dumps({"action": "subscribe", "task_id": task_id}))
        assert _receive(socket) == {"type": "subscribed", "task_id": task_id}
        assert _receive(socket)["task"]["status"] == "pending"
        # WHEN the stream delivers the task's creation and dispatch
        fleet.register("n1")
        fleet.settle()
        # THEN the client hears of both events and of every change up to the task's state now
        # (event items come on their own stream shards: an event may follow the task's state, or
        # come twice after a replayed batch; clients keep events once per id, in id order)
        now = fleet.task(task_id)
        seen: list[dict[str, Any]] = []
        events: dict[str, str] = {}
        while {"type": "task", "task": now} not in seen or len(events) < 2:
            seen.append(_receive(socket))
            if seen[-1]["type"] == "event":
                events[seen[-1]["event"]["event_id"]] = seen[-1]["event"]["name"]
        assert [events[event_id] for event_id in sorted(events)] == ["task.created", "task.dispatched"]
        assert "running" in [m["task"]["status"] for m in seen if m["type"] == "task"]


def test_the_management_endpoint_posts_describes_and_deletes_like_api_gateway(gateway):
    manage = boto3.client("apigatewaymanagementapi", endpoint_url=gateway.management_endpoint)
    with _client(gateway) as socket:
        connection_id = _connection_id(gateway)
        assert connections.find_connection(connection_id) is not None
        manage.post_to_connection(ConnectionId=connection_id, Data=b'{"hello": 1}')
        assert _receive(socket) == {"hello": 1}
        described = manage.get_connection(ConnectionId=connection_id)
        assert described["Identity"]["SourceIp"] == "127.0.0.1"
        manage.delete_connection(ConnectionId=connection_id)
        with pytest.raises(ConnectionClosed):
            socket.recv(timeout=10)
    # THEN $disconnect ran and forgot the connection; posting to it now is GoneException (410)
    wait_for(lambda: connections.find_connection(connection_id) is None, 30, "the $disconnect handler")
    with pytest.raises(manage.exceptions.GoneException):
        manage.post_to_connection(ConnectionId=connection_id, Data=b"{}")


def test_a_client_that_closes_is_disconnected_with_its_subscriptions(gateway):
    with _client(gateway) as socket:
        connection_id = _connection_id(gateway)
        socket.send(json.dumps({"action": "subscribe", "task_id": "*"}))
        assert _receive(socket)["type"] == "subscribed"
        assert [s.connection_id for s in connections.subscribers("*")] == [connection_id]
    # the connection item goes last (after its subscriptions)
    wait_for(lambda: connections.find_connection(connection_id) is None, 30, "the $disconnect handler")
    assert connections.subscribers("*") == []


def test_a_connection_is_closed_with_4001_when_its_token_expires(gateway):
    # GIVEN a connection opened with a token that expires in about two seconds
    expiring = auth.mint_token("alice", ["operator"], SECRET, ttl_seconds=2)
    with connect(f"{gateway.url}/?token={expiring}", open_timeout=10) as socket:
        connection_id = _connection_id(gateway)
        socket.send(json.dumps({"action": "ping"}))
        assert _receive(socket) == {"type": "pong"}
        # WHEN the token expires / THEN the gateway closes the connection with 4001
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=10)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "token expired")
    # AND $disconnect forgot it
    wait_for(lambda: connections.find_connection(connection_id) is None and gateway.connection_count == 0, 30,
             "the $disconnect handler")


def test_the_sweepers_close_of_a_connection_whose_token_expired_is_a_4001_too(gateway, monkeypatch):
    # GIVEN a connection whose token expires in a second, and a gateway that has not closed it yet
    monkeypatch.setattr(gateway, "_close_at_expiry", lambda known: None)
    expiring = auth.mint_token("alice", ["operator"], SECRET, ttl_seconds=1)
    with connect(f"{gateway.url}/?token={expiring}", open_timeout=10) as socket:
        _connection_id(gateway)
        # WHEN the sweeper passes once the token has expired
        wait_for(lambda: sweeper.sweep().connections_closed, 10, "the sweeper to close the connection")
        # THEN the client is told why and the connection is closed with 4001
        assert _receive(socket)["error"]["code"] == "unauthenticated"
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4001


def test_messages_of_one_connection_are_handled_in_order(gateway):
    with _client(gateway) as socket:
        for i in range(5):
            socket.send(json.dumps({"action": "ping", "n": i}))
        started = time.monotonic()
        assert [_receive(socket) for _ in range(5)] == [{"type": "pong"}] * 5
        assert time.monotonic() - started < 10
