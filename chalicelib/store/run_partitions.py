"""Where a task's node runs and their events live: a large task's partition, sharded for writes.

A task gets `run_shards` (S) when it is created and keeps it (`shards_for` its target count):
- S == 1 (at most RUNS_PER_PARTITION targets): runs, events and the task item share `TASK#<id>`,
  as before sharding existed (items written before it carry no `run_shards`: 1).
- S > 1: the run of `node` lives in `TASK#<id>#R<s>`, s = crc32(node) mod S (stable across
  processes, unlike `hash`), and so do the events the node's agent posts and the completion
  events the stream moves out of its run. The counters' marker items are spread over the same
  partitions by bucket (store/counters.py `marker_pk`). The task item, its target chunks and the
  service's own events (`task.created`, `task.dispatched`…) stay in `TASK#<id>`.

Why these numbers: a node run writes its partition about 6 times (claim, heartbeat, events,
completion, its completion events, the create), so a partition of RUNS_PER_PARTITION runs stays
under 300 writes/s even when all of its runs go through in the same second; at most
MAX_RUN_SHARDS partitions keep a listing that merges them (events, runs) bounded. A
10,000-node task gets 64 partitions of ~156 runs: at 1,000 node runs/s spread by the hash,
~16 runs/s each, ~100 writes/s.

Every writer keys a run from (task id, node) and needs S: `DynamoBackend.run_shards` reads it
once per container and task (a projected GetItem) and remembers it here; reading a task item
remembers it too, so a heartbeat in a warm container reads nothing more.
"""

from __future__ import annotations

import threading
import zlib
from typing import Final

from chalicelib.store.models import task_pk

#: a task with more target nodes than this gets several run partitions
RUNS_PER_PARTITION: Final = 48
#: the most run partitions of one task (listings of runs and events read each one)
MAX_RUN_SHARDS: Final = 64
#: task ids whose S a container remembers (a task's S never changes: no expiry needed)
_REMEMBERED_MAX: Final = 50_000

_known: dict[str, int] = {}
_lock = threading.Lock()


def shards_for(target_count: int, per_partition: int | None = None) -> int:
    """The run partitions of a new task of `target_count` nodes."""
    per = per_partition or RUNS_PER_PARTITION
    if target_count <= per:
        return 1
    return min(MAX_RUN_SHARDS, -(-target_count // per))


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


def event_pks(task_id: str, shards: int) -> list[str]:
    """Every partition key holding events of the task: the task's own, then its run partitions."""
    return [task_pk(task_id)] if shards <= 1 else [task_pk(task_id), *run_pks(task_id, shards)]


def is_task_pk(pk: str) -> bool:
    """Whether `pk` is a task's partition, its own (`TASK#<id>`) or one of its runs' (`TASK#<id>#R<s>`)."""
    return pk.startswith("TASK#")


def task_id_of(pk: str) -> str:
    """The task id of `TASK#<id>` or `TASK#<id>#R<s>` (service-made ULIDs hold no `#`)."""
    return pk.removeprefix("TASK#").split("#", 1)[0]


def remember(task_id: str, shards: int) -> None:
    with _lock:
        if len(_known) >= _REMEMBERED_MAX:
            _known.clear()
        _known[task_id] = max(1, int(shards))


def remembered(task_id: str) -> int | None:
    return _known.get(task_id)


def forget_all() -> None:
    """Tests reuse task ids across fresh tables."""
    with _lock:
        _known.clear()
