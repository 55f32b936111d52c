"""How long what a task leaves behind is kept (API.md "Retention"): the `expires_at` (epoch
seconds, the table's TTL attribute) each kind of item gets, from `FLEETRUN_RETENTION_DAYS`.

- A task item expires `retention` days after it ends: its terminal transition sets
  `expires_at`, a retry (or any other way back to an active status) clears it.
- A run expires `retention + ACTIVE_ALLOWANCE_DAYS` after its own terminal write, an event
  item that long after it is written. Both are written before their task ends (by up to the
  time the task stays active), and no write of the task may touch every one of them (invariant
  9), so the allowance stands for the longest a task stays active: a task active longer than
  `ACTIVE_ALLOWANCE_DAYS` can lose its oldest events and runs before its own item expires
  (a documented gap; never the reverse — nothing outlives its task by more than the allowance).
- An hourly statistics scope expires `retention + 1` days after its hour ends: every task
  counted in it has expired by then. The reconcile leaves hours older than `retention - 1` days
  alone (`reconcilable_hour`), so a task expiring before its hour never reads as drift.
- Outputs in S3 and live output chunks: `output_days` (the S3 lifecycle rule, infra/data.py).

DynamoDB deletes expired items within a few days of `expires_at`; readers never rely on the
deletion having happened (nor on it not having happened).
"""

from __future__ import annotations

from typing import Final

from chalicelib import clock, config

DAY: Final = 86400
#: the longest a task is expected to stay active (see the module docstring)
ACTIVE_ALLOWANCE_DAYS: Final = 7
#: hourly statistics scopes outlive the tasks counted in them by this much
HOURLY_EXTRA_DAYS: Final = 1


def days() -> int:
    return config.retention_days()


def task_expiry(ended_at: str) -> int:
    """`expires_at` of a task that reached a terminal status at `ended_at` (RFC 3339)."""
    return int(clock.parse_rfc3339(ended_at)) + days() * DAY


def item_expiry(written_at: float) -> int:
    """`expires_at` of a run's terminal write or an event item written at epoch `written_at`."""
    return int(written_at) + (days() + ACTIVE_ALLOWANCE_DAYS) * DAY


def hour_start(hour: str) -> float:
    """Epoch seconds of an hourly bucket `2026-11-22T18` (counters.hour_of)."""
    return clock.parse_rfc3339(f"{hour}:00:00Z")


def hour_expiry(hour: str) -> int:
    """`expires_at` of the statistics items of an hourly scope."""
    return int(hour_start(hour)) + 3600 + (days() + HOURLY_EXTRA_DAYS) * DAY


def reconcilable_hour(hour: str, now: float) -> bool:
    """Whether every task counted in `hour` still exists (the reconcile compares only those)."""
    return hour_start(hour) >= now - (days() - 1) * DAY


def output_days() -> int:
    """Days an output object or live chunk is kept after it is written (it is written before
    its task ends): the retention plus the allowance of `item_expiry`."""
    return days() + ACTIVE_ALLOWANCE_DAYS
