"""The WebSocket API (API.md "Real time"): connect with a token, subscribe, unsubscribe.

Client messages: `{"action": "subscribe" | "unsubscribe", "task_id": "<id>" | "*"}` and
`{"action": "ping"}`. Answers go back over the connection: `{"type": "subscribed", "task_id"}`
(a subscription to one task is followed by that task's state read once the subscription is
stored, `{"type": "task", ...}`, so a client never misses a change between its last read and its
subscription; like a push, it carries at most the targets that fit 128 KiB, `push.task_message`),
`{"type": "unsubscribed", "task_id"}`, `{"type": "pong"}`, or
`{"type": "error", "error": {"code", "message"}}` with the codes of API.md. A subscribe that
names `"output_of": "<node>"` also subscribes that node's live output (`output_push.py`), an
unsubscribe naming it drops only the output; their answers carry `output_of` too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from chalicelib import auth
from chalicelib.domain.records import Task
from chalicelib.errors import FleetrunError, Unauthenticated, ValidationFailed
from chalicelib.observability import logger
from chalicelib.services import queries
from chalicelib.services.realtime import push, sender
from chalicelib.services.realtime.output_push import output_topic, parse_output_of
from chalicelib.store import connections
from chalicelib.store.models import WsConnectionItem
from chalicelib.validation import unsafe_text

_TASK_ID_MAX = 128
_ACTIONS = ("subscribe", "unsubscribe", "ping")


def connect(connection_id: str, query: Mapping[str, str] | None) -> auth.Actor:
    """Accept a connection whose `?token=` is a valid user token.

    Raises Unauthenticated (no or bad token) or Forbidden (a token with no fleetrun role).
    """
    token = (query or {}).get("token")
    if not token:
        raise Unauthenticated("connect with ?token=<JWT>")
    actor = auth.authenticate_user(f"Bearer {token}")
    auth.require(actor, "read")
    connections.open_connection(connection_id, actor)
    logger.info("websocket connected", extra={"connection_id": connection_id, "user": actor.user_id})
    return actor


def disconnect(connection_id: str) -> None:
    connections.close_connection(connection_id)
    logger.info("websocket disconnected", extra={"connection_id": connection_id})


def receive(connection_id: str, body: str | None) -> None:
    """Act on one client message and answer over the connection (never raises a user error)."""
    try:
        answers = _answer(connection_id, body)
    except FleetrunError as error:
        answers = [{"type": "error", **error.document()}]
    if not sender.enabled():
        logger.warning("FLEETRUN_WEBSOCKET_ENDPOINT is not set: answer dropped", extra={"connection_id": connection_id})
        return
    sender.send(connection_id, answers)


def _answer(connection_id: str, body: str | None) -> list[dict[str, Any]]:
    message = _parse(body)
    if message["action"] == "ping":
        return [{"type": "pong"}]
    connection = connections.find_connection(connection_id)
    if connection is None:
        raise Unauthenticated("this connection is not known (expired?): reconnect with ?token=<JWT>")
    actor = connections.actor_of(connection)
    topic = message["task_id"]
    output_of = parse_output_of(message)
    if output_of is not None:
        return _answer_output(connection, actor, message["action"], topic, output_of)
    if message["action"] == "unsubscribe":
        connections.unsubscribe(connection, topic)
        return [{"type": "unsubscribed", "task_id": topic}]
    if topic not in (connection.topics or []) and len(connection.topics or []) >= connections.MAX_TOPICS:
        raise ValidationFailed(f"a connection may hold at most {connections.MAX_TOPICS} subscriptions",
                               [{"path": "$.task_id", "message": "too many subscriptions"}])
    if topic == connections.ALL_TASKS:
        connections.subscribe(connection, topic)
        return [{"type": "subscribed", "task_id": topic}]
    queries.visible_task(actor, topic)  # TaskNotFound for another user's task: nothing is stored
    connections.subscribe(connection, topic)
    return [{"type": "subscribed", "task_id": topic}, push.task_message(_read_once_subscribed(actor, topic))]


def _read_once_subscribed(actor: auth.Actor, task_id: str) -> Task:
    """The task read after its subscription is stored: a change written after this read is
    pushed (the push reads the subscriptions after the change), one written before is in it."""
    return queries.visible_task(actor, task_id)


def _answer_output(connection: WsConnectionItem, actor: auth.Actor, action: str, task_id: str,
                   node: str) -> list[dict[str, Any]]:
    """`output_of`: the task's pushes plus the node's live output (API.md "Reading output")."""
    topic = output_topic(task_id, node)
    if action == "unsubscribe":
        connections.unsubscribe(connection, topic)
        return [{"type": "unsubscribed", "task_id": task_id, "output_of": node}]
    held = set(connection.topics or [])
    if len(held | {task_id, topic}) > connections.MAX_TOPICS:
        raise ValidationFailed(f"a connection may hold at most {connections.MAX_TOPICS} subscriptions",
                               [{"path": "$.output_of", "message": "too many subscriptions"}])
    queries.visible_task(actor, task_id)  # TaskNotFound for another user's task: nothing is stored
    connections.subscribe(connection, task_id)
    connections.subscribe(connection, topic)  # `update` refreshed the item's topics
    return [{"type": "subscribed", "task_id": task_id, "output_of": node},
            push.task_message(_read_once_subscribed(actor, task_id))]


def _parse(body: str | None) -> dict[str, Any]:
    try:
        message = json.loads(body or "")
    except ValueError:
        raise ValidationFailed("a message is a JSON object", [{"path": "$", "message": "not JSON"}]) from None
    unsafe = unsafe_text(message, "$")  # a lone surrogate or NUL in a task id would fail the key lookup
    if unsafe:
        raise ValidationFailed("a message must not contain lone surrogates or NUL characters", unsafe)
    if not isinstance(message, dict) or message.get("action") not in _ACTIONS:
        raise ValidationFailed(f"'action' must be one of {', '.join(_ACTIONS)}",
                               [{"path": "$.action", "message": "unknown or missing action"}])
    if message["action"] == "ping":
        return message
    task_id = message.get("task_id")
    if not isinstance(task_id, str) or not 1 <= len(task_id) <= _TASK_ID_MAX:
        raise ValidationFailed("'task_id' must be a task id or '*'",
                               [{"path": "$.task_id", "message": "missing or not a string of 1-128 characters"}])
    return message
