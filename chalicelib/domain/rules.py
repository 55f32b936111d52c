"""Pure rules: error budgets, finishing a task, progress."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from chalicelib.domain.statuses import RUN_ERRORS, RUN_STATUSES, RUN_TERMINAL, RunStatus, TaskStatus

_PERCENT = re.compile(r"^(\d{1,3})%$")


def allowed_errors(max_errors: int | str, node_total: int) -> int:
    """How many failed nodes a task tolerates: a count, or a percentage of its nodes (floored)."""
    if isinstance(max_errors, int):
        return max_errors
    match = _PERCENT.match(max_errors)
    if match is None:
        return int(max_errors)
    return math.floor(int(match.group(1)) * node_total / 100)


def empty_counts() -> dict[str, int]:
    return {status: 0 for status in RUN_STATUSES}


def error_count(counts: Mapping[str, int]) -> int:
    return sum(counts.get(status, 0) for status in RUN_ERRORS)


def finished_count(counts: Mapping[str, int]) -> int:
    return sum(counts.get(status, 0) for status in RUN_TERMINAL)


def in_flight(counts: Mapping[str, int]) -> int:
    return sum(counts.get(s, 0) for s in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.APPLY_PENDING))


def error_budget_exceeded(counts: Mapping[str, int], max_errors: int | str, node_total: int) -> bool:
    return error_count(counts) > allowed_errors(max_errors, node_total)


def final_status(counts: Mapping[str, int], budget_exceeded: bool) -> tuple[str, str | None]:
    """The terminal status of a task whose nodes have all finished, with its error message."""
    succeeded = counts.get(RunStatus.SUCCEEDED, 0)
    unsuccessful = finished_count(counts) - succeeded
    if budget_exceeded:
        return TaskStatus.FAILED, f"{error_count(counts)} node(s) failed, more than max_errors allows"
    if unsuccessful == 0:
        return TaskStatus.COMPLETED, None
    if succeeded > 0:
        return TaskStatus.PARTIAL_FAILURE, f"{unsuccessful} of {succeeded + unsuccessful} node(s) did not succeed"
    return TaskStatus.FAILED, f"all {unsuccessful} node(s) failed"


def progress(progress_sum: int, node_total: int) -> int:
    """Task progress: the mean of its node runs' progress (finished runs count as 100)."""
    if node_total <= 0:
        return 0
    return max(0, min(100, progress_sum // node_total))


def run_progress_weight(status: str, progress_value: int) -> int:
    if status in RUN_TERMINAL:
        return 100
    if status in (RunStatus.RUNNING, RunStatus.APPLY_PENDING):
        return max(0, min(99, progress_value))
    return 0


def max_errors_value(raw: str) -> int | str:
    """`max_errors` as stored (a string) back to what the request said: a count or a percentage."""
    return int(raw) if raw.isdigit() else raw
