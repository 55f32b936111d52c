"""Due times: what the sweeper must look at, and when, without walking the active tasks.

Two kinds, each spread over partitions by a stable hash of an id (SHARDS, WATCH_SHARDS) and
sorted by due time (`<epoch seconds, 10 digits>#…`): a sweep reads each shard up to now, oldest
first, a bounded number per pass, so its cost follows the work that is due, not the active tasks.

- `task`: an active task's next look (undispatched re-send, cancel and halt re-sends, claim
  deadlines, recount, stalled window, confirmation window, missed finish). The task item itself
  carries `due_pk` = `DUE#task#<shard>` and `due_sk` = `<second>#<task id>` (the sparse
  `due-index`). Every status change makes it due at once (domain/task_transitions.py); the look
  then schedules the next one (services/due_sweeps.py: `next_look`); a terminal status removes it.
- `lease`: a `running` run's lease or an `apply_pending` run's plan reservation. A run carries
  no index entry for it: per-run entries cost four write units a run (one in and one out of the
  index at the claim, one out at its end, and a re-key a lease period while it heartbeats).
  Instead the counting stream consumer (services/lease_watch.py) notes the leases that start in
  a batch of records in *watch* items of the base table, `LEASES#<shard>` / `<second the lease
  lapses>#<id>`, holding the ids of the runs (`<task id>/<node>`): one item per second of a
  batch, in the shard of its id. The sweeper reads the watches due, reads each run, acts on the
  lapsed ones, writes new watches for the runs still held (heartbeats moved their expiry: again
  one item per second), and deletes the watches it read. A heartbeat writes nothing for it. A
  claim whose stream record is lost is watched again by the recount its wrong counts bring
  (services/recount.py).
"""

from __future__ import annotations

import math
import zlib
from typing import Final

#: partitions of the task looks in the due index (each one query per sweep)
SHARDS: Final = 8
TASK: Final = "task"


def shard(item_id: str) -> int:
    return zlib.crc32(item_id.encode()) % SHARDS


def due_pk(kind: str, number: int) -> str:
    return f"DUE#{kind}#{number}"


def _second(at: float) -> str:
    return f"{max(0, int(at)):010d}"


def due_keys(kind: str, item_id: str, at: float) -> tuple[str, str]:
    """(`due_pk`, `due_sk`) of the item with this id, due in the whole second of epoch `at` (a
    look up to a second early finds its check not due yet, and the entry stays for the next)."""
    return due_pk(kind, shard(item_id)), f"{_second(at)}#{item_id}"


def lapse_second(expires_at: float) -> int:
    """When a lease or reservation expiring at `expires_at` is due: the first whole second after
    it (the sweeper's guards are `expires < now`)."""
    return math.floor(expires_at) + 1


#: partitions of the lease watches, by the id of the watch (not of its runs): a watch holds
#: every run of a stream batch whose lease lapses in one second, so its write stays one item of
#: a few units (a write unit is a KB), and 1,000 claims a second in batches of 100 are about 20
#: writes a second spread over the shards, as the sweeper's deletes are
WATCH_SHARDS: Final = 8


def watch_shard(watch_id: str) -> int:
    return zlib.crc32(watch_id.encode()) % WATCH_SHARDS


def watch_pk(number: int) -> str:
    """The base-table partition of the lease watches of one shard."""
    return f"LEASES#{number}"


def watch_sk(second: int, watch_id: str) -> str:
    return f"{_second(second)}#{watch_id}"


def task_due_keys(task_id: str, at: float) -> tuple[str, str]:
    return due_keys(TASK, task_id, at)


def run_item_id(task_id: str, node: str) -> str:
    return f"{task_id}/{node}"


def run_of_item_id(item_id: str) -> tuple[str, str]:
    """(task id, node) of a `run_item_id` (a task id never holds a `/`; a node name may)."""
    task_id, _, node = item_id.partition("/")
    return task_id, node


def upto(now: float) -> str:
    """The highest `due_sk` due at `now` ('~' sorts after every id character)."""
    return f"{_second(now)}#~"


def due_second(due_sk: str) -> int:
    return int(due_sk.partition("#")[0])


#: the item holding the walk that gives items written before the due index their entries
#: (services/due_backfill.py); a table created with the index starts with that walk done.
#: Round 3 came with the lease watches: runs leased under per-run index entries get a watch.
BACKFILL_KEY: Final = {"pk": {"S": "SWEEP#due-backfill"}, "sk": {"S": "META"}}
BACKFILL_DONE_ROUND: Final = 4


def backfill_done_item() -> dict[str, dict[str, str]]:
    return {**BACKFILL_KEY, "round": {"N": str(BACKFILL_DONE_ROUND)}}
