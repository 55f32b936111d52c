"""Notification subscriptions: create, read, delete, and the delivery log (API.md
"Notification subscriptions").

The target and the secret are sealed together (KMS envelope, `secrets.seal`): a Slack or
DingTalk webhook URL is a credential too. Views show the target masked and `secret_set`.
"""

from __future__ import annotations

from typing import Any, Final

from chalicelib import clock, config, secrets
from chalicelib.auth import Actor
from chalicelib.errors import NotFound, ValidationFailed
from chalicelib.notify import targets
from chalicelib.notify.events import EVENTS
from chalicelib.store import pages
from chalicelib.store import subscriptions as store
from chalicelib.store.models import DeliveryItem, SubscriptionItem

#: channels that sign with the subscription's secret (webhook must, DingTalk may)
SECRET_REQUIRED: Final = frozenset({"webhook"})
SECRET_ALLOWED: Final = frozenset({"webhook", "dingtalk"})


def create(actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
    """Create a subscription owned by `actor`; an admin's hears every task, anyone else's their own.

    Raises ValidationFailed for a target that does not fit the channel, or a misplaced secret.
    """
    channel, target, secret = body["channel"], body["target"], body.get("secret")
    targets.validate(channel, target)
    _check_secret(channel, secret)
    if channel == targets.EMAIL_CHANNEL and not config.notify_email_sender():
        raise ValidationFailed("e-mail notifications are not configured on this service (no sender address)",
                               [{"path": "$.channel", "message": "email is not configured"}])
    filters = body.get("filter", {})
    sealed = secrets.seal({"target": target, "secret": secret or ""})
    assert sealed is not None
    subscription = store.new_subscription(
        owner=actor.user_id, scope=store.SCOPE_ALL if actor.is_admin else store.SCOPE_OWN, channel=channel,
        target_display=targets.display(channel, target), sealed=sealed, secret_set=bool(secret),
        events=list(dict.fromkeys(body.get("events") or EVENTS)),
        filter_type=filters.get("type"), filter_tag=filters.get("tag"), created_at=clock.now_iso(),
    )
    store.create(subscription)
    return view(subscription)


def visible(actor: Actor, subscription_id: str) -> SubscriptionItem:
    """The subscription when the actor owns it or is an admin; raises NotFound otherwise."""
    subscription = store.find(subscription_id)
    if subscription is None or (not actor.is_admin and subscription.owner != actor.user_id):
        raise NotFound(f"subscription {subscription_id} not found")
    return subscription


def get(actor: Actor, subscription_id: str) -> dict[str, Any]:
    return view(visible(actor, subscription_id))


def delete(actor: Actor, subscription_id: str) -> None:
    store.delete(visible(actor, subscription_id))


def page(actor: Actor, limit: int, cursor: str | None) -> dict[str, Any]:
    """An admin lists every subscription, anyone else their own."""
    items, last_key = store.page(None if actor.is_admin else actor.user_id, limit,
                                 pages.start_key(cursor))
    return pages.page((view(s) for s in items), last_key)


def deliveries(actor: Actor, subscription_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
    visible(actor, subscription_id)
    items, last_key = store.deliveries(subscription_id, limit, pages.start_key(cursor))
    return pages.page((delivery_view(d) for d in items), last_key)


def view(subscription: SubscriptionItem) -> dict[str, Any]:
    return {
        "subscription_id": subscription.subscription_id,
        "owner": subscription.owner,
        "scope": subscription.scope,
        "channel": subscription.channel,
        "target": subscription.target_display,
        "secret_set": bool(subscription.secret_set),
        "events": list(subscription.events),
        "filter": {"type": subscription.filter_type, "tag": subscription.filter_tag},
        "created_at": subscription.created_at,
    }


def delivery_view(delivery: DeliveryItem) -> dict[str, Any]:
    return {
        "delivery_id": delivery.delivery_id,
        "event": delivery.event,
        "task_id": delivery.task_id,
        "attempt": int(delivery.attempt),
        "status": delivery.status,
        "status_code": int(delivery.status_code) if delivery.status_code is not None else None,
        "duration_ms": int(delivery.duration_ms),
        "error": delivery.error,
        "at": delivery.at,
    }


def _check_secret(channel: str, secret: str | None) -> None:
    if secret is None and channel in SECRET_REQUIRED:
        raise ValidationFailed(f"a {channel} subscription needs a secret (it signs every delivery)",
                               [{"path": "$.secret", "message": "required for this channel"}])
    if secret is not None and channel not in SECRET_ALLOWED:
        raise ValidationFailed(f"the {channel} channel does not use a secret",
                               [{"path": "$.secret", "message": "not used by this channel"}])
