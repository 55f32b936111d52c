"""Statistics over time: tasks per hour by terminal status, success rate and average duration.

Read from the hourly statistics scopes the stream aggregator writes in the same transaction
as the totals (`counters.hour_scope`): a task counts in the hour of its `completed_at`; a
retry takes it out of that hour, and it counts again in the hour it finishes next.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

from chalicelib import clock
from chalicelib.auth import Actor
from chalicelib.domain.statuses import TASK_FINISHED, TaskStatus
from chalicelib.errors import ValidationFailed
from chalicelib.services.statistics import scope_for
from chalicelib.store import counters

DEFAULT_HOURS: Final = 24
MAX_HOURS: Final = 168
_HOUR_SECONDS: Final = 3600
#: terminal statuses in the order the dashboard stacks them
TERMINAL_ORDER: Final = (
    TaskStatus.COMPLETED, TaskStatus.PARTIAL_FAILURE, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.DISCARDED,
)


def parse_hours(raw: str | None) -> int:
    """`?hours=`: an integer from 1 to MAX_HOURS; raises ValidationFailed otherwise (given empty
    too: an empty value is not an integer)."""
    if raw is None:
        return DEFAULT_HOURS
    if raw.isdigit() and 1 <= int(raw) <= MAX_HOURS:
        return int(raw)
    raise ValidationFailed(
        "invalid query parameter hours",
        [{"path": "$query.hours", "message": f"must be an integer from 1 to {MAX_HOURS}"}],
    )


def hours_ending_now(hours: int, now: float | None = None) -> list[str]:
    """The last `hours` hourly buckets (`2026-11-22T18`), oldest first, the current one last."""
    current = int((clock.now_epoch() if now is None else now) // _HOUR_SECONDS) * _HOUR_SECONDS
    return [counters.hour_of(clock.rfc3339(current - i * _HOUR_SECONDS)) for i in range(hours - 1, -1, -1)]


def timeseries(actor: Actor, task_type: str | None, owner: str | None, hours: int) -> dict[str, Any]:
    scope = scope_for(actor, task_type, owner)
    buckets = hours_ending_now(hours)
    found = counters.read_many_stats([counters.hour_scope(scope, hour) for hour in buckets])
    return {
        "hours": hours,
        "buckets": [bucket(hour, found[counters.hour_scope(scope, hour)]) for hour in buckets],
        "as_of": clock.now_iso(),
    }


def bucket(hour: str, totals: dict[str, Decimal]) -> dict[str, Any]:
    by_status = {status: int(totals.get(f"st_{status}", 0)) for status in TERMINAL_ORDER}
    finished = sum(by_status[s] for s in TASK_FINISHED)
    dur_n = int(totals.get("dur_n", 0))
    return {
        "hour": f"{hour}:00:00Z",
        "by_status": by_status,
        "finished": finished,
        "success_rate": round(by_status[TaskStatus.COMPLETED] * 100 / finished, 2) if finished else None,
        "avg_duration_seconds": round(float(totals.get("dur_sum", 0)) / dur_n, 2) if dur_n else None,
    }
