"""Sending to WebSocket connections through the API Gateway management API (`@connections`).

The client is built here from `FLEETRUN_WEBSOCKET_ENDPOINT` (AWS: the WebSocket API's stage URL;
local runtime: its gateway) rather than Chalice's `app.websocket_api`, which caches one client
and ignores endpoint overrides (PITFALLS.md). A connection that is gone (410) is forgotten with
its subscriptions.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import aws, config
from chalicelib.errors import PushUnavailable
from chalicelib.observability import logger
from chalicelib.store import connections

#: pushes are best effort and must not hold a stream batch back: short timeouts, one retry
_CONFIG = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=2, read_timeout=5,
                 max_pool_connections=16)
#: connections posted to in parallel
_PARALLEL = 8
#: API Gateway's WebSocket frame limit: a bigger message is refused (413), so it is never sent
FRAME_BYTES_MAX = 128 * 1024

Message = Mapping[str, Any]


@cache
def _client(endpoint: str, region: str) -> Any:
    return aws.session().create_client("apigatewaymanagementapi", endpoint_url=endpoint, region_name=region,
                                       config=_CONFIG)


def management_client() -> Any:
    """The `apigatewaymanagementapi` client of the configured endpoint. Raises PushUnavailable."""
    endpoint = config.websocket_endpoint()
    if not endpoint:
        raise PushUnavailable("FLEETRUN_WEBSOCKET_ENDPOINT is not set")
    return _client(endpoint, config.region())


def enabled() -> bool:
    return bool(config.websocket_endpoint())


def stream_consumer(what: str) -> Callable[[Callable[[list[Any]], None]], Callable[[list[Any]], None]]:
    """A push's stream consumer entry: it does nothing without a WebSocket API, and never raises
    (invariant 7: a push failure never fails or delays counters, finishing or key release);
    subscribers catch up through the REST API."""
    def wrap(push: Callable[[list[Any]], None]) -> Callable[[list[Any]], None]:
        @functools.wraps(push)
        def consume(records: list[Any]) -> None:
            if not enabled():
                return
            try:
                push(records)
            except Exception:
                logger.exception(f"{what} failed; subscribers catch up through the REST API")
        return consume
    return wrap


def encode(message: Message) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def send(connection_id: str, messages: Sequence[Message]) -> bool:
    """Post `messages` in order to one connection. False when the connection is gone (it is then
    deleted); a message that fails otherwise is logged and skipped, and the rest are still sent
    (each push carries the task's latest state, so a later message supersedes a lost one)."""
    client = management_client()
    for message in messages:
        data = encode(message)
        if len(data) > FRAME_BYTES_MAX:  # a bug upstream (push.task_message keeps tasks under it)
            logger.error("websocket message over 128 KiB not sent",
                         extra={"connection_id": connection_id, "type": message.get("type"), "bytes": len(data)})
            continue
        try:
            client.post_to_connection(ConnectionId=connection_id, Data=data)
        except client.exceptions.GoneException:
            logger.info("websocket connection gone; removed", extra={"connection_id": connection_id})
            connections.close_connection(connection_id)
            return False
        except (ClientError, BotoCoreError) as error:
            logger.warning("websocket post failed", extra={"connection_id": connection_id, "error": repr(error)})
    return True


def send_all(outbox: Mapping[str, Sequence[Message]]) -> int:
    """Post each connection's messages (in order per connection, connections in parallel).
    Returns how many connections were gone."""
    if not outbox:
        return 0
    if len(outbox) == 1:
        [(connection_id, messages)] = outbox.items()
        return 0 if send(connection_id, messages) else 1
    with ThreadPoolExecutor(max_workers=min(_PARALLEL, len(outbox))) as pool:
        results = list(pool.map(lambda item: _send_isolated(*item), outbox.items()))
    return results.count(False)


def _send_isolated(connection_id: str, messages: Sequence[Message]) -> bool:
    """`send`, but an unexpected failure of one connection never stops the others."""
    try:
        return send(connection_id, messages)
    except Exception:
        logger.exception("websocket push to a connection failed", extra={"connection_id": connection_id})
        return True


def close(connection_id: str, farewell: Message) -> None:
    """Send `farewell`, then close the connection (`DeleteConnection`; API Gateway chooses the
    close code). A connection already gone is no news; other failures are logged."""
    client = management_client()
    try:
        client.post_to_connection(ConnectionId=connection_id, Data=encode(farewell))
        client.delete_connection(ConnectionId=connection_id)
    except client.exceptions.GoneException:
        return
    except (ClientError, BotoCoreError) as error:
        logger.warning("websocket close failed", extra={"connection_id": connection_id, "error": repr(error)})


def reset() -> None:
    _client.cache_clear()
