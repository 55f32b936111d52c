"""Items of the fleet and its administration: nodes and their allocations, the image catalog,
concurrency keys, schedules, rate buckets."""

from __future__ import annotations

from typing import Any

from pynamodb.attributes import ListAttribute, MapAttribute, NumberAttribute, UnicodeAttribute

from chalicelib.store.models.base import FleetrunModel, ListIndex, OwnerIndex, _Meta


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
    #: bumped by every write that changes what selectors see (labels, maintenance), guarded by
    #: the value read: the label index items written with it are exact (store/label_index.py)
    selector_rev = NumberAttribute(null=True)

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
    #: `release`, `reclaim` or `deregister`
    ended_by = UnicodeAttribute(null=True)
    list_pk = UnicodeAttribute(null=True)
    list_sk = UnicodeAttribute(null=True)

    list_index = ListIndex()


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


class ConcurrencyKeyItem(FleetrunModel):
    """`CKEY#<key>`: sk `HOLDER` names the task holding the key; sk `Q#<queued_at>#<task id>`
    are the tasks waiting for it, oldest first."""

    class Meta(_Meta):
        pass

    task_id = UnicodeAttribute()
    #: holder only: the task attempt that acquired the key, and the holder's queue entry
    attempt = NumberAttribute(null=True)
    entry = UnicodeAttribute(null=True)


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


class RateBucket(FleetrunModel):
    """A user's allowed writes per epoch second, for the seconds that still count (ratelimit.py):
    `seconds[i]` saw `counts[i]` writes. `revision` changes on every write (the condition of the
    next one); a random token, not a counter, so an item TTL deleted and written again never
    matches a revision read before."""

    class Meta(_Meta):
        pass

    seconds = ListAttribute(of=NumberAttribute, default=list)
    counts = ListAttribute(of=NumberAttribute, default=list)
    revision = UnicodeAttribute()
    expires_at = NumberAttribute()
