"""PynamoDB models of the single table (one module per area: base, tasks, fleet, notify). Keys:

| item            | pk                  | sk               |
|-----------------|---------------------|------------------|
| task            | TASK#<id>           | META             | (owner-index OWNER#<owner>)
| target chunk    | TASK#<id>           | TGT#<00000>      |
| node run        | TASK#<id>[#R<s>]    | RUN#<node>       | (#R<s>: run_shards > 1, s = crc32(node) mod run_shards)
| events          | TASK#<id>[#R<s>]    | EVT#<ulid>, EVM#<seed> | (a node's: its run's partition)
| counter marks   | TASK#<id>[#R<b mod run_shards>] | CNT#<b>  | (store/counters.py `marker_pk`)
| idempotency     | IDEM#<owner>#<key>  | IDEM             |
| node (machine)  | NODE#<id>           | META             |
| allocation      | NODE#<id>           | ALLOC#<start>#<ulid> | (list-index: ALLOCEND#OPEN or ALLOCEND#<end month>)
| statistics      | STATS#<scope>       | <shard>          | (raw boto3: dynamic attribute names, see counters.py)
| rate bucket     | RATE#<user>         | WINDOW           | (TTL; the writes of the last 61 seconds)
| schedule        | SCHEDULE#<id>       | META             | (list-index SCHEDULE, owner-index SCHEDULES#<owner>)
| catalog image   | IMG#<project>       | <repository>:<tag> | (list-index `IMAGE` / `<repository>:<tag>`)
| fleet snapshot  | SNAPSHOT#fleet      | META, NODE#<id>  | (raw boto3: dynamic attribute names, see store/snapshot.py)
| ws connection   | WSCONN#<conn id>    | META             | (TTL; list-index WSCONN / <token exp>#<conn id>)
| ws subscription | WSSUB#<task or *>   | <conn id>        | (TTL; one query finds a task's subscribers)
| subscription    | SUB#<id>            | META             | (list-index SUBS, owner-index SUBOWNER#<owner>)
| subscription by event | SUBEVT#<event>#ALL or SUBEVT#<event>#OWN#<owner> | <subscription id> |
| delivery log    | SUB#<id>            | DLV#<ulid>       | (TTL)
| concurrency key | CKEY#<key>          | HOLDER, Q#<queued_at>#<task id> | holder and FIFO of a key (keys.py) |
| label index     | LABEL#<key>#<value> | <node id>        | one per label of a node (store/label_index.py) |
| task type       | TTYPE#<name>        | HEAD, V#<0000000001> | (models/task_types.py; list-index TTYPES / <name>) |

A large task's runs, their events and its counter marks are spread over `run_shards` partitions
so that no key takes a write per node run of the whole task (store/run_partitions.py). A task
grown past its partitions has a larger `run_shards` for the runs made after; `run_shards_before`
lists the earlier values, and the counter marks keep the first.

A statistics `<scope>` is `all`, `type:<type>`, `owner:<owner>` or `owner:<owner>|type:<type>`,
and an hour of one appends `|hour:<yyyy-mm-ddThh>`.

Every component a user chooses — `<owner>` and `<user>` (a JWT `sub`), `<key>` (an `Idempotency-Key` or a
concurrency key), `<type>`, `<event>`, `<project>`, a WebSocket `<task or *>` — is written
through `key_parts.part` (`%`, `#` and `|` percent-encoded), so no choice of strings makes two
different tuples spell one key: `IDEM#alice#k123#1` is alice's key `k123#1`, and the user
`alice#k123`'s key `1` is `IDEM#alice%23k123#1`. A label's `<key>` and `<value>` too: the
label `a#b` = `c` and the label `a` = `b#c` are `LABEL#a%23b#c` and `LABEL#a#b%23c`. Ids the
service generates (tasks, schedules, subscriptions, allocations, events, deliveries: ULIDs),
timestamps and node ids (checked against `^[A-Za-z0-9._:-]{1,128}$` when registered) go in as
they are, and so do the repository and tag names a Harbor sync reads (Harbor's naming rules
allow none of `:`, `#`, `|`; not checked here).

Indexes: `list-index` (tasks and nodes newest first), `owner-index` (a user's tasks) — both
project keys and `base.LISTED_ATTRIBUTES` only: read the items by `store/index_reads.py` —
`claim-index` (sparse: only claimable runs, by runner, priority first), `active-index`
(sparse: non-terminal tasks; the sweeper's one-time due backfill), `due-index` (sparse, sharded
`DUE#<kind>#<n>` by due time: leases, reservations and task looks the sweeper reads,
domain/due.py; carries `task_id` and `node`).
"""

from __future__ import annotations

from pynamodb.models import Model

from chalicelib.store.models.base import (
    ALL_INDEXES,
    TTL_ATTRIBUTE,
    ActiveIndex,
    ClaimIndex,
    FleetrunModel,
    ListIndex,
    OwnerIndex,
    node_pk,
    owner_tasks_pk,
    run_sk,
    schedule_pk,
    task_pk,
)
from chalicelib.store.models.fleet import (
    AllocationItem,
    ConcurrencyKeyItem,
    ImageItem,
    NodeItem,
    RateBucket,
    ScheduleItem,
)
from chalicelib.store.models.labels import LabelItem
from chalicelib.store.models.notify import (
    DeliveryItem,
    SubscriptionEventItem,
    SubscriptionItem,
    WsConnectionItem,
    WsSubscriptionItem,
)
from chalicelib.store.models.task_types import TaskTypeItem
from chalicelib.store.models.tasks import (
    EventItem,
    IdempotencyItem,
    LeaseWatchItem,
    NodeRunItem,
    RunCounts,
    TargetChunk,
    TaskItem,
)

ALL_MODELS: tuple[type[FleetrunModel], ...] = (
    TaskItem, TargetChunk, NodeRunItem, EventItem, IdempotencyItem, NodeItem, RateBucket, ImageItem,
    AllocationItem, ConcurrencyKeyItem, ScheduleItem, WsConnectionItem, WsSubscriptionItem,
    SubscriptionItem, SubscriptionEventItem, DeliveryItem, LabelItem, TaskTypeItem, LeaseWatchItem,
)


def reset_connections() -> None:
    """Drop cached connections (a new moto mock or endpoint needs fresh clients)."""
    models: tuple[type[Model], ...] = (FleetrunModel, *ALL_MODELS)
    for model in models:
        model._connection = None


__all__ = [
    "ALL_INDEXES",
    "ALL_MODELS",
    "TTL_ATTRIBUTE",
    "ActiveIndex",
    "AllocationItem",
    "ClaimIndex",
    "ConcurrencyKeyItem",
    "DeliveryItem",
    "EventItem",
    "FleetrunModel",
    "IdempotencyItem",
    "ImageItem",
    "LabelItem",
    "LeaseWatchItem",
    "ListIndex",
    "NodeItem",
    "NodeRunItem",
    "OwnerIndex",
    "RateBucket",
    "RunCounts",
    "ScheduleItem",
    "SubscriptionEventItem",
    "SubscriptionItem",
    "TargetChunk",
    "TaskItem",
    "TaskTypeItem",
    "WsConnectionItem",
    "WsSubscriptionItem",
    "node_pk",
    "owner_tasks_pk",
    "reset_connections",
    "run_sk",
    "schedule_pk",
    "task_pk",
]
