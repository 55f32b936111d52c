"""PynamoDB models of the single table. Keys:

| item            | pk                  | sk               |
|-----------------|---------------------|------------------|
| task            | TASK#<id>           | META             |
| target chunk    | TASK#<id>           | TGT#<00000>      |
| node run        | TASK#<id>           | RUN#<node>       |
| events          | TASK#<id>           | EVT#<ulid>       |
| idempotency     | IDEM#<owner>#<key>  | IDEM             |
| node (machine)  | NODE#<id>           | META             |
| allocation      | NODE#<id>           | ALLOC#<start>#<ulid> | (list-index: ALLOCEND#OPEN or ALLOCEND#<end month>)
| statistics      | STATS#<scope>       | <shard>          | (raw boto3: dynamic attribute names, see counters.py)
| rate bucket     | RATE#<user>         | <minute>         |
| schedule        | SCHEDULE#<id>       | META             | (list-index SCHEDULE, owner-index SCHEDULES#<owner>)
| catalog image   | IMG#<project>       | <repository>:<tag> | (list-index `IMAGE` / `<repository>:<tag>`)
| fleet snapshot  | SNAPSHOT#fleet      | META, NODE#<id>  | (raw boto3: dynamic attribute names, see store/snapshot.py)
| ws connection   | WSCONN#<conn id>    | META             | (TTL)
| ws subscription | WSSUB#<task or *>   | <conn id>        | (TTL; one query finds a task's subscribers)
| subscription    | SUB#<id>            | META             | (list-index SUBS, owner-index SUBOWNER#<owner>)
| subscription by event | SUBEVT#<event>#ALL or SUBEVT#<event>#OWN#<owner> | <subscription id> |
| delivery log    | SUB#<id>            | DLV#<ulid>       | (TTL)
| concurrency key | CKEY#<key>          | HOLDER, Q#<queued_at>#<task id> | holder and FIFO of a key (keys.py) |

Indexes: `list-index` (tasks and nodes newest first), `owner-index` (a user's tasks),
`claim-index` (sparse: only claimable runs, by runner, priority first), `active-index`
(sparse: non-terminal tasks, for the sweeper).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.connection import TableConnection
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model

from chalicelib import config

TTL_ATTRIBUTE = "expires_at"


class _Meta:
    table_name = "fleetrun"
    region = "us-east-1"


class FleetrunModel(Model):
    """Base of every item: binds the table name and region from config on first use."""

    class Meta(_Meta):
        pass

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)

    @classmethod
    def _get_connection(cls) -> TableConnection:
        cls.Meta.table_name = config.table_name()
        cls.Meta.region = config.region()
        return super()._get_connection()


class ListIndex(GlobalSecondaryIndex["FleetrunModel"]):
    class Meta:
        index_name = "list-index"
        projection = AllProjection()

    list_pk = UnicodeAttribute(hash_key=True)
    list_sk = UnicodeAttribute(range_key=True)


class OwnerIndex(GlobalSecondaryIndex["FleetrunModel"]):
    class Meta:
        index_name = "owner-index"
        projection = AllProjection()

    owner_pk = UnicodeAttribute(hash_key=True)
    owner_sk = UnicodeAttribute(range_key=True)


class ClaimIndex(GlobalSecondaryIndex["FleetrunModel"]):
    class Meta:
        index_name = "claim-index"
        projection = KeysOnlyProjection()

    claim_pk = UnicodeAttribute(hash_key=True)
    claim_sk = UnicodeAttribute(range_key=True)


class ActiveIndex(GlobalSecondaryIndex["FleetrunModel"]):
    class Meta:
        index_name = "active-index"
        projection = KeysOnlyProjection()

    active_pk = UnicodeAttribute(hash_key=True)
    active_sk = UnicodeAttribute(range_key=True)


ALL_INDEXES: tuple[type[GlobalSecondaryIndex[Any]], ...] = (ListIndex, OwnerIndex, ClaimIndex, ActiveIndex)


class RunCounts(MapAttribute[str, Any]):
    pending = NumberAttribute(default=0)
    running = NumberAttribute(default=0)
    apply_pending = NumberAttribute(default=0)
    succeeded = NumberAttribute(default=0)
    failed = NumberAttribute(default=0)
    timed_out = NumberAttribute(default=0)
    cancelled = NumberAttribute(default=0)


class TaskItem(FleetrunModel):
    class Meta(_Meta):
        pass

    task_id = UnicodeAttribute()
    type = UnicodeAttribute()
    name = UnicodeAttribute(null=True)
    owner = UnicodeAttribute()
    status = UnicodeAttribute()
    stage = UnicodeAttribute(null=True)
    attempt = NumberAttribute(default=1)
    priority = NumberAttribute(default=5)
    max_concurrency = NumberAttribute()
    max_errors = UnicodeAttribute(default="0")
    concurrency_key = UnicodeAttribute(null=True)
    runner_node = UnicodeAttribute(null=True)
    tags = ListAttribute(of=UnicodeAttribute, default=list)
    #: parameters as JSON with secret values replaced by "***"
    parameters = UnicodeAttribute(default="{}")
    #: secret parameter values, envelope-encrypted (see secrets.py)
    sealed_secrets = UnicodeAttribute(null=True)
    target_count = NumberAttribute(default=0)
    target_chunks = NumberAttribute(default=0)
    created_at = UnicodeAttribute()
    started_at = UnicodeAttribute(null=True)
    completed_at = UnicodeAttribute(null=True)
    updated_at = UnicodeAttribute()
    error_message = UnicodeAttribute(null=True)
    # --- aggregated from the stream (see services/aggregation.py) ---
    counts = RunCounts(default=RunCounts)
    progress_sum = NumberAttribute(default=0)
    applied_seq = UnicodeAttribute(default="")
    # --- dispatch ---
    dispatch_triggered = BooleanAttribute(default=False)
    dispatched_attempt = NumberAttribute(default=0)
    created_count = NumberAttribute(default=0)
    skipped_count = NumberAttribute(default=0)
    #: ordinals below `max_concurrency + finished - finished_base` may be claimed
    finished_base = NumberAttribute(default=0)
    ordinal_next = NumberAttribute(default=0)
    halted = BooleanAttribute(default=False)
    #: scope of the last retry ("failed" or "all"); the dispatch job resets runs accordingly
    retry_scope = UnicodeAttribute(null=True)
    idempotency_key = UnicodeAttribute(null=True)
    # --- two-phase and concurrency keys (services/twophase.py, services/concurrency.py) ---
    #: set by `confirm`, cleared when the task plans again: the planned run may be applied
    plan_confirmed = BooleanAttribute(null=True)
    #: when the task last entered `apply_pending` (the confirmation window counts from here)
    awaiting_since = UnicodeAttribute(null=True)
    #: the task's place in its concurrency key's queue (creation, or its last retry)
    queued_at = UnicodeAttribute(null=True)
    # --- indexes ---
    list_pk = UnicodeAttribute(null=True)
    list_sk = UnicodeAttribute(null=True)
    owner_pk = UnicodeAttribute(null=True)
    owner_sk = UnicodeAttribute(null=True)
    active_pk = UnicodeAttribute(null=True)
    active_sk = UnicodeAttribute(null=True)

    list_index = ListIndex()
    owner_index = OwnerIndex()
    active_index = ActiveIndex()

    KIND: ClassVar[str] = "META"


class TargetChunk(FleetrunModel):
    class Meta(_Meta):
        pass

    nodes = ListAttribute(of=UnicodeAttribute, default=list)


class NodeRunItem(FleetrunModel):
    class Meta(_Meta):
        pass

    task_id = UnicodeAttribute()
    node = UnicodeAttribute()
    runner = UnicodeAttribute()
    type = UnicodeAttribute()
    owner = UnicodeAttribute()
    status = UnicodeAttribute()
    attempt = NumberAttribute(default=1)
    #: the task attempt (retry generation) this run belongs to
    generation = NumberAttribute(default=1)
    ordinal = NumberAttribute(default=0)
    phase = UnicodeAttribute(default="run")
    step = UnicodeAttribute(null=True)
    progress = NumberAttribute(default=0)
    error_message = UnicodeAttribute(null=True)
    started_at = UnicodeAttribute(null=True)
    completed_at = UnicodeAttribute(null=True)
    updated_at = UnicodeAttribute(null=True)
    lease_owner = UnicodeAttribute(null=True)
    lease_expires_at = NumberAttribute(null=True)
    cancel_requested = BooleanAttribute(default=False)
    #: which dispatch created the run (a resumed dispatch counts its own runs as created)
    dispatch_id = UnicodeAttribute(null=True)
    #: the action of the last transition; the aggregator skips counts a retry already applied
    last_action = UnicodeAttribute(null=True)
    #: the task attempt whose retry reset this run (makes a resumed retry dispatch deterministic)
    reset_gen = NumberAttribute(null=True)
    priority = NumberAttribute(default=5)
    #: events sent with the completion, moved into an event item by the stream (saves a write)
    final_events = UnicodeAttribute(null=True)
    output = UnicodeAttribute(null=True)
    output_key = UnicodeAttribute(null=True)
    claim_pk = UnicodeAttribute(null=True)
    claim_sk = UnicodeAttribute(null=True)
    # --- the plan reservation of an `apply_pending` run (services/twophase.py) ---
    #: the runner holding the plan context
    reservation_owner = UnicodeAttribute(null=True)
    #: epoch seconds; the runner extends it by heartbeating, it lapses without
    reservation_expires_at = NumberAttribute(null=True)
    #: the plan was confirmed: the reservation owner may claim the apply phase
    confirmed = BooleanAttribute(null=True)

    claim_index = ClaimIndex()


class EventItem(FleetrunModel):
    """A batch of events written together (one write per agent post)."""

    class Meta(_Meta):
        pass

    task_id = UnicodeAttribute()
    #: JSON list of events
    events = UnicodeAttribute()


class IdempotencyItem(FleetrunModel):
    class Meta(_Meta):
        pass

    task_id = UnicodeAttribute()
    request_hash = UnicodeAttribute()
    expires_at = NumberAttribute()


class NodeItem(FleetrunModel):
    class Meta(_Meta):
        pass

    node_id = UnicodeAttribute()
    labels = MapAttribute[str, Any](default=dict)
    slots = NumberAttribute(default=1)
    status = UnicodeAttribute(default="idle")
    token_hash = UnicodeAttribute()
    created_at = UnicodeAttribute()
    last_seen_at = UnicodeAttribute(null=True)
    list_pk = UnicodeAttribute(null=True)
    list_sk = UnicodeAttribute(null=True)
    # --- inventory (domain/node_states.py sets and clears these with the status) ---
    status_changed_at = UnicodeAttribute(null=True)
    #: the open allocation (its item is NODE#<id> / `allocation_sk`)
    allocation_id = UnicodeAttribute(null=True)
    allocated_to = UnicodeAttribute(null=True)
    allocated_at = UnicodeAttribute(null=True)
    allocation_sk = UnicodeAttribute(null=True)
    #: the machine.reclaim task of a node in maintenance, and its outcome once it failed
    reclaim_task_id = UnicodeAttribute(null=True)
    reclaim_user = UnicodeAttribute(null=True)
    reclaim_outcome = UnicodeAttribute(null=True)
    #: the status an offline node returns to when its agent is seen again
    offline_from = UnicodeAttribute(null=True)
    offline_since = UnicodeAttribute(null=True)

    list_index = ListIndex()


class RateBucket(FleetrunModel):
    class Meta(_Meta):
        pass

    hits = NumberAttribute(default=0)
    expires_at = NumberAttribute()


class ImageItem(FleetrunModel):
    """One tag of the image catalog synced from Harbor; a tag gone from Harbor keeps its row
    with `removed_at` set."""

    class Meta(_Meta):
        pass

    project = UnicodeAttribute()
    #: the full repository name, `project/repo`
    repository = UnicodeAttribute()
    tag = UnicodeAttribute()
    digest = UnicodeAttribute()
    size_bytes = NumberAttribute(default=0)
    pushed_at = UnicodeAttribute(null=True)
    #: when a sync last wrote the row (first seen, changed, removed or seen again)
    synced_at = UnicodeAttribute()
    removed_at = UnicodeAttribute(null=True)
    list_pk = UnicodeAttribute(null=True)
    list_sk = UnicodeAttribute(null=True)

    list_index = ListIndex()


class AllocationItem(FleetrunModel):
    """One allocation of a node to a user, with start and end (open while `ended_at` is null).

    Listed by end month (`ALLOCEND#<yyyy-mm>`, open ones under `ALLOCEND#OPEN`) so a month's
    usage report reads only allocations that ended in or after that month, plus open ones.
    """

    class Meta(_Meta):
        pass

    allocation_id = UnicodeAttribute()
    node_id = UnicodeAttribute()
    user = UnicodeAttribute()
    started_at = UnicodeAttribute()
    ended_at = UnicodeAttribute(null=True)
    #: `release` or `reclaim`
    ended_by = UnicodeAttribute(null=True)
    list_pk = UnicodeAttribute(null=True)
    list_sk = UnicodeAttribute(null=True)

    list_index = ListIndex()


class ConcurrencyKeyItem(FleetrunModel):
    """`CKEY#<key>`: sk `HOLDER` names the task holding the key; sk `Q#<queued_at>#<task id>`
    are the tasks waiting for it, oldest first."""

    class Meta(_Meta):
        pass

    task_id = UnicodeAttribute()
    #: holder only: the task attempt that acquired the key, and the holder's queue entry
    attempt = NumberAttribute(null=True)
    entry = UnicodeAttribute(null=True)


def reset_connections() -> None:
    """Drop cached connections (a new moto mock or endpoint needs fresh clients)."""
    models: tuple[type[Model], ...] = (FleetrunModel, *ALL_MODELS)
    for model in models:
        model._connection = None


def task_pk(task_id: str) -> str:
    return f"TASK#{task_id}"


def run_sk(node: str) -> str:
    return f"RUN#{node}"


def node_pk(node_id: str) -> str:
    return f"NODE#{node_id}"


class ScheduleItem(FleetrunModel):
    """A user schedule (`POST /v1/schedules`); its EventBridge Scheduler schedule is named `schedule_id`."""

    class Meta(_Meta):
        pass

    schedule_id = UnicodeAttribute()
    name = UnicodeAttribute()
    owner = UnicodeAttribute()
    expression = UnicodeAttribute()
    #: the `POST /v1/tasks` body as JSON, secret parameter values replaced by "***"
    task = UnicodeAttribute()
    #: the secret parameter values, envelope-encrypted (see secrets.py)
    sealed_secrets = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    list_pk = UnicodeAttribute(null=True)
    list_sk = UnicodeAttribute(null=True)
    owner_pk = UnicodeAttribute(null=True)
    owner_sk = UnicodeAttribute(null=True)

    list_index = ListIndex()
    owner_index = OwnerIndex()


def schedule_pk(schedule_id: str) -> str:
    return f"SCHEDULE#{schedule_id}"


# --- real time (WebSocket API) ---
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


class WsSubscriptionItem(FleetrunModel):
    """One connection's subscription to a task (or to `*`), in the task's subscriber partition."""

    class Meta(_Meta):
        pass

    user_id = UnicodeAttribute()
    #: `*` subscribers who are not admin receive only their own tasks
    admin = BooleanAttribute(default=False)
    expires_at = NumberAttribute()


# --- notifications (chalicelib/notify) ---------------------------------------------------
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
ALL_MODELS: tuple[type[FleetrunModel], ...] = (
    TaskItem, TargetChunk, NodeRunItem, EventItem, IdempotencyItem, NodeItem, RateBucket, ImageItem,
    AllocationItem, ConcurrencyKeyItem, ScheduleItem, WsConnectionItem, WsSubscriptionItem,
    SubscriptionItem, SubscriptionEventItem, DeliveryItem,
)
