"""Tasks and node runs as the services see them: plain records a repository reads and creates.

The attribute names are the stored ones (tests/unit/test_records.py keeps them in step with
the DynamoDB models), so a transition's fields and guards name them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from chalicelib.domain.statuses import RUN_STATUSES


def _zero_counts() -> dict[str, int]:
    return dict.fromkeys(RUN_STATUSES, 0)


@dataclass
class Task:
    task_id: str
    type: str
    owner: str
    status: str
    created_at: str
    updated_at: str
    max_concurrency: int
    #: the version of the type the task was created with (built-ins: 1); it keeps that version's steps
    type_version: int = 1
    name: str | None = None
    stage: str | None = None
    #: when the run that entered `stage` wrote it (the aggregator keeps the latest)
    stage_at: str | None = None
    attempt: int = 1
    priority: int = 5
    max_errors: str = "0"
    concurrency_key: str | None = None
    runner_node: str | None = None
    tags: list[str] = field(default_factory=list)
    #: parameters as JSON with secret values replaced by "***"
    parameters: str = "{}"
    #: secret parameter values, envelope-encrypted (see secrets.py)
    sealed_secrets: str | None = None
    target_count: int = 0
    target_chunks: int = 0
    #: the partitions new runs of the task are spread over: chosen at creation, larger once
    #: dispatch requests grew the task past it (store/run_partitions.py)
    run_shards: int = 1
    #: the earlier values of `run_shards`, oldest first (the runs made then stay where they are)
    run_shards_before: list[int] | None = None
    started_at: str | None = None
    completed_at: str | None = None
    error_message: str | None = None
    # --- aggregated from the stream (services/aggregation.py) ---
    counts: dict[str, int] = field(default_factory=_zero_counts)
    progress_sum: int = 0
    #: how many counter writes the aggregator made (finishing decides on the counts of one of them)
    counted_ver: int = 0
    #: the `ver` of the last task write whose status change the statistics count
    stats_ver: int = -1
    #: when the aggregator last moved the counters, and when a recount last checked them
    counted_at: str | None = None
    recounted_at: str | None = None
    #: numbers the task's own writes (task_transitions.task_change)
    ver: int = 0
    # --- dispatch and the concurrency window (domain/window.py) ---
    dispatch_triggered: bool = False
    dispatched_attempt: int = 0
    created_count: int = 0
    skipped_count: int = 0
    finished_base: int = 0
    ordinal_next: int = 0
    halted: bool = False
    #: the dispatch in progress, in chunks (services/dispatch_chunks.py): its id, where its nodes
    #: start in the target chunks and in the ordinals, how many, the chunks done and when
    dispatch_id: str | None = None
    dispatch_first_chunk: int = 0
    dispatch_first_ordinal: int = 0
    dispatch_total: int = 0
    dispatch_chunks: int = 0
    dispatched_through: int = 0
    dispatch_progress_at: str | None = None
    #: scope of the last new attempt (`failed`, `all`, `replan`): what the dispatch job resets
    retry_scope: str | None = None
    idempotency_key: str | None = None
    # --- two-phase and concurrency keys ---
    plan_confirmed: bool | None = None
    awaiting_since: str | None = None
    queued_at: str | None = None
    #: the `target_selector` of the request as JSON (`{"labels": {...}}`), None without one
    target_selector: str | None = None
    # --- runs that can't hang (services/claim_timeouts.py, services/waiting.py) ---
    #: how long a node run may wait unclaimed once it is claimable, then it ends `timed_out`
    claim_timeout_seconds: int = 600
    #: epoch seconds: the sweeper reads the pending runs again no sooner than this
    claim_check_at: float | None = None
    #: when the concurrency window last let more runs start (the aggregator and the sweeper stamp it)
    window_moved_at: str | None = None
    #: the task this one waits for on its concurrency key (the holder, or the task ahead), and its owner
    waiting_for_task_id: str | None = None
    waiting_for_owner: str | None = None
    #: read only: when the sweeper looks at the task next (domain/due.py), as the transitions wrote it
    due_sk: str | None = None


@dataclass
class NodeRun:
    task_id: str
    node: str
    runner: str
    type: str
    owner: str
    status: str
    attempt: int = 1
    #: the task attempt (retry generation) this run belongs to
    generation: int = 1
    ordinal: int = 0
    phase: str = "run"
    step: str | None = None
    progress: int = 0
    error_message: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    updated_at: str | None = None
    lease_owner: str | None = None
    lease_expires_at: int | None = None
    cancel_requested: bool = False
    #: which dispatch created the run (a resumed dispatch counts its own runs as created)
    dispatch_id: str | None = None
    #: the action of the last transition (see domain/retry_counting.py)
    last_action: str | None = None
    #: the task attempt whose retry reset this run (makes a resumed retry dispatch deterministic)
    reset_gen: int | None = None
    priority: int = 5
    #: events sent with the completion, moved into an event item by the stream
    final_events: str | None = None
    #: numbers the run's writes (run_transitions); the aggregator counts each once
    ver: int = 0
    output: str | None = None
    output_key: str | None = None
    claim_pk: str | None = None
    claim_sk: str | None = None
    reservation_owner: str | None = None
    reservation_expires_at: float | None = None
    confirmed: bool | None = None
    #: epoch seconds the run became claimable (entered `pending`); cleared once claimed
    claimable_at: float | None = None


@dataclass
class Node:
    """A machine of the fleet (domain/node_states.py says which fields go with which status)."""

    node_id: str
    token_hash: str
    created_at: str
    status: str = "idle"
    labels: dict[str, str] = field(default_factory=dict)
    slots: int = 1
    last_seen_at: str | None = None
    status_changed_at: str | None = None
    #: the open allocation (its item is NODE#<id> / `allocation_sk`)
    allocation_id: str | None = None
    allocated_to: str | None = None
    allocated_at: str | None = None
    allocation_sk: str | None = None
    #: the machine.reclaim task of a node in maintenance, and its outcome once it failed
    reclaim_task_id: str | None = None
    reclaim_user: str | None = None
    reclaim_outcome: str | None = None
    #: the status an offline node returns to when its agent is seen again
    offline_from: str | None = None
    offline_since: str | None = None
    #: what selectors see of the node changed this many times (store/label_index.py)
    selector_rev: int | None = None


@dataclass(frozen=True)
class IdempotencyRecord:
    """What `Idempotency-Key` remembers: the task a key created and the request it came with."""

    owner: str
    key: str
    task_id: str
    request_hash: str
    expires_at: int


def record_fields(record_type: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in fields(record_type))


def from_values(record_type: type[Any], values: dict[str, Any]) -> Any:
    """A record from stored values (unknown names ignored, numbers as int where whole)."""
    known = {}
    for name in record_fields(record_type):
        if name in values and values[name] is not None:
            known[name] = _plain(values[name])
    return record_type(**known)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
