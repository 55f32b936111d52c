"""The notify worker: one queued message, one delivery attempt, one delivery-log item.

A delivery that reached its destination is marked sent (by delivery id, kept as long as the
log): the same id queued again by a replayed stream batch is not sent twice. Two copies handled
at the same moment can both go out; receivers drop the second by `X-Fleetrun-Delivery`.

A failed attempt makes its message invisible for an exponential delay (ChangeMessageVisibility)
and is reported as a batch item failure, so SQS hands it back later; the queue's redrive
policy moves it to the dead-letter queue after `max_receive_count` receives, and the last
attempt is logged `dead_lettered`. The same delivery id travels with every attempt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chalicelib import aws, config, secrets
from chalicelib.errors import DeliveryFailed
from chalicelib.notify import channels
from chalicelib.observability import count, logger
from chalicelib.resources import NOTIFY_QUEUE
from chalicelib.store import subscriptions as store

#: longest wait between two attempts
MAX_BACKOFF_SECONDS = 900
DELIVERED, FAILED, DEAD_LETTERED = "delivered", "failed", "dead_lettered"


@dataclass(frozen=True)
class Received:
    body: str
    message_id: str
    receipt_handle: str
    #: ApproximateReceiveCount: 1 on the first attempt
    attempt: int


def backoff_seconds(attempt: int) -> int:
    """Delay before the attempt after `attempt`: base, 2x base, 4x base … capped."""
    return int(min(MAX_BACKOFF_SECONDS, config.notify_backoff_seconds() * 2 ** (attempt - 1)))


def handle(received: Received) -> None:
    """Deliver one message. Raises DeliveryFailed when SQS should try again."""
    message = _parse(received)
    if message is None:
        return
    subscription = store.find(message["subscription_id"])
    if subscription is None:
        logger.info("subscription deleted; notification dropped",
                    extra={"subscription_id": message["subscription_id"], "delivery_id": message["delivery_id"]})
        return
    if subscription.scope != store.SCOPE_ALL and message["task"].get("owner") != subscription.owner:
        # fan-out only queues a user's own tasks for them; a message saying otherwise is not sent
        logger.warning("notification about another user's task dropped",
                       extra={"subscription_id": subscription.subscription_id, "delivery_id": message["delivery_id"]})
        return
    if store.was_delivered(subscription.subscription_id, message["delivery_id"]):
        logger.info("notification already delivered (a replayed stream batch); not sent again",
                    extra={"subscription_id": subscription.subscription_id, "delivery_id": message["delivery_id"]})
        return
    try:
        sealed = secrets.unseal(subscription.sealed)
        outcome = channels.deliver(subscription.channel, sealed["target"], sealed.get("secret", ""), message)
    except Exception:
        _retry_later(received)
        raise
    final = received.attempt >= NOTIFY_QUEUE.max_receive_count
    status = DELIVERED if outcome.ok else (DEAD_LETTERED if final else FAILED)
    try:
        store.record_delivery(
            subscription.subscription_id, delivery_id=message["delivery_id"], event=message["event"],
            task_id=message["task"]["task_id"], attempt=received.attempt, status=status,
            status_code=outcome.status_code, duration_ms=outcome.duration_ms, error=outcome.error,
        )
    except Exception:  # a lost log line must not send a delivered notification again
        logger.exception("could not record a delivery attempt", extra={"delivery_id": message["delivery_id"]})
    count("NotificationDeliveries", channel=subscription.channel, status=status)
    if outcome.ok:
        try:
            store.mark_delivered(subscription.subscription_id, message["delivery_id"])
        except Exception:  # receivers still drop a second copy by its delivery id
            logger.exception("could not mark a delivery sent", extra={"delivery_id": message["delivery_id"]})
        return
    logger.warning("notification delivery failed", extra={
        "subscription_id": subscription.subscription_id, "delivery_id": message["delivery_id"],
        "attempt": received.attempt, "status": status, "error": outcome.error,
    })
    _retry_later(received, 0 if final else None)
    raise DeliveryFailed(f"{message['delivery_id']} attempt {received.attempt}: {outcome.error}")


def _parse(received: Received) -> dict[str, Any] | None:
    try:
        message = json.loads(received.body)
        if not isinstance(message, dict) or not {"delivery_id", "subscription_id", "event", "task"} <= message.keys():
            raise ValueError("missing fields")
    except ValueError:
        logger.warning("notify message is malformed; dropped", extra={"message_id": received.message_id})
        return None
    return message


def _retry_later(received: Received, delay: int | None = None) -> None:
    """Hide the message for the backoff delay (0: let SQS move a last attempt to the DLQ now)."""
    seconds = backoff_seconds(received.attempt) if delay is None else delay
    try:
        aws.client("sqs").change_message_visibility(
            QueueUrl=config.notify_queue_url(), ReceiptHandle=received.receipt_handle, VisibilityTimeout=seconds,
        )
    except Exception:  # the message then comes back after the queue's visibility timeout
        logger.exception("could not set the retry delay of a notification", extra={"message_id": received.message_id})
