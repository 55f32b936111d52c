"""Subscription items, their per-event index items, and the delivery log.

A subscription is written with one index item per event it listens to, in one transaction:
`SUBEVT#<event>#ALL` holds admins' subscriptions (every task), `SUBEVT#<event>#OWN#<owner>`
a user's (their own tasks). A task change then finds its subscribers with two queries,
whatever the number of subscriptions in the table. Event names and owners go into keys
through `key_parts.part`; subscription ids are ULIDs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pynamodb.exceptions import DoesNotExist
from pynamodb.transactions import TransactWrite
from ulid import ULID

from chalicelib import aws, clock, config
from chalicelib.domain import retention
from chalicelib.store import index_reads
from chalicelib.store.key_parts import part
from chalicelib.store.models import DeliveryItem, SubscriptionEventItem, SubscriptionItem
from chalicelib.store.retrying import retried

SCOPE_ALL, SCOPE_OWN = "all", "own"
#: how long the marks that a delivery was queued or sent stay (replays come within a day; the
#: delivery log itself is kept FLEETRUN_RETENTION_DAYS, `record_delivery`)
DELIVERY_LOG_DAYS = 30
_LIST_PK = "SUBS"


def subscription_pk(subscription_id: str) -> str:
    return f"SUB#{subscription_id}"


def event_pk(event: str, scope: str, owner: str) -> str:
    if scope == SCOPE_ALL:
        return f"SUBEVT#{part(event)}#ALL"
    return f"SUBEVT#{part(event)}#OWN#{part(owner)}"


def owner_pk(owner: str) -> str:
    return f"SUBOWNER#{part(owner)}"


def new_subscription(**fields: Any) -> SubscriptionItem:
    subscription_id = str(ULID())
    return SubscriptionItem(
        subscription_pk(subscription_id), "META", subscription_id=subscription_id,
        list_pk=_LIST_PK, list_sk=subscription_id, owner_pk=owner_pk(fields["owner"]), owner_sk=subscription_id,
        **fields,
    )


def index_items(subscription: SubscriptionItem) -> Iterator[SubscriptionEventItem]:
    """The per-event index items written and deleted with `subscription`."""
    for event in subscription.events:
        yield SubscriptionEventItem(
            event_pk(str(event), subscription.scope, subscription.owner), subscription.subscription_id,
            subscription_id=subscription.subscription_id,
            filter_type=subscription.filter_type, filter_tag=subscription.filter_tag,
        )


def _connection() -> Any:
    return SubscriptionItem._get_connection().connection


@retried
def create(subscription: SubscriptionItem) -> None:
    with TransactWrite(connection=_connection()) as transaction:
        transaction.save(subscription, condition=SubscriptionItem.pk.does_not_exist())
        for item in index_items(subscription):
            transaction.save(item)


@retried
def delete(subscription: SubscriptionItem) -> None:
    with TransactWrite(connection=_connection()) as transaction:
        transaction.delete(subscription)
        for item in index_items(subscription):
            transaction.delete(item)


def find(subscription_id: str) -> SubscriptionItem | None:
    try:
        return SubscriptionItem.get(subscription_pk(subscription_id), "META")
    except DoesNotExist:
        return None


def page(owner: str | None, limit: int, start_key: dict[str, Any] | None) -> tuple[list[SubscriptionItem], Any]:
    """Newest first: one owner's subscriptions, or every one (owner None)."""
    if owner is None:
        result: Any = SubscriptionItem.list_index.query(
            _LIST_PK, scan_index_forward=False, limit=limit, last_evaluated_key=start_key)
    else:
        result = SubscriptionItem.owner_index.query(
            owner_pk(owner), scan_index_forward=False, limit=limit, last_evaluated_key=start_key)
    items = index_reads.hydrate(SubscriptionItem, result)
    return items, result.last_evaluated_key


def subscribers(event: str, owner: str) -> list[SubscriptionEventItem]:
    """Index items of the subscriptions that may hear `event` of a task owned by `owner`."""
    found: list[SubscriptionEventItem] = []
    for pk in (event_pk(event, SCOPE_ALL, owner), event_pk(event, SCOPE_OWN, owner)):
        found.extend(SubscriptionEventItem.query(pk))
    return found


def record_delivery(subscription_id: str, **fields: Any) -> DeliveryItem:
    now = clock.now_epoch()
    item = DeliveryItem(
        subscription_pk(subscription_id), f"DLV#{ULID()}", subscription_id=subscription_id,
        # API.md "Retention": a delivery is written when its task event happens (by the task's end at the
        # latest): kept the retention from then (domain/retention.py)
        at=clock.rfc3339(now), expires_at=int(now) + retention.days() * retention.DAY, **fields,
    )
    item.save()
    return item


def _sent_key(subscription_id: str, delivery_id: str, kind: str = "SENT") -> dict[str, Any]:
    return {"pk": {"S": subscription_pk(subscription_id)}, "sk": {"S": f"{kind}#{delivery_id}"}}


def already_queued(deliveries: list[tuple[str, str]]) -> set[str]:
    """Of (subscription id, delivery id) pairs, the delivery ids queued before (a replayed
    stream batch derives the same ids)."""
    found: set[str] = set()
    client = aws.client("dynamodb")
    keys = [_sent_key(sub, delivery, "QUEUED") for sub, delivery in dict.fromkeys(deliveries)]
    for start in range(0, len(keys), 100):
        pending: dict[str, Any] = {config.table_name(): {"Keys": keys[start:start + 100], "ConsistentRead": True,
                                                         "ProjectionExpression": "sk"}}
        while pending:
            response = client.batch_get_item(RequestItems=pending)
            found.update(item["sk"]["S"].removeprefix("QUEUED#") for item in response["Responses"].get(
                config.table_name(), []))
            pending = response.get("UnprocessedKeys") or {}
    return found


def mark_queued(deliveries: list[tuple[str, str]]) -> None:
    expires = {"N": str(int(clock.now_epoch()) + DELIVERY_LOG_DAYS * 86400)}
    client = aws.client("dynamodb")
    puts = [{"PutRequest": {"Item": {**_sent_key(sub, delivery, "QUEUED"), "expires_at": expires}}}
            for sub, delivery in dict.fromkeys(deliveries)]
    for start in range(0, len(puts), 25):
        pending: dict[str, Any] = {config.table_name(): puts[start:start + 25]}
        while pending:
            pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


def was_delivered(subscription_id: str, delivery_id: str) -> bool:
    """Whether a delivery with this id reached its destination (a replayed stream batch queues
    the same ids again)."""
    found = aws.client("dynamodb").get_item(
        TableName=config.table_name(), Key=_sent_key(subscription_id, delivery_id), ConsistentRead=True,
        ProjectionExpression="pk",
    )
    return "Item" in found


def mark_delivered(subscription_id: str, delivery_id: str) -> None:
    expires = int(clock.now_epoch()) + DELIVERY_LOG_DAYS * 86400
    aws.client("dynamodb").put_item(
        TableName=config.table_name(),
        Item={**_sent_key(subscription_id, delivery_id), "expires_at": {"N": str(expires)}},
    )


def deliveries(subscription_id: str, limit: int, start_key: dict[str, Any] | None) -> tuple[list[DeliveryItem], Any]:
    """The delivery log, newest first."""
    result: Any = DeliveryItem.query(
        subscription_pk(subscription_id), DeliveryItem.sk.startswith("DLV#"), scan_index_forward=False,
        limit=limit, last_evaluated_key=start_key,
    )
    items: list[DeliveryItem] = list(result)
    return items, result.last_evaluated_key
