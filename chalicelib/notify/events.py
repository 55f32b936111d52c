"""The notification vocabulary, declared once: which task changes notify, through which channels."""

from __future__ import annotations

from typing import Final

from chalicelib.domain.statuses import TaskStatus

#: task status -> the event a change into it notifies
STATUS_EVENTS: Final = {
    TaskStatus.COMPLETED: "task.completed",
    TaskStatus.FAILED: "task.failed",
    TaskStatus.PARTIAL_FAILURE: "task.partial_failure",
    TaskStatus.APPLY_PENDING: "task.apply_pending",
    TaskStatus.CANCELLED: "task.cancelled",
}
#: a retry: the task leaves a terminal status for `pending` with its attempt + 1
RETRIED: Final = "task.retried"
EVENTS: Final = (
    "task.completed", "task.failed", "task.partial_failure", "task.apply_pending", RETRIED, "task.cancelled",
)
CHANNELS: Final = ("webhook", "slack", "dingtalk", "email")
