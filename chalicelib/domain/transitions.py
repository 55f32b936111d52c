"""The one table of status transitions, and the fields each new status sets or clears.

Every writer goes through `task_transition` / `run_transition`; the store turns the result
into one conditional update guarded by `sources`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chalicelib.domain.statuses import RUN_TERMINAL, TASK_TERMINAL, RunStatus, TaskStatus
from chalicelib.errors import UnknownAction

#: a field value that means "remove the attribute" (the API shows it as null)
CLEAR: Any = None


@dataclass(frozen=True)
class Transition:
    action: str
    sources: frozenset[str]
    target: str


@dataclass(frozen=True)
class Change:
    """What a transition writes: the new status plus the fields that belong to it."""

    transition: Transition
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return self.transition.target


def _t(action: str, sources: set[str], target: str) -> Transition:
    return Transition(action, frozenset(sources), target)


S, R = TaskStatus, RunStatus

TASK_TRANSITIONS: dict[str, Transition] = {
    t.action: t
    for t in (
        _t("start", {S.PENDING}, S.RUNNING),
        _t("complete", {S.RUNNING}, S.COMPLETED),
        _t("partially_fail", {S.RUNNING}, S.PARTIAL_FAILURE),
        _t("fail", {S.RUNNING, S.PENDING}, S.FAILED),
        _t("cancel", {S.PENDING, S.RUNNING, S.APPLY_PENDING}, S.CANCELLING),
        _t("finish_cancel", {S.CANCELLING}, S.CANCELLED),
        _t("retry", {S.FAILED, S.PARTIAL_FAILURE, S.CANCELLED}, S.PENDING),
        _t("await_confirmation", {S.RUNNING}, S.APPLY_PENDING),
        _t("confirm", {S.APPLY_PENDING}, S.RUNNING),
        _t("discard", {S.APPLY_PENDING}, S.DISCARDED),
        _t("replan", {S.APPLY_PENDING, S.RUNNING}, S.PENDING),
    )
}

RUN_TRANSITIONS: dict[str, Transition] = {
    t.action: t
    for t in (
        _t("claim", {R.PENDING}, R.RUNNING),
        _t("succeed", {R.RUNNING}, R.SUCCEEDED),
        _t("fail", {R.RUNNING}, R.FAILED),
        _t("release", {R.RUNNING}, R.PENDING),
        _t("time_out", {R.RUNNING}, R.TIMED_OUT),
        _t("cancel", {R.PENDING, R.RUNNING, R.APPLY_PENDING}, R.CANCELLED),
        _t("retry_failed", {R.FAILED, R.TIMED_OUT, R.CANCELLED}, R.PENDING),
        _t("retry_all", {R.SUCCEEDED, R.FAILED, R.TIMED_OUT, R.CANCELLED}, R.PENDING),
        _t("await_confirmation", {R.RUNNING}, R.APPLY_PENDING),
        _t("claim_apply", {R.APPLY_PENDING}, R.RUNNING),
        _t("replan", {R.APPLY_PENDING, R.RUNNING}, R.PENDING),
    )
}


def task_entry_fields(target: str, now: str, error_message: str | None = None) -> dict[str, Any]:
    """The fields a task sets or clears when it enters `target`."""
    fields: dict[str, Any] = {"status": target, "updated_at": now}
    if target in TASK_TERMINAL:
        fields["completed_at"] = now
        fields["error_message"] = error_message
    else:
        fields["completed_at"] = CLEAR
        fields["error_message"] = CLEAR
    return fields


def run_entry_fields(target: str, now: str, error_message: str | None = None) -> dict[str, Any]:
    """The fields a node run sets or clears when it enters `target`."""
    fields: dict[str, Any] = {"status": target, "updated_at": now}
    if target == R.RUNNING:
        fields.update(started_at=now, completed_at=CLEAR, error_message=CLEAR)
    elif target == R.PENDING:
        fields.update(started_at=CLEAR, completed_at=CLEAR, error_message=CLEAR, progress=0, step=CLEAR)
    elif target in RUN_TERMINAL:
        fields.update(completed_at=now, error_message=error_message)
        if target == R.SUCCEEDED:
            fields["progress"] = 100
    return fields


def task_transition(action: str, now: str, error_message: str | None = None) -> Change:
    transition = TASK_TRANSITIONS.get(action)
    if transition is None:
        raise UnknownAction(f"unknown task action {action!r}")
    return Change(transition, task_entry_fields(transition.target, now, error_message))


#: run actions that enter `running` for a later phase of the same attempt: the run keeps the
#: `started_at` of its plan
_CONTINUING_ACTIONS = frozenset({"claim_apply"})


def run_transition(action: str, now: str, error_message: str | None = None) -> Change:
    transition = RUN_TRANSITIONS.get(action)
    if transition is None:
        raise UnknownAction(f"unknown run action {action!r}")
    fields = run_entry_fields(transition.target, now, error_message)
    if action in _CONTINUING_ACTIONS:
        del fields["started_at"]
    return Change(transition, fields)


def allowed_task_targets(source: str) -> frozenset[str]:
    return frozenset(t.target for t in TASK_TRANSITIONS.values() if source in t.sources)


def allowed_run_targets(source: str) -> frozenset[str]:
    return frozenset(t.target for t in RUN_TRANSITIONS.values() if source in t.sources)
