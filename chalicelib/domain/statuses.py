"""Task and node-run statuses, declared once."""

from __future__ import annotations

from typing import Final


class TaskStatus:
    #: accepted and durable; waiting for dispatch (or for its concurrency key)
    PENDING: Final = "pending"
    #: node runs exist and agents may claim them
    RUNNING: Final = "running"
    #: a two-phase task planned and waits for a human to confirm
    APPLY_PENDING: Final = "apply_pending"
    #: cancel requested; waits until no node is running
    CANCELLING: Final = "cancelling"
    #: every node succeeded
    COMPLETED: Final = "completed"
    #: some nodes failed, at least one succeeded
    PARTIAL_FAILURE: Final = "partial_failure"
    #: no node succeeded, or more nodes failed than `max_errors` allows
    FAILED: Final = "failed"
    #: cancelled before it finished
    CANCELLED: Final = "cancelled"
    #: a planned two-phase task that was never applied
    DISCARDED: Final = "discarded"


class RunStatus:
    #: waiting to be claimed
    PENDING: Final = "pending"
    #: claimed and leased to a runner
    RUNNING: Final = "running"
    #: planned; the runner holds the plan context until confirmation
    APPLY_PENDING: Final = "apply_pending"
    #: the step(s) exited 0
    SUCCEEDED: Final = "succeeded"
    #: a step failed
    FAILED: Final = "failed"
    #: the lease expired on the last allowed attempt
    TIMED_OUT: Final = "timed_out"
    #: cancelled before or while running
    CANCELLED: Final = "cancelled"


TASK_STATUSES: Final = (
    TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.APPLY_PENDING, TaskStatus.CANCELLING,
    TaskStatus.COMPLETED, TaskStatus.PARTIAL_FAILURE, TaskStatus.FAILED, TaskStatus.CANCELLED,
    TaskStatus.DISCARDED,
)
TASK_TERMINAL: Final = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.PARTIAL_FAILURE, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.DISCARDED}
)
TASK_ACTIVE: Final = frozenset(TASK_STATUSES) - TASK_TERMINAL
#: terminal statuses that count as "finished" for success rate and duration
TASK_FINISHED: Final = frozenset({TaskStatus.COMPLETED, TaskStatus.PARTIAL_FAILURE, TaskStatus.FAILED})

RUN_STATUSES: Final = (
    RunStatus.PENDING, RunStatus.RUNNING, RunStatus.APPLY_PENDING, RunStatus.SUCCEEDED,
    RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED,
)
RUN_TERMINAL: Final = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED})
RUN_UNSUCCESSFUL: Final = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED})
#: runs that count against `max_errors`
RUN_ERRORS: Final = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT})
