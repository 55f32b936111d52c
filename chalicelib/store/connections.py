"""WebSocket connections and their subscriptions.

A connection item (`WSCONN#<id>`) remembers who connected and what they subscribed to; each
subscription is also an item in its topic's partition (`WSSUB#<task id>` or `WSSUB#*`, the
connection id as sort key), so the stream finds a task's subscribers with one query. Both
carry a TTL a little past API Gateway's 2-hour connection limit: a connection whose
`$disconnect` never ran disappears by itself. Expired items DynamoDB has not deleted yet
are skipped on read.

A connection also ends with the token it was opened with: its item keeps the token's `exp`
(and is listed by it, for the sweeper that closes it), its subscriptions expire then, and
from then on it is not found and gets no push.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import DoesNotExist

from chalicelib import clock
from chalicelib.auth import ADMIN, Actor
from chalicelib.store import index_reads
from chalicelib.store.key_parts import part
from chalicelib.store.models import WsConnectionItem, WsSubscriptionItem
from chalicelib.store.retrying import retried

#: API Gateway closes a WebSocket after 2 hours; the items outlive that by a margin
CONNECTION_TTL_SECONDS = 2 * 3600 + 600
#: `task_id` of a subscription to every task the user may see
ALL_TASKS = "*"
#: subscriptions one connection may hold (bounds the connection item and a disconnect's deletes)
MAX_TOPICS = 100


@dataclass(frozen=True)
class Subscriber:
    connection_id: str
    user_id: str
    admin: bool


def connection_pk(connection_id: str) -> str:
    return f"WSCONN#{connection_id}"


def topic_pk(topic: str) -> str:
    """A topic is whatever the client sent as `task_id`: escaped like any user's string."""
    return f"WSSUB#{part(topic)}"


#: list-index partition of the connections, by their token's expiry
EXPIRY_LIST = "WSCONN"


@retried
def open_connection(connection_id: str, actor: Actor) -> WsConnectionItem:
    now = clock.now_epoch()
    expires_at = int(now) + CONNECTION_TTL_SECONDS
    token_expires_at = int(actor.expires_at) if actor.expires_at is not None else expires_at
    item = WsConnectionItem(
        connection_pk(connection_id), "META", connection_id=connection_id, user_id=actor.user_id,
        roles=sorted(actor.roles), connected_at=clock.rfc3339(now), topics=[], expires_at=expires_at,
        token_expires_at=token_expires_at, list_pk=EXPIRY_LIST, list_sk=f"{token_expires_at:012d}#{connection_id}",
    )
    item.save()
    return item


def live_until(connection: WsConnectionItem) -> int:
    """When the connection ends: its token expires, or its items do."""
    token_expires_at = connection.token_expires_at
    ends = int(connection.expires_at)
    return min(ends, int(token_expires_at)) if token_expires_at is not None else ends


def find_connection(connection_id: str) -> WsConnectionItem | None:
    try:
        item = WsConnectionItem.get(connection_pk(connection_id), "META", consistent_read=True)
    except DoesNotExist:
        return None
    return item if live_until(item) > clock.now_epoch() else None


def actor_of(connection: WsConnectionItem) -> Actor:
    return Actor(user_id=connection.user_id, roles=frozenset(str(role) for role in connection.roles or []))


@retried
def subscribe(connection: WsConnectionItem, topic: str) -> None:
    """Idempotent. The subscription expires with its connection (or its token)."""
    WsSubscriptionItem(
        topic_pk(topic), connection.connection_id, user_id=connection.user_id,
        admin=ADMIN in (connection.roles or []), expires_at=live_until(connection),
    ).save()
    if topic not in (connection.topics or []):
        connection.update(actions=[WsConnectionItem.topics.set(WsConnectionItem.topics.append([topic]))])


@retried
def unsubscribe(connection: WsConnectionItem, topic: str) -> None:
    WsSubscriptionItem(topic_pk(topic), connection.connection_id).delete()
    remaining = [t for t in (connection.topics or []) if t != topic]
    if remaining != list(connection.topics or []):
        connection.update(actions=[WsConnectionItem.topics.set(remaining)])


def close_connection(connection_id: str) -> None:
    """Delete the connection and every subscription it holds. Idempotent."""
    try:
        item = WsConnectionItem.get(connection_pk(connection_id), "META", consistent_read=True)
    except DoesNotExist:
        return
    for topic in item.topics or []:
        WsSubscriptionItem(topic_pk(str(topic)), connection_id).delete()
    item.delete()


def expired(now: float) -> Iterator[WsConnectionItem]:
    """Connections whose token expired before `now` and that are still recorded, oldest first."""
    found: Any = WsConnectionItem.list_index.query(EXPIRY_LIST, WsConnectionItem.list_sk < f"{int(now):012d}#")
    yield from index_reads.iter_hydrated(WsConnectionItem, found)


def subscribers(topic: str) -> list[Subscriber]:
    """The live subscribers of a task id (or of `*`): one query."""
    now = clock.now_epoch()
    return [
        Subscriber(item.sk, item.user_id, bool(item.admin))
        for item in WsSubscriptionItem.query(topic_pk(topic))
        if int(item.expires_at) > now
    ]
