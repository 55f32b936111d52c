"""Plan reservations of two-phase runs. Every decision is a conditional write on the run item.

The run item alone decides who wins a race between a confirmation, an apply claim, a
heartbeat and the reservation lapsing (the guards are in domain/run_transitions.py):

- `reserve`   running (plan) → apply_pending, reserved to its runner until now + lease
- `extend`    the runner's heartbeat, only while the reservation is still live
- `confirm`   task apply_pending → running together with the run: live reservation, same
              attempt, same runner → `confirmed` and claimable by that runner only
- `claim_apply` (services/claims.py) confirmed, same runner and attempt, still live
- `replan`    the run (reservation lapsed, plan lost by its owner, or an apply lease
              lapsed) → pending, attempt + 1, with the task → pending, attempt + 1
- `discard`   task apply_pending → discarded together with the run → cancelled

A reservation that lapsed can never be extended, confirmed or claimed again: every one of
those writes requires `reservation_expires_at > now`, and `replan` requires the opposite.
"""

from __future__ import annotations

from typing import Any

from chalicelib.domain.records import NodeRun, Task
from chalicelib.errors import ConditionFailed, ReservationLost
from chalicelib.store import runs, tasks
from chalicelib.store.backend import EventBatch

#: how a run's plan was lost: the run action that plans it again
REPLAN_ACTIONS = frozenset({"replan_lapsed", "replan_lost", "replan_apply_lapsed"})


def reserve(run: NodeRun, runner: str, now: str, expires: float, completion: dict[str, Any]) -> NodeRun | None:
    """The plan step succeeded: the runner keeps the plan context until `expires`."""
    return runs.transition(run, "await_confirmation", now, runner=runner, reservation_expires_at=expires,
                           completion=completion)


def extend(run: Any, runner: str, now: float, expires: float, stamp: str) -> NodeRun | None:
    """The holder's heartbeat: move the expiry, only while the reservation is live."""
    return runs.transition(run, "extend_reservation", stamp, runner=runner, now_epoch=now,
                           reservation_expires_at=expires)


def _commit(*changes: Any, event: EventBatch | None) -> None:
    try:
        tasks.commit(changes, [event] if event is not None else [])
    except ConditionFailed as failed:
        raise ReservationLost("the run or the task changed") from failed


def confirm(task: Task, run: NodeRun, now: float, stamp: str, event: EventBatch) -> None:
    """Task apply_pending → running and the run confirmed for its runner, atomically; only
    while the reservation the run was read with is still live. Raises ReservationLost."""
    _commit(
        runs.change(run, "confirm", stamp, runner=run.reservation_owner or "", now_epoch=now,
                    generation=int(task.attempt)),
        tasks.change(task, "confirm", stamp),
        event=event,
    )


def replan(task: Task, run: NodeRun, action: str, now: float, stamp: str, event: EventBatch) -> int:
    """The run back to `pending` (attempt + 1, phase plan) and the task back to `pending`
    (attempt + 1: the dispatch job starts it again), atomically, when the run's `action`
    (one of REPLAN_ACTIONS) holds. Returns the task's new attempt. Raises ReservationLost."""
    assert action in REPLAN_ACTIONS
    attempt = int(task.attempt) + 1
    _commit(
        runs.change(run, action, stamp, runner=run.reservation_owner, now_epoch=now, generation=attempt),
        tasks.change(task, "replan", stamp),
        event=event,
    )
    return attempt


def discard(task: Task, run: NodeRun | None, stamp: str, reason: str, event: EventBatch) -> None:
    """Task apply_pending → discarded and its planned run → cancelled (the reservation is
    released: the runner's next heartbeat is refused), atomically. Raises ReservationLost."""
    changes = [tasks.change(task, "discard", stamp, error_message=reason)]
    if run is not None:
        changes.append(runs.change(run, "cancel", stamp, error_message=reason, generation=int(run.generation)))
    _commit(*changes, event=event)
