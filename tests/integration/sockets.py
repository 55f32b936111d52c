"""Clients of the WebSocket API as API Gateway presents them to the app's handlers, for the
integration tests (the `ws` fixture in conftest.py gives one per test)."""

from __future__ import annotations

import json
from typing import Any

from fleetrun.local import ws_events
from fleetrun.local.pumps import LambdaContext
from tests.harness import Fleet, token
from tests.ws_connections import RecordingConnections

GATEWAY = ws_events.Gateway(domain_name="abc123.execute-api.us-east-1.amazonaws.com", stage="dev", api_id="abc123")


class Sockets:
    """Clients of the WebSocket API, as API Gateway would present them to the handlers."""

    def __init__(self, fleet: Fleet, recorder: RecordingConnections) -> None:
        self.fleet, self.recorder = fleet, recorder

    def connect(self, user: str = "alice", roles: tuple[str, ...] = ("operator",), *,
                query: dict[str, list[str]] | None = None) -> tuple[dict[str, Any], str]:
        connection_id = ws_events.new_connection_id()
        query = {"token": [token(user, roles)]} if query is None else query
        event = ws_events.connect_event(GATEWAY, connection_id, query=query)
        return self.fleet.app_module.ws_connect(event, LambdaContext()), connection_id

    def open(self, user: str = "alice", roles: tuple[str, ...] = ("operator",), subscribe: str | None = None) -> str:
        answer, connection_id = self.connect(user, roles)
        assert answer == {"statusCode": 200}, answer
        if subscribe is not None:
            assert self.send(connection_id, {"action": "subscribe", "task_id": subscribe})[0]["type"] == "subscribed"
        return connection_id

    def send(self, connection_id: str, message: dict[str, Any] | str) -> list[dict[str, Any]]:
        """Send one message; what the service answered over the connection."""
        self.recorder.take(connection_id)
        body = message if isinstance(message, str) else json.dumps(message)
        answer = self.fleet.app_module.ws_message(ws_events.message_event(GATEWAY, connection_id, body),
                                                  LambdaContext())
        assert answer == {"statusCode": 200}
        return self.recorder.take(connection_id)

    def disconnect(self, connection_id: str) -> None:
        self.fleet.app_module.ws_disconnect(ws_events.disconnect_event(GATEWAY, connection_id), LambdaContext())

    def received(self, connection_id: str) -> list[dict[str, Any]]:
        return self.recorder.take(connection_id)
