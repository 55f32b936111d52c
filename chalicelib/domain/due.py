"""Due times: what the sweeper must look at, and when, without walking the active tasks.

An item that needs the sweeper at some moment carries `due_pk` = `DUE#<kind>#<shard>` and
`due_sk` = `<epoch seconds, 10 digits>#<item id>` (the sparse `due-index`). A sweep reads each
shard's entries up to now, oldest first, a bounded number per pass: its cost follows the work
that is due, not the number of active tasks. Kinds:

- `lease`: a `running` run (its lease) or an `apply_pending` run (its plan reservation): due
  the first second the sweeper's `lapsed` guard holds for the expiry it was written with.
  Written by the status change that starts the lease or reservation (claim, apply claim, plan
  ready), removed by every other status change (domain/run_transitions.py), in the same write.
  A heartbeat or an extension leaves it (an expiry only moves later, so the entry is due at or
  before the real lapse): a sweep that finds the run still held moves the entry to the expiry
  it read (`rearm_due`, one conditional write per lease period instead of two index writes per
  heartbeat), so a lapse is still acted on within one pass of it.
- `task`: an active task's next look (undispatched re-send, cancel and halt re-sends, claim
  deadlines, recount, stalled window, confirmation window, missed finish). Every status change
  makes it due at once (domain/task_transitions.py); the look then schedules the next one
  (services/due_sweeps.py: `next_look`); a terminal status removes it.

Shards: claims and re-arms at 1,000 runs/s write lease entries at about that rate, and one index
partition takes 1,000 writes/s; a stable hash of the item's id spreads them over SHARDS partitions.
"""

from __future__ import annotations

import math
import zlib
from typing import Final

#: index partitions per kind (each one query per sweep)
SHARDS: Final = 8
LEASE: Final = "lease"
TASK: Final = "task"
KINDS: Final = (LEASE, TASK)


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


def lapse_due_keys(task_id: str, node: str, expires_at: float) -> tuple[str, str]:
    """A run's lease or reservation entry: due the first whole second after `expires_at` (the
    sweeper's guards are `expires < now`)."""
    return due_keys(LEASE, run_item_id(task_id, node), math.floor(expires_at) + 1)


def task_due_keys(task_id: str, at: float) -> tuple[str, str]:
    return due_keys(TASK, task_id, at)


def run_item_id(task_id: str, node: str) -> str:
    return f"{task_id}/{node}"


def upto(now: float) -> str:
    """The highest `due_sk` due at `now` ('~' sorts after every id character)."""
    return f"{_second(now)}#~"


def due_second(due_sk: str) -> int:
    return int(due_sk.partition("#")[0])


#: the item holding the walk that gives items written before the due index their entries
#: (services/due_backfill.py); a table created with the index starts with that walk done
BACKFILL_KEY: Final = {"pk": {"S": "SWEEP#due-backfill"}, "sk": {"S": "META"}}
BACKFILL_DONE_ROUND: Final = 3


def backfill_done_item() -> dict[str, dict[str, str]]:
    return {**BACKFILL_KEY, "round": {"N": str(BACKFILL_DONE_ROUND)}}
