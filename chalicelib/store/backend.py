"""The storage engine under the task and run repositories, and which one is in use.

Two implementations keep the same contract (tests/contract): `DynamoBackend` (PynamoDB, the
single table; what runs on AWS, on moto and in the local runtime) and `MemoryBackend`
(dicts under a lock, for fast unit tests of the service rules). The repositories
(`store/tasks.py`, `store/runs.py`) hold the domain logic of reads, creation and
transitions; a backend only stores records and applies `Change`s atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.domain.records import IdempotencyRecord, NodeRun, Task
from chalicelib.domain.writes import Change

if TYPE_CHECKING:
    from chalicelib.store.run_partitions import Layout

#: adds a write to an open DynamoDB transaction (the node a reclaim puts in maintenance, a
#: concurrency key's queue entry): writes of other item kinds that happen with a task's creation
TxPart = Callable[[Any], None]


class EventBatch(Protocol):
    """Events written together as one item (store/events.py builds them)."""

    task_id: str
    sk: str
    events: str


@dataclass(frozen=True)
class LeaseWatch:
    """Runs whose lease or reservation lapses in one second, of one shard (domain/due.py)."""

    shard: int
    #: `<second, 10 digits>#<id>`
    sk: str
    #: (task id, node) of each run
    runs: tuple[tuple[str, str], ...]


class Backend(Protocol):
    # --- tasks ---
    def get_task(self, task_id: str, consistent: bool = True) -> Task | None: ...

    def create_task(self, task: Task, targets: Sequence[str], idempotency: IdempotencyRecord | None, event: EventBatch,
                    alongside: Sequence[Any] = ()) -> None:
        """Task, target chunks, first event, idempotency record (and `alongside` writes) in
        one transaction. Raises IdempotencyRecordExists; ConditionFailed when a write
        `alongside` does not hold."""

    def get_idempotency(self, owner: str, key: str) -> IdempotencyRecord | None: ...

    def load_targets(self, task_id: str) -> list[str]: ...

    def load_targets_of(self, chunks: Mapping[str, int]) -> dict[str, list[str]]:
        """The targets of several tasks (task id -> its `target_chunks`) in as few reads as the
        store allows: a page of tasks is not one read per task."""

    def add_targets(self, change: Change, task_id: str, nodes: Sequence[str], first_chunk: int) -> None:
        """`change` (growing the task) together with new target chunks. Raises ConditionFailed."""

    def load_target_chunk(self, task_id: str, number: int) -> list[str]:
        """The nodes of one target chunk (`TGT#<number>`), [] when there is none: one read."""

    def active_task_ids(self) -> Iterator[str]: ...

    def due_entries(self, due_pk: str, upto: str, limit: int) -> list[tuple[str, str | None, str]]:
        """(task id, node or None for a task, due_sk) of the due-index partition `due_pk` up to
        `upto`, oldest first, at most `limit` (domain/due.py; eventually consistent)."""

    def put_lease_watches(self, watches: Sequence[LeaseWatch]) -> None:
        """Write the watches (one with the key of another replaces it: a replayed batch's)."""

    def lease_watches(self, shard: int, upto: str, limit: int) -> list[LeaseWatch]:
        """A shard's watches with a key up to `upto`, oldest first, at most `limit`."""

    def delete_lease_watches(self, watches: Sequence[LeaseWatch]) -> None: ...

    # --- runs ---
    def get_run(self, task_id: str, node: str, consistent: bool = True) -> NodeRun | None: ...

    def get_runs(self, keys: Sequence[tuple[str, str]]) -> list[NodeRun]:
        """The runs of `keys` ((task id, node)) that exist, read consistently, in as few
        requests as the store allows (any order)."""

    def put_run_if_absent(self, run: NodeRun) -> bool:
        """Create the run unless one exists for (task, node). Returns whether it did."""

    def runs_of(self, task_id: str, status: str | None = None,
                partitions: range | None = None) -> Iterator[NodeRun]:
        """The task's runs (of `status`), partition by partition; only those of the run
        partitions `partitions` (store/run_partitions.py) when given."""

    def claimable(self, runner: str, after: str | None, limit: int) -> list[tuple[str, str, str]]:
        """(task id, node, claim_sk) of a runner's claimable runs, best first, after `after`."""

    def run_layout(self, task_id: str) -> Layout:
        """The partitions the task's runs are spread over (store/run_partitions.py); one for no task."""

    # --- events ---
    def put_events(self, batch: EventBatch) -> None:
        """Write one batch of events (an append: batch ids never repeat)."""

    # --- changes ---
    def update(self, change: Change) -> dict[str, Any] | None:
        """Apply one change as one conditional write; the item's values after it, or None
        when its guard did not hold. Raises ConditionFailed(conflict=True) on a conflict."""

    def commit(self, changes: Sequence[Change], events: Sequence[EventBatch] = ()) -> None:
        """Apply every change and write the events in one transaction: all or nothing.
        Raises ConditionFailed (`conflict` when another transaction interfered)."""


def first_look(task: Task) -> tuple[str, str]:
    """The due-index keys a new task is written with: the sweeper looks at it once the
    undispatched grace has passed (its dispatch makes it due sooner: domain/due.py)."""
    from chalicelib import clock, config
    from chalicelib.domain import due

    return due.task_due_keys(task.task_id, clock.parse_rfc3339(task.created_at) + config.undispatched_grace_seconds())


_current: Backend | None = None


def current() -> Backend:
    """The backend in use: DynamoDB unless a test installed another."""
    global _current
    if _current is None:
        from chalicelib.store.dynamo import DynamoBackend

        _current = DynamoBackend()
    return _current


def use(backend: Backend | None) -> None:
    """Install `backend` (None: back to DynamoDB on next use)."""
    global _current
    _current = backend
