"""Plan reservations of two-phase runs. Every decision is a conditional write on the run item.

The run item alone decides who wins a race between a confirmation, an apply claim, a
heartbeat and the reservation lapsing:

- `reserve`   running (plan) → apply_pending, reserved to its runner until now + lease
- `extend`    the runner's heartbeat, only while the reservation is still live
- `confirm`   task apply_pending → running together with the run: live reservation, same
              attempt, same runner → `confirmed` and claimable by that runner only
- `claim_apply` (runs.py via agent.claim) confirmed, same runner and attempt, still live
- `replan`    the run (reservation lapsed, or plan-lost by its owner, or an apply lease
              lapsed) → pending, attempt + 1, with the task → pending, attempt + 1
- `discard`   task apply_pending → discarded together with the run → cancelled

A reservation that lapsed can never be extended, confirmed or claimed again: every one of
those writes requires `reservation_expires_at > now`, and `replan` requires the opposite.
"""

from __future__ import annotations

from typing import Any

from pynamodb.exceptions import PynamoDBException
from pynamodb.expressions.condition import Condition
from pynamodb.transactions import TransactWrite

from chalicelib.domain.statuses import RunStatus
from chalicelib.errors import ReservationLost
from chalicelib.store import runs, tasks
from chalicelib.store.models import EventItem, NodeRunItem, TaskItem, run_sk, task_pk
from chalicelib.store.writes import field_actions, is_condition_failure, is_transaction_conflict


def live(now: float) -> Condition:
    condition: Condition = NodeRunItem.reservation_expires_at > now
    return condition


def reserved_to(attempt: int, runner: str) -> Condition:
    condition: Condition = (
        (NodeRunItem.status == RunStatus.APPLY_PENDING)
        & (NodeRunItem.attempt == attempt)
        & (NodeRunItem.reservation_owner == runner)
    )
    return condition


def reserve(task_id: str, node: str, attempt: int, runner: str, now: str, expires: float,
            fields: dict[str, Any]) -> NodeRunItem | None:
    """The plan step succeeded: the runner keeps the plan context until `expires`."""
    return runs.apply(
        task_id, node, "await_confirmation", now, condition=runs.lease_held(attempt, runner),
        fields={
            **fields, "reservation_owner": runner, "reservation_expires_at": expires, "confirmed": None,
            "lease_expires_at": None, "progress": 50, "claim_pk": None, "claim_sk": None,
        },
    )


def extend(task_id: str, node: str, attempt: int, runner: str, now: float, expires: float,
           stamp: str) -> NodeRunItem | None:
    """The holder's heartbeat: move the expiry, only while the reservation is live."""
    item = NodeRunItem(task_pk(task_id), run_sk(node))
    guard = NodeRunItem.pk.exists() & reserved_to(attempt, runner) & live(now)
    try:
        item.update(actions=field_actions(NodeRunItem, {"reservation_expires_at": expires, "updated_at": stamp}),
                    condition=guard)
    except PynamoDBException as error:
        if is_condition_failure(error):
            return None
        raise
    return item


def _transact(*writes: tuple[Any, list[Any], Condition], event: EventItem | None) -> None:
    """Update each (item, actions, guard) and save the event in one transaction.
    Raises ReservationLost when a condition failed or a concurrent transaction interfered."""
    try:
        with TransactWrite(connection=tasks._connection()) as tx:
            for item, actions, guard in writes:
                tx.update(item, actions=actions, condition=guard)
            if event is not None:
                tx.save(event)
    except PynamoDBException as error:
        if is_condition_failure(error) or is_transaction_conflict(error):
            raise ReservationLost from error
        raise


def confirm(task: TaskItem, run: NodeRunItem, now: float, stamp: str, event: EventItem) -> None:
    """Task apply_pending → running and the run confirmed for its runner, atomically; only
    while the reservation the run was read with is still live. Raises ReservationLost."""
    runner = run.reservation_owner or ""
    claim_pk, claim_sk = runs.claim_keys(runner, int(run.priority), run.task_id, int(run.ordinal))
    run_write = (
        NodeRunItem(task_pk(run.task_id), run_sk(run.node)),
        field_actions(NodeRunItem, {
            "confirmed": True, "claim_pk": claim_pk, "claim_sk": claim_sk, "updated_at": stamp,
            "last_action": "confirm",
        }),
        NodeRunItem.pk.exists() & reserved_to(int(run.attempt), runner) & live(now)
        & NodeRunItem.confirmed.does_not_exist() & (NodeRunItem.generation == task.attempt),
    )
    task_write = tasks.transition_write(
        task.task_id, "confirm", stamp,
        condition=(TaskItem.attempt == task.attempt) & TaskItem.plan_confirmed.does_not_exist(),
        extra=[TaskItem.plan_confirmed.set(True), TaskItem.awaiting_since.remove()],
    )
    _transact(run_write, task_write, event=event)


def replan(task: TaskItem, run: NodeRunItem, run_condition: Condition, stamp: str, event: EventItem) -> int:
    """The run back to `pending` (attempt + 1, phase plan) and the task back to `pending`
    (attempt + 1: the dispatch job starts it again), atomically, when `run_condition` holds.
    Returns the task's new attempt. Raises ReservationLost."""
    attempt = int(task.attempt) + 1
    claim_pk, claim_sk = runs.claim_keys(run.runner, int(task.priority), run.task_id, 0)
    run_write = runs.transition_write(
        run.task_id, run.node, "replan", stamp, condition=run_condition & (NodeRunItem.attempt == run.attempt),
        fields={
            "attempt": int(run.attempt) + 1, "generation": attempt, "reset_gen": attempt, "ordinal": 0,
            "phase": "plan", "claim_pk": claim_pk, "claim_sk": claim_sk, "lease_owner": None,
            "lease_expires_at": None, "reservation_owner": None, "reservation_expires_at": None,
            "confirmed": None, "cancel_requested": False, "output": None, "output_key": None,
            "final_events": None,
        },
    )
    task_write = tasks.transition_write(
        task.task_id, "replan", stamp, condition=TaskItem.attempt == task.attempt,
        extra=[
            TaskItem.attempt.set(attempt), TaskItem.retry_scope.set("replan"), TaskItem.halted.set(False),
            TaskItem.finished_base.set(0), TaskItem.plan_confirmed.remove(), TaskItem.awaiting_since.remove(),
            TaskItem.started_at.remove(),
        ],
    )
    _transact(run_write, task_write, event=event)
    return attempt


def discard(task: TaskItem, run: NodeRunItem | None, stamp: str, reason: str, event: EventItem) -> None:
    """Task apply_pending → discarded and its planned run → cancelled (the reservation is
    released: the runner's next heartbeat is refused), atomically. Raises ReservationLost."""
    writes: list[tuple[Any, list[Any], Condition]] = [tasks.transition_write(
        task.task_id, "discard", stamp, error_message=reason, condition=TaskItem.attempt == task.attempt,
    )]
    if run is not None:
        writes.append(runs.transition_write(
            run.task_id, run.node, "cancel", stamp, error_message=reason,
            condition=(NodeRunItem.attempt == run.attempt) & (NodeRunItem.status == RunStatus.APPLY_PENDING),
            fields={"reservation_expires_at": None, "confirmed": None, "claim_pk": None, "claim_sk": None},
        ))
    _transact(*writes, event=event)
