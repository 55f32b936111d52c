"""The node-run transition table: for each action, the allowed sources, the guard, and every
attribute the write sets or clears.

Rules every status change follows (`_entry`):
- every change stamps `updated_at` and `last_action`;
- entering `pending` makes the run claimable (claim keys from its runner, priority, task and
  ordinal, and `claimable_at`: when its claim timeout starts to count) and clears what belonged
  to the attempt before: lease, reservation, output, completion events, timestamps, error,
  progress and step; the run attempt goes up by one;
- `confirm` makes a planned run claimable by its runner (claim keys again); every other
  change clears the claim keys, so a run is claimable exactly while it waits to be claimed;
- entering `running` takes a lease; entering `apply_pending` takes a plan reservation and
  gives the lease back; entering a terminal status stamps `completed_at` and the error, and
  drops lease and reservation.

A caller names the action, the run (as read: its id, attempt and placement) and the data
only it knows (an error, a progress value, the lease expiry). Guards the table declares
make DynamoDB enforce the rule: `lease_held` for what the leaseholder does, `unchanged` for
writes decided from a read, `lapsed`/`live` for expiry races.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from chalicelib import clock
from chalicelib.domain import retention
from chalicelib.domain.statuses import RUN_TERMINAL, RunStatus
from chalicelib.domain.writes import CLEAR, Add, Change, Predicate, Transition, eq, gt, lt, missing, transition_of

R = RunStatus


class RunRef(Protocol):
    """What a transition needs to know of the run it changes (a `NodeRun` as read)."""

    task_id: str
    node: str
    runner: str
    priority: int
    ordinal: int
    attempt: int
    generation: int


def claim_keys(runner: str, priority: int, task_id: str, ordinal: int) -> tuple[str, str]:
    """Claimable runs of a runner sort by priority (10 first), then task age, then ordinal."""
    return f"RUNNER#{runner}", f"{10 - int(priority):02d}#{task_id}#{int(ordinal):06d}"


@dataclass(frozen=True)
class RunInputs:
    """The data only a caller knows. Which ones an action reads is said in RUN_TRANSITIONS."""

    now: str = ""
    #: epoch seconds (lease and reservation expiry checks)
    now_epoch: float = 0.0
    error_message: str | None = None
    runner: str | None = None
    lease_expires_at: int | None = None
    reservation_expires_at: float | None = None
    step: str | None = None
    phase: str | None = None
    progress: int | None = None
    #: the task attempt the change belongs to (claims, retries, replans, cancels)
    generation: int | None = None
    ordinal: int | None = None
    claim_sk: str | None = None
    #: output and completion events a finishing run carries
    completion: dict[str, Any] = field(default_factory=dict)


Builder = Callable[[RunRef, RunInputs], tuple[dict[str, Any], tuple[Predicate, ...]]]


# --- guards --------------------------------------------------------------------------------
def lease_held(attempt: int, runner: str) -> tuple[Predicate, ...]:
    return eq("status", R.RUNNING), eq("attempt", int(attempt)), eq("lease_owner", runner)


def reserved_to(attempt: int, runner: str) -> tuple[Predicate, ...]:
    return eq("status", R.APPLY_PENDING), eq("attempt", int(attempt)), eq("reservation_owner", runner)


def _unchanged(run: RunRef) -> tuple[Predicate, ...]:
    return (eq("attempt", int(run.attempt)),)


def _claimed(ref: RunRef, given: RunInputs) -> tuple[Predicate, ...]:
    return eq("claim_sk", given.claim_sk), eq("generation", given.generation)


# --- what each status brings ---------------------------------------------------------------
def _epoch(given: RunInputs) -> float:
    return given.now_epoch or (clock.parse_rfc3339(given.now) if given.now else 0.0)


def _pending(run: RunRef, ordinal: int, given: RunInputs) -> dict[str, Any]:
    claim_pk, claim_sk = claim_keys(run.runner, run.priority, run.task_id, ordinal)
    return {
        "attempt": int(run.attempt) + 1, "ordinal": ordinal, "claim_pk": claim_pk, "claim_sk": claim_sk,
        "claimable_at": _epoch(given),
        "lease_owner": CLEAR, "lease_expires_at": CLEAR, "cancel_requested": False,
        "reservation_owner": CLEAR, "reservation_expires_at": CLEAR, "confirmed": CLEAR,
        "output": CLEAR, "output_key": CLEAR, "final_events": CLEAR,
        "started_at": CLEAR, "completed_at": CLEAR, "error_message": CLEAR, "progress": 0, "step": CLEAR,
    }


def _new_attempt(run: RunRef, given: RunInputs, ordinal: int) -> dict[str, Any]:
    """A new task attempt (retry, replan) resets the run into it."""
    assert given.generation is not None
    return {**_pending(run, ordinal, given), "generation": given.generation, "reset_gen": given.generation}


def _leased(given: RunInputs) -> dict[str, Any]:
    return {
        "lease_owner": given.runner, "lease_expires_at": given.lease_expires_at, "cancel_requested": False,
        "step": given.step, "phase": given.phase, "completed_at": CLEAR, "error_message": CLEAR,
    }


def _finished(given: RunInputs) -> dict[str, Any]:
    return {
        "completed_at": given.now, "error_message": given.error_message if given.error_message else CLEAR,
        "lease_expires_at": CLEAR, "reservation_expires_at": CLEAR, "confirmed": CLEAR,
        "output": CLEAR, "output_key": CLEAR, "final_events": CLEAR, **given.completion,
    }


# --- the table -----------------------------------------------------------------------------
def _claim(run: RunRef, given: RunInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    return {**_leased(given), "started_at": given.now, "progress": 0}, _claimed(run, given)


def _claim_apply(run: RunRef, given: RunInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    assert given.runner is not None
    # the apply phase of the same attempt keeps the plan's `started_at`
    guard = (*_claimed(run, given), eq("confirmed", True), gt("reservation_expires_at", given.now_epoch),
             eq("reservation_owner", given.runner), eq("phase", "plan"))
    return {**_leased(given), "phase": "apply", "reservation_expires_at": CLEAR}, guard


def _finish_leased(run: RunRef, given: RunInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    assert given.runner is not None
    return _finished(given), lease_held(run.attempt, given.runner)


def _plan_ready(run: RunRef, given: RunInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    assert given.runner is not None
    fields = {
        **given.completion, "reservation_owner": given.runner, "reservation_expires_at": given.reservation_expires_at,
        "confirmed": CLEAR, "lease_expires_at": CLEAR, "progress": 50,
    }
    return fields, lease_held(run.attempt, given.runner)


def _release(run: RunRef, given: RunInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    return _pending(run, int(run.ordinal), given), (*_unchanged(run), lt("lease_expires_at", int(given.now_epoch)))


def _time_out(run: RunRef, given: RunInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    return _finished(given), (*_unchanged(run), lt("lease_expires_at", int(given.now_epoch)))


def _claim_timeout(run: RunRef, given: RunInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    """Nobody claimed the run in time (services/claim_timeouts.py decides, from the run as read:
    its attempt and task attempt must be unchanged, so a run offered again meanwhile is not hit)."""
    return _finished(given), (*_unchanged(run), eq("generation", given.generation))


def _cancel(run: RunRef, given: RunInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    return _finished(given), (*_unchanged(run), eq("generation", given.generation))


def _orphan(run: RunRef, given: RunInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    return _finished(given), (*_unchanged(run), eq("generation", given.generation))


def _give_back(run: RunRef, given: RunInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    assert given.runner is not None
    return _pending(run, int(run.ordinal), given), lease_held(run.attempt, given.runner)


def _retry(run: RunRef, given: RunInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    assert given.ordinal is not None
    return _new_attempt(run, given, given.ordinal), (*_unchanged(run), eq("generation", int(run.generation)))


def _replan_fields(run: RunRef, given: RunInputs) -> dict[str, Any]:
    return {**_new_attempt(run, given, 0), "phase": "plan"}


def _replan_lapsed(run: RunRef, given: RunInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    guard = (*_unchanged(run), eq("status", R.APPLY_PENDING), lt("reservation_expires_at", given.now_epoch))
    return _replan_fields(run, given), guard


def _replan_lost(run: RunRef, given: RunInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    assert given.runner is not None
    return _replan_fields(run, given), reserved_to(run.attempt, given.runner)


def _replan_apply_lapsed(run: RunRef, given: RunInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    guard = (*_unchanged(run), eq("status", R.RUNNING), lt("lease_expires_at", given.now_epoch))
    return _replan_fields(run, given), guard


def _heartbeat(run: RunRef, given: RunInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    assert given.runner is not None
    fields: dict[str, Any] = {"lease_expires_at": given.lease_expires_at}
    if given.progress is not None:
        fields["progress"] = given.progress
    if given.step is not None:
        fields["step"] = given.step
    return fields, lease_held(run.attempt, given.runner)


def _request_cancel(run: RunRef, given: RunInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    assert given.runner is not None
    return {"cancel_requested": True}, lease_held(run.attempt, given.runner)


def _extend_reservation(run: RunRef, given: RunInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    assert given.runner is not None
    guard = (*reserved_to(run.attempt, given.runner), gt("reservation_expires_at", given.now_epoch))
    return {"reservation_expires_at": given.reservation_expires_at}, guard


def _confirm(run: RunRef, given: RunInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    assert given.runner is not None
    claim_pk, claim_sk = claim_keys(given.runner, run.priority, run.task_id, int(run.ordinal))
    guard = (*reserved_to(run.attempt, given.runner), gt("reservation_expires_at", given.now_epoch),
             missing("confirmed"), eq("generation", given.generation))
    return {"confirmed": True, "claim_pk": claim_pk, "claim_sk": claim_sk}, guard


def _t(action: str, sources: set[str], target: str | None, build: Builder) -> Transition:
    return Transition(action, frozenset(sources), target, build)


_FINISHABLE = {R.RUNNING}
RUN_TRANSITIONS: Final[dict[str, Transition]] = {
    t.action: t
    for t in (
        # the runner's claim of a pending run (or the work queue's, for service-executed types)
        _t("claim", {R.PENDING}, R.RUNNING, _claim),
        # the leaseholder reports the outcome
        _t("succeed", _FINISHABLE, R.SUCCEEDED, _finish_leased),
        _t("fail", _FINISHABLE, R.FAILED, _finish_leased),
        _t("end_cancelled", _FINISHABLE, R.CANCELLED, _finish_leased),
        # the sweeper: a lapsed lease is offered again, or times out on the last attempt
        _t("release", {R.RUNNING}, R.PENDING, _release),
        _t("time_out", {R.RUNNING}, R.TIMED_OUT, _time_out),
        # the sweeper: a run nobody claimed within the task's claim_timeout_seconds
        _t("claim_timeout", {R.PENDING}, R.TIMED_OUT, _claim_timeout),
        # the cancel job (and discard): runs that are not running
        _t("cancel", {R.PENDING, R.APPLY_PENDING}, R.CANCELLED, _cancel),
        # deregistration: runs waiting for a runner that is gone (or for the apply of its plan)
        _t("orphan", {R.PENDING, R.APPLY_PENDING}, R.FAILED, _orphan),
        # a claim answered after its node's token was rotated: the leases go back, unseen
        _t("give_back", {R.RUNNING}, R.PENDING, _give_back),
        # a retry's dispatch resets the runs it covers into the new task attempt
        _t("retry_failed", {R.FAILED, R.TIMED_OUT, R.CANCELLED}, R.PENDING, _retry),
        _t("retry_all", {R.SUCCEEDED, R.FAILED, R.TIMED_OUT, R.CANCELLED}, R.PENDING, _retry),
        # two-phase: the plan is ready, confirmed, applied, or lost (and planned again)
        _t("await_confirmation", {R.RUNNING}, R.APPLY_PENDING, _plan_ready),
        _t("confirm", {R.APPLY_PENDING}, None, _confirm),
        _t("claim_apply", {R.APPLY_PENDING}, R.RUNNING, _claim_apply),
        _t("replan_lapsed", {R.APPLY_PENDING}, R.PENDING, _replan_lapsed),
        _t("replan_lost", {R.APPLY_PENDING}, R.PENDING, _replan_lost),
        _t("replan_apply_lapsed", {R.RUNNING}, R.PENDING, _replan_apply_lapsed),
        # the leaseholder and the holder of a plan keep what they hold
        _t("heartbeat", {R.RUNNING}, None, _heartbeat),
        _t("request_cancel", {R.RUNNING}, None, _request_cancel),
        _t("extend_reservation", {R.APPLY_PENDING}, None, _extend_reservation),
    )
}

#: the run action that records each outcome an agent reports
OUTCOME_ACTIONS: Final = {R.SUCCEEDED: "succeed", R.FAILED: "fail", R.CANCELLED: "end_cancelled"}
#: the run actions that reset a run into a retry's attempt
RETRY_ACTIONS: Final = frozenset({"retry_failed", "retry_all"})


def retry_action(scope: str) -> str:
    return "retry_all" if scope == "all" else "retry_failed"


def _entry(transition: Transition, given: RunInputs) -> dict[str, Any]:
    # `ver` numbers the run's writes: the stream aggregator counts each write once (services/aggregation.py)
    fields: dict[str, Any] = {"updated_at": given.now, "ver": Add(1)}
    if transition.target is None:
        return fields
    fields.update(status=transition.target, last_action=transition.action)
    if transition.target != R.PENDING and transition.action != "confirm":
        fields.update(claim_pk=CLEAR, claim_sk=CLEAR, claimable_at=CLEAR)
    if transition.target == R.SUCCEEDED:
        fields["progress"] = 100
    # API.md "Retention": a run is kept so long after it ends (domain/retention.py)
    ended = _epoch(given) or clock.now_epoch()
    fields["expires_at"] = retention.item_expiry(ended) if transition.target in RUN_TERMINAL else CLEAR
    return fields


def run_change(action: str, run: RunRef, given: RunInputs) -> Change:
    """The one conditional write of `action` on `run`. Raises UnknownAction."""
    transition = transition_of(RUN_TRANSITIONS, "run", action)
    assert transition.build is not None
    fields, guard = transition.build(run, given)
    merged = {**fields, **_entry(transition, given)}
    return Change("run", (run.task_id, run.node), action, transition.sources, merged, guard)


def allowed_run_targets(source: str) -> frozenset[str]:
    return frozenset(t.target for t in RUN_TRANSITIONS.values() if source in t.sources and t.target is not None)
