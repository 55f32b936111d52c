"""Task items and what lives in a task's partition: target chunks, node runs, events; and the
idempotency record of the request that created a task."""

from __future__ import annotations

from typing import Any, ClassVar

from pynamodb.attributes import (
    BinaryAttribute,
    BooleanAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
)

from chalicelib.store.models.base import (
    ActiveIndex,
    ClaimIndex,
    DueIndex,
    FleetrunModel,
    ListIndex,
    OwnerIndex,
    _Meta,
)


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
    #: the version of the type the task was created with (services/type_registry.py)
    type_version = NumberAttribute(default=1)
    name = UnicodeAttribute(null=True)
    owner = UnicodeAttribute()
    status = UnicodeAttribute()
    stage = UnicodeAttribute(null=True)
    stage_at = UnicodeAttribute(null=True)
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
    #: the partitions new runs of the task are spread over, and its earlier values (store/run_partitions.py)
    run_shards = NumberAttribute(default=1)
    run_shards_before = ListAttribute(of=NumberAttribute, null=True)
    created_at = UnicodeAttribute()
    started_at = UnicodeAttribute(null=True)
    completed_at = UnicodeAttribute(null=True)
    updated_at = UnicodeAttribute()
    error_message = UnicodeAttribute(null=True)
    # --- aggregated from the stream (see services/aggregation.py) ---
    counts = RunCounts(default=RunCounts)
    progress_sum = NumberAttribute(default=0)
    counted_ver = NumberAttribute(default=0)
    stats_ver = NumberAttribute(default=-1)
    counted_at = UnicodeAttribute(null=True)
    recounted_at = UnicodeAttribute(null=True)
    ver = NumberAttribute(default=0)
    # --- dispatch ---
    dispatch_triggered = BooleanAttribute(default=False)
    dispatched_attempt = NumberAttribute(default=0)
    created_count = NumberAttribute(default=0)
    skipped_count = NumberAttribute(default=0)
    #: ordinals below `max_concurrency + finished - finished_base` may be claimed
    finished_base = NumberAttribute(default=0)
    ordinal_next = NumberAttribute(default=0)
    halted = BooleanAttribute(default=False)
    #: the dispatch in progress, in chunks (services/dispatch_chunks.py)
    dispatch_id = UnicodeAttribute(null=True)
    dispatch_first_chunk = NumberAttribute(default=0)
    dispatch_first_ordinal = NumberAttribute(default=0)
    dispatch_total = NumberAttribute(default=0)
    dispatch_chunks = NumberAttribute(default=0)
    dispatched_through = NumberAttribute(default=0)
    dispatch_progress_at = UnicodeAttribute(null=True)
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
    #: the `target_selector` of the request as JSON, re-resolved by `dispatch {"selector": true}`
    target_selector = UnicodeAttribute(null=True)
    # --- runs that can't hang (services/claim_timeouts.py, services/waiting.py) ---
    claim_timeout_seconds = NumberAttribute(default=600)
    #: epoch seconds: the sweeper reads the pending runs again no sooner than this
    claim_check_at = NumberAttribute(null=True)
    #: when the concurrency window last let more runs start
    window_moved_at = UnicodeAttribute(null=True)
    #: the task this one waits for on its concurrency key, and its owner
    waiting_for_task_id = UnicodeAttribute(null=True)
    waiting_for_owner = UnicodeAttribute(null=True)
    # --- indexes ---
    list_pk = UnicodeAttribute(null=True)
    list_sk = UnicodeAttribute(null=True)
    owner_pk = UnicodeAttribute(null=True)
    owner_sk = UnicodeAttribute(null=True)
    active_pk = UnicodeAttribute(null=True)
    active_sk = UnicodeAttribute(null=True)
    #: the table's TTL: set when the task ends, cleared by a retry (domain/retention.py)
    expires_at = NumberAttribute(null=True)
    #: the sweeper's next look at the task (domain/due.py; sparse: active tasks only)
    due_pk = UnicodeAttribute(null=True)
    due_sk = UnicodeAttribute(null=True)

    list_index = ListIndex()
    owner_index = OwnerIndex()
    active_index = ActiveIndex()
    due_index = DueIndex()

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
    #: numbers the run's writes (domain/run_transitions.py); the aggregator counts each once
    ver = NumberAttribute(default=0)
    #: the table's TTL: set by the run's terminal write (domain/retention.py)
    expires_at = NumberAttribute(null=True)
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
    #: epoch seconds the run became claimable (entered `pending`); cleared once claimed
    claimable_at = NumberAttribute(null=True)
    #: written by versions before the lease watches (domain/due.py); nothing reads a run's entry now
    due_pk = UnicodeAttribute(null=True)
    due_sk = UnicodeAttribute(null=True)

    claim_index = ClaimIndex()
    due_index = DueIndex()


class EventItem(FleetrunModel):
    """A batch of events written together (one write per agent post)."""

    class Meta(_Meta):
        pass

    task_id = UnicodeAttribute()
    #: JSON list of events ("" when `packed` holds them)
    events = UnicodeAttribute()
    #: the same JSON, zlib-compressed, for bodies over store/events.PACK_ABOVE bytes (write units
    #: count stored bytes: a node's completion events shrink several times)
    packed = BinaryAttribute(null=True, legacy_encoding=False)
    #: the table's TTL, set when written (domain/retention.py)
    expires_at = NumberAttribute(null=True)


class LeaseWatchItem(FleetrunModel):
    """Runs whose lease or plan reservation lapses in one second, of one shard (domain/due.py):
    `LEASES#<shard>` / `<second>#<id>`, written in batches by the stream and the sweeper."""

    class Meta(_Meta):
        pass

    #: `<task id>/<node>` of each run (domain/due.py `run_item_id`)
    runs = ListAttribute(of=UnicodeAttribute, default=list)
    #: the table's TTL: a watch nobody read goes (domain/retention.py)
    expires_at = NumberAttribute(null=True)


class IdempotencyItem(FleetrunModel):
    class Meta(_Meta):
        pass

    task_id = UnicodeAttribute()
    request_hash = UnicodeAttribute()
    expires_at = NumberAttribute()
