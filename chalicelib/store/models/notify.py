"""Items of real time and notifications: WebSocket connections and subscriptions, notification
subscriptions, their per-event index and delivery log."""

from __future__ import annotations

from pynamodb.attributes import BooleanAttribute, ListAttribute, NumberAttribute, UnicodeAttribute

from chalicelib.store.models.base import FleetrunModel, ListIndex, OwnerIndex, _Meta


class WsConnectionItem(FleetrunModel):
    """A WebSocket connection and who opened it (the token is checked once, at connect)."""

    class Meta(_Meta):
        pass

    connection_id = UnicodeAttribute()
    user_id = UnicodeAttribute()
    roles = ListAttribute(of=UnicodeAttribute, default=list)
    connected_at = UnicodeAttribute()
    #: the task ids (or "*") this connection subscribed to, so a disconnect finds its subscriptions
    topics = ListAttribute(of=UnicodeAttribute, default=list)
    expires_at = NumberAttribute()
    #: the `exp` of the token it was opened with: the connection is closed then (code 4001)
    token_expires_at = NumberAttribute(null=True)
    #: list-index `WSCONN` / `<token exp, 12 digits>#<conn id>`: the sweeper finds expired ones
    list_pk = UnicodeAttribute(null=True)
    list_sk = UnicodeAttribute(null=True)

    list_index = ListIndex()


class WsSubscriptionItem(FleetrunModel):
    """One connection's subscription to a task (or to `*`), in the task's subscriber partition."""

    class Meta(_Meta):
        pass

    user_id = UnicodeAttribute()
    #: `*` subscribers who are not admin receive only their own tasks
    admin = BooleanAttribute(default=False)
    expires_at = NumberAttribute()


class SubscriptionItem(FleetrunModel):
    """A notification subscription; `sealed` holds the target and secret (secrets.seal)."""

    class Meta(_Meta):
        pass

    subscription_id = UnicodeAttribute()
    owner = UnicodeAttribute()
    #: "all" (created by an admin: every task) or "own" (the owner's tasks only)
    scope = UnicodeAttribute()
    channel = UnicodeAttribute()
    #: the target with its credentials masked (what views show)
    target_display = UnicodeAttribute()
    sealed = UnicodeAttribute()
    secret_set = BooleanAttribute(default=False)
    events = ListAttribute(of=UnicodeAttribute, default=list)
    filter_type = UnicodeAttribute(null=True)
    filter_tag = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    list_pk = UnicodeAttribute(null=True)
    list_sk = UnicodeAttribute(null=True)
    owner_pk = UnicodeAttribute(null=True)
    owner_sk = UnicodeAttribute(null=True)

    list_index = ListIndex()
    owner_index = OwnerIndex()


class SubscriptionEventItem(FleetrunModel):
    """One per (subscription, event): the stream finds a change's subscribers with one query."""

    class Meta(_Meta):
        pass

    subscription_id = UnicodeAttribute()
    filter_type = UnicodeAttribute(null=True)
    filter_tag = UnicodeAttribute(null=True)


class DeliveryItem(FleetrunModel):
    """One delivery attempt of a notification (kept `DELIVERY_LOG_DAYS`)."""

    class Meta(_Meta):
        pass

    delivery_id = UnicodeAttribute()
    subscription_id = UnicodeAttribute()
    event = UnicodeAttribute()
    task_id = UnicodeAttribute()
    attempt = NumberAttribute()
    #: delivered | failed (will be retried) | dead_lettered
    status = UnicodeAttribute()
    status_code = NumberAttribute(null=True)
    duration_ms = NumberAttribute()
    error = UnicodeAttribute(null=True)
    at = UnicodeAttribute()
    expires_at = NumberAttribute()


#: every item class (reset_connections drops their cached connections)
