"""The events API Gateway's WebSocket API gives `$connect`, `$default` and `$disconnect` handlers.

Used by the local gateway and by tests that invoke the handlers directly, so both see the shapes
Lambda sees in AWS.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

Event = dict[str, Any]


def new_connection_id() -> str:
    """An id shaped like API Gateway's (16 characters of base64, ending in `=`)."""
    return base64.urlsafe_b64encode(os.urandom(11)).decode("ascii")


@dataclass(frozen=True)
class Gateway:
    """What every event's requestContext says about the API."""

    domain_name: str = "127.0.0.1"
    stage: str = "local"
    api_id: str = "local"


def _context(gateway: Gateway, connection_id: str, route_key: str, event_type: str, connected_at: float,
             source_ip: str, user_agent: str) -> dict[str, Any]:
    now = time.time()
    return {
        "routeKey": route_key,
        "eventType": event_type,
        "extendedRequestId": uuid.uuid4().hex[:16],
        "requestTime": formatdate(now, usegmt=True),
        "messageDirection": "IN",
        "stage": gateway.stage,
        "connectedAt": int(connected_at * 1000),
        "requestTimeEpoch": int(now * 1000),
        "identity": {"sourceIp": source_ip, "userAgent": user_agent},
        "requestId": uuid.uuid4().hex[:16],
        "domainName": gateway.domain_name,
        "connectionId": connection_id,
        "apiId": gateway.api_id,
    }


def connect_event(gateway: Gateway, connection_id: str, *, query: Mapping[str, list[str]] | None = None,
                  headers: Mapping[str, str] | None = None, source_ip: str = "127.0.0.1",
                  connected_at: float | None = None) -> Event:
    query = query or {}
    headers = dict(headers or {})
    user_agent = headers.get("User-Agent", headers.get("user-agent", ""))
    return {
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        # API Gateway keeps the last value of a repeated parameter in the single-value map
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": {k: list(v) for k, v in query.items()} or None,
        "requestContext": _context(gateway, connection_id, "$connect", "CONNECT", connected_at or time.time(),
                                   source_ip, user_agent),
        "isBase64Encoded": False,
    }


def message_event(gateway: Gateway, connection_id: str, body: str, *, connected_at: float | None = None,
                  source_ip: str = "127.0.0.1", user_agent: str = "") -> Event:
    context = _context(gateway, connection_id, "$default", "MESSAGE", connected_at or time.time(), source_ip,
                       user_agent)
    context["messageId"] = uuid.uuid4().hex[:16]
    return {"requestContext": context, "body": body, "isBase64Encoded": False}


def disconnect_event(gateway: Gateway, connection_id: str, *, status_code: int = 1000, reason: str = "",
                     connected_at: float | None = None, source_ip: str = "127.0.0.1",
                     user_agent: str = "") -> Event:
    context = _context(gateway, connection_id, "$disconnect", "DISCONNECT", connected_at or time.time(), source_ip,
                       user_agent)
    context["disconnectStatusCode"] = status_code
    context["disconnectReason"] = reason
    return {"headers": {}, "multiValueHeaders": {}, "requestContext": context, "isBase64Encoded": False}
