"""Where a task's node runs and their events live: a large task's partition, sharded for writes.

A task gets `run_shards` (S) when it is created (`shards_for` its target count):
- S == 1 (at most RUNS_PER_PARTITION targets): runs, events and the task item share `TASK#<id>`,
  as before sharding existed (items written before it carry no `run_shards`: 1).
- S > 1: the run of `node` lives in `TASK#<id>#R<s>`, s = crc32(node) mod S (stable across
  processes, unlike `hash`), and so do the events the node's agent posts and the completion
  events the stream moves out of its run. The counters' marker items are spread over the
  partitions of the task's first S by bucket (store/counters.py `marker_pk`). The task item, its
  target chunks and the service's own events (`task.created`, `task.dispatched`…) stay in
  `TASK#<id>`.

A task grown by dispatch requests (services/backfill.py) past what its S holds gets a larger S
in the same write that adds the targets (`grown`: at least double, at most MAX_RUN_SHARDS, so a
task has at most 7 generations). Runs made from then on use the new S; a run never moves, so a
run made before lives where its generation put it: `run_shards_before` keeps the earlier S
values, and the `Layout` of a task names every partition (`pks`, a superset of each earlier
generation's) and, for a node, the partitions its run may be in (`candidates`, newest first).
The events a node's agent posts go to the partition the newest generation gives the node (the
listing reads every partition). Only a grown task has more than one candidate: the store finds
which one holds the run with one read and remembers it (a run's key never changes). A container
may hold a layout from before a growth: every reader of a task's partitions (listings, walks,
recounts) reads the task item first, which remembers its newer layout; a run read by key that
misses, and a run write that is rejected, read the layout afresh and try once more when it grew
(store/dynamo.py).

Why these numbers: a node run writes its partition about 6 times (claim, heartbeat, events,
completion, its completion events, the create), so a partition of RUNS_PER_PARTITION runs stays
under 300 writes/s even when all of its runs go through in the same second; at most
MAX_RUN_SHARDS partitions keep a listing that merges them (events, runs) bounded. A
10,000-node task gets 64 partitions of ~156 runs: at 1,000 node runs/s spread by the hash,
~16 runs/s each, ~100 writes/s.

Every writer keys a run from (task id, node) and needs the layout: `DynamoBackend.run_layout`
reads it once per container and task (a projected GetItem) and remembers it here; reading a task
item remembers it too, so a heartbeat in a warm container reads nothing more.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from chalicelib.store.models import task_pk

#: a task with more target nodes than this gets several run partitions
RUNS_PER_PARTITION: Final = 48
#: the most run partitions of one task (listings of runs and events read each one)
MAX_RUN_SHARDS: Final = 64
#: task ids whose layout a container remembers (a layout only ever grows: no expiry needed),
#: and runs of grown tasks whose partition it found
_REMEMBERED_MAX: Final = 50_000

_known: dict[str, tuple[int, ...]] = {}
_located: dict[tuple[str, str], str] = {}
_lock = threading.Lock()


def shards_for(target_count: int, per_partition: int | None = None) -> int:
    """The run partitions of a new task of `target_count` nodes."""
    per = per_partition or RUNS_PER_PARTITION
    if target_count <= per:
        return 1
    return min(MAX_RUN_SHARDS, -(-target_count // per))


def grown(history: Sequence[int], target_count: int) -> tuple[int, ...]:
    """The S of each generation of a task whose targets grow to `target_count`: `history` as it
    is while its last S holds them, else with a new S at least twice the last (at most
    MAX_RUN_SHARDS)."""
    current = int(history[-1])
    needed = shards_for(target_count)
    if needed <= current:
        return tuple(int(s) for s in history)
    return (*(int(s) for s in history), min(MAX_RUN_SHARDS, max(needed, 2 * current)))


@dataclass(frozen=True)
class Layout:
    """A task's run partitions: the S of each generation, oldest first (the last makes new runs)."""

    task_id: str
    history: tuple[int, ...] = (1,)

    @classmethod
    def of(cls, task_id: str, stored: Any) -> Layout:
        """The layout `stored` (a task record or item) holds: its `run_shards` and `run_shards_before`."""
        before: Sequence[Any] = stored.run_shards_before or ()
        return cls(task_id, (*(int(s) for s in before), max(1, int(stored.run_shards or 1))))

    @property
    def current(self) -> int:
        return self.history[-1]

    @property
    def first(self) -> int:
        """The S the task was created with: where its counters' marker items live, always."""
        return self.history[0]

    def new_pk(self, node: str) -> str:
        """Where a run of `node` made now goes."""
        return run_pk(self.task_id, node, self.current)

    def candidates(self, node: str) -> list[str]:
        """The partitions the run of `node` may be in, newest generation first (one but for a
        grown task)."""
        return list(dict.fromkeys(run_pk(self.task_id, node, s) for s in reversed(self.history)))

    def pks(self) -> list[str]:
        """Every partition holding runs of the task: each generation's, in shard order."""
        return list(dict.fromkeys(pk for s in self.history for pk in run_pks(self.task_id, s)))

    def event_pks(self) -> list[str]:
        """Every partition holding events of the task: the task's own, then its run partitions."""
        return list(dict.fromkeys([task_pk(self.task_id), *self.pks()]))


def shard_of(node: str, shards: int) -> int:
    """The run partition of `node` among `shards` (0 when there is one)."""
    return zlib.crc32(node.encode()) % shards if shards > 1 else 0


def shard_pk(task_id: str, shard: int) -> str:
    return f"{task_pk(task_id)}#R{shard}"


def run_pk(task_id: str, node: str, shards: int) -> str:
    """The partition key of the run of `node` (and of the events its agent posts)."""
    return task_pk(task_id) if shards <= 1 else shard_pk(task_id, shard_of(node, shards))


def run_pks(task_id: str, shards: int) -> list[str]:
    """Every partition key holding runs of the task, in shard order."""
    return [task_pk(task_id)] if shards <= 1 else [shard_pk(task_id, s) for s in range(shards)]


def is_task_pk(pk: str) -> bool:
    """Whether `pk` is a task's partition, its own (`TASK#<id>`) or one of its runs' (`TASK#<id>#R<s>`)."""
    return pk.startswith("TASK#")


def task_id_of(pk: str) -> str:
    """The task id of `TASK#<id>` or `TASK#<id>#R<s>` (service-made ULIDs hold no `#`)."""
    return pk.removeprefix("TASK#").split("#", 1)[0]


def remember(layout: Layout) -> None:
    """Keep the task's layout (the longer history wins: a read older than a growth never undoes it)."""
    with _lock:
        known = _known.get(layout.task_id)
        if known is not None and len(known) >= len(layout.history):
            return
        if len(_known) >= _REMEMBERED_MAX:
            _known.clear()
        _known[layout.task_id] = layout.history


def remembered(task_id: str) -> Layout | None:
    known = _known.get(task_id)
    return Layout(task_id, known) if known is not None else None


def remember_location(task_id: str, node: str, pk: str) -> None:
    """The partition the run of `node` was found in (a grown task's run: the key never changes)."""
    with _lock:
        if len(_located) >= _REMEMBERED_MAX:
            _located.clear()
        _located[(task_id, node)] = pk


def location(task_id: str, node: str) -> str | None:
    return _located.get((task_id, node))


def forget_all() -> None:
    """Tests reuse task ids across fresh tables."""
    with _lock:
        _known.clear()
        _located.clear()
