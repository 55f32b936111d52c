"""The task transition table: for each action, the allowed sources, the guard, and every
attribute the write sets or clears.

Rules every status change follows (`_entry`):
- it stamps `updated_at`;
- leaving `pending` ends the wait for a concurrency key: `waiting_for` is cleared;
- entering a terminal status stamps `completed_at`, the error and the expiry (`expires_at`,
  domain/retention.py) and takes the task out of the active index; entering any other status
  clears all three and puts it (back) in;
- a status change (and a halt) makes the task due for the sweeper's look at once, a terminal
  status takes it out of the due index (domain/due.py);
- a new attempt (`retry`, `replan`) resets, in the same write, what belongs to an attempt:
  `attempt`, `retry_scope`, `halted`, the window base, `started_at` and the plan flags.

A caller names the action, the task (as read) and the data only it knows (an error message,
dispatch figures, the counts a retry leaves). Changes that keep the status (`halt`, the
window shift, growing the targets) are in the table too, with their guards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from chalicelib import clock
from chalicelib.domain import due, retention, window
from chalicelib.domain.retry_counting import counts_after_retry
from chalicelib.domain.statuses import RUN_STATUSES, TASK_ACTIVE, TASK_TERMINAL, TaskStatus
from chalicelib.domain.writes import CLEAR, Add, Change, Predicate, Transition, eq, missing, transition_of

S = TaskStatus
#: finished statuses a selector dispatch may take back to `running` with new nodes (the backfill
#: of a reused release); a failed task stopped for a reason, a cancelled one was stopped by a user
REOPENABLE: Final = frozenset({S.COMPLETED, S.PARTIAL_FAILURE})
#: the partition of the sparse active-task index
ACTIVE: Final = "ACTIVE"


class TaskRef(Protocol):
    """What a transition needs to know of the task it changes (a `Task` as read)."""

    task_id: str
    attempt: int
    counted_ver: int
    target_count: int
    target_chunks: int
    dispatch_chunks: int
    ordinal_next: int
    progress_sum: int
    counts: dict[str, int]
    waiting_for_task_id: str | None
    #: numbers the task's own writes (the sweeper's look is guarded by it)
    ver: int
    finished_base: int


@dataclass(frozen=True)
class TaskInputs:
    """The data only a caller knows."""

    now: str = ""
    error_message: str | None = None
    #: `retry`: `failed` or `all`
    scope: str | None = None
    #: `start`: the dispatch figures of the attempt
    created_count: int = 0
    skipped_count: int = 0
    ordinal_next: int = 0
    #: `reopen_window`: how far the window base moves down (`narrow_window`: up); `grow_targets`:
    #: the new nodes, the ordinals reserved and the target chunks added
    shift: int = 0
    new_targets: int = 0
    ordinals: int = 0
    chunks: int = 0
    #: `grow_targets`: the run partitions of each generation once the task grew
    #: (store/run_partitions.py `grown`), when the growth takes it past its partitions
    run_shards: tuple[int, ...] = ()
    #: `wait_for_key`: the task holding (or ahead in the queue of) the concurrency key, and its owner
    holder_task_id: str | None = None
    holder_owner: str | None = None
    #: `schedule_claim_check`: epoch seconds of the sweeper's next look at the unclaimed runs
    claim_check_at: float | None = None
    #: `schedule_look`: epoch seconds of the sweeper's next look at the task (domain/due.py)
    look_at: float | None = None
    #: `start`, `dispatch_chunk`, `grow_targets` with a chunked dispatch (services/dispatch_chunks.py):
    #: its id, the chunk just done, how many chunks and nodes it has, where its nodes start
    dispatch_id: str | None = None
    chunk: int = 0
    dispatch_chunks: int = 0
    dispatch_total: int = 0
    first_ordinal: int = 0


Builder = Callable[[TaskRef, TaskInputs], tuple[dict[str, Any], tuple[Predicate, ...]]]


def _same_attempt(task: TaskRef) -> tuple[Predicate, ...]:
    return (eq("attempt", int(task.attempt)),)


def _counts_as_read(task: TaskRef) -> tuple[Predicate, ...]:
    """The aggregated counts the decision was made from are still the stored ones."""
    return eq("counted_ver", int(task.counted_ver)), *_same_attempt(task), eq("target_count", int(task.target_count))


def _new_attempt(task: TaskRef, scope: str, finished_base: int) -> dict[str, Any]:
    return {
        "attempt": int(task.attempt) + 1, "retry_scope": scope, "halted": False, "finished_base": finished_base,
        "started_at": CLEAR, "plan_confirmed": CLEAR, "awaiting_since": CLEAR,
    }


def _start(task: TaskRef, given: TaskInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    fields = {
        "started_at": given.now, "dispatch_triggered": True, "dispatched_attempt": int(task.attempt),
        "created_count": given.created_count, "skipped_count": given.skipped_count,
        "ordinal_next": given.ordinal_next,
        # started after its first chunk: the later chunks record their progress (`dispatch_chunk`)
        "dispatch_id": given.dispatch_id or CLEAR, "dispatch_first_chunk": 0, "dispatch_first_ordinal": 0,
        "dispatch_total": given.dispatch_total, "dispatch_chunks": given.dispatch_chunks,
        "dispatched_through": 1, "dispatch_progress_at": given.now,
    }
    return fields, _same_attempt(task)


def _dispatch_chunk(task: TaskRef, given: TaskInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    """One more chunk of the dispatch in progress is done: guarded by the chunk it follows, so a
    duplicate or late chunk writes nothing (and adds its figures once)."""
    fields = {
        "dispatched_through": given.chunk + 1, "dispatch_progress_at": given.now,
        "created_count": Add(given.created_count), "skipped_count": Add(given.skipped_count),
        "ordinal_next": given.ordinal_next,
    }
    return fields, (*_same_attempt(task), eq("dispatch_id", given.dispatch_id), eq("dispatched_through", given.chunk))


def _finish(task: TaskRef, given: TaskInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    return {}, _counts_as_read(task)


def _finish_cancel(task: TaskRef, given: TaskInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    """A cancelled task makes no more runs: the chunks its dispatch had left are done, so it
    shows `dispatch.state` done (a chunk job racing this write cancels the runs it just made,
    services/dispatch.py). A retry's chunks still to reset runs keep their runs counted pending,
    so the task cannot get here before they ran."""
    fields, guard = _finish(task, given)
    return {**fields, "dispatched_through": int(task.dispatch_chunks)}, guard


def _no_guard(task: TaskRef, given: TaskInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    return {}, ()


def _retry(task: TaskRef, given: TaskInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    assert given.scope is not None
    counts, moved = counts_after_retry(task.counts, given.scope)
    fields = {
        **_new_attempt(task, given.scope, window.base_for_new_attempt(counts)),
        "progress_sum": int(task.progress_sum) - 100 * moved,
        # a task with a concurrency key queues again, behind the tasks already waiting
        "queued_at": given.now,
        **{f"counts.{s}": counts[s] for s in RUN_STATUSES},
    }
    guard = (*_same_attempt(task), *(eq(f"counts.{s}", int(task.counts.get(s, 0))) for s in RUN_STATUSES))
    return fields, guard


def _await_confirmation(task: TaskRef, given: TaskInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    """Never after the attempt's plan was confirmed: a confirmation leaves the task `running` with
    the counts it was settled from, so a settle read before it would otherwise pass again."""
    return {"awaiting_since": given.now}, (
        eq("counted_ver", int(task.counted_ver)), *_same_attempt(task), missing("plan_confirmed"))


def _confirm(task: TaskRef, given: TaskInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    return {"plan_confirmed": True, "awaiting_since": CLEAR}, (*_same_attempt(task), missing("plan_confirmed"))


def _same_attempt_only(task: TaskRef, given: TaskInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    return {}, _same_attempt(task)


def _replan(task: TaskRef, given: TaskInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    return _new_attempt(task, "replan", 0), _same_attempt(task)


def _halt(task: TaskRef, given: TaskInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    return {"halted": True}, (*_same_attempt(task), eq("halted", False))


def _reopen_window(task: TaskRef, given: TaskInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    # more ordinals may start from now: their claim timeout counts from here (`window_moved_at`);
    # the shift was worked out from these counts and this window: a second look that worked out
    # the same shift from the same read (a duplicated job) must not release a second run
    guard = (*_counts_as_read(task), eq("finished_base", int(task.finished_base)))
    return {"finished_base": Add(-given.shift), "window_moved_at": given.now}, guard


def _wait_for_key(task: TaskRef, given: TaskInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    """Record whom the task waits for, once per holder: guarded by the holder it read, so a
    redelivered dispatch job (or a racing one) writes nothing the second time."""
    assert given.holder_task_id is not None
    fields = {"waiting_for_task_id": given.holder_task_id, "waiting_for_owner": given.holder_owner or CLEAR}
    return fields, (*_same_attempt(task), eq("waiting_for_task_id", task.waiting_for_task_id))


def _look_due(task: TaskRef, at: float) -> dict[str, Any]:
    due_pk, due_sk = due.task_due_keys(task.task_id, at)
    return {"due_pk": due_pk, "due_sk": due_sk}


def _schedule_look(task: TaskRef, given: TaskInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    """The sweeper's next look at the task (services/due_sweeps.py), decided from the task as read:
    guarded by its `ver`, so a status change meanwhile (due at once) is never pushed back."""
    assert given.look_at is not None
    return _look_due(task, given.look_at), (eq("ver", int(task.ver)),)


def _schedule_claim_check(task: TaskRef, given: TaskInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    return {"claim_check_at": given.claim_check_at}, _same_attempt(task)


def _narrow_window(task: TaskRef, given: TaskInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    """Runs that end before their turn (their runner was deregistered) must not widen the window
    (domain/window.py): the base moves up by as many."""
    return {"finished_base": Add(given.shift)}, _same_attempt(task)


def _grow_targets(task: TaskRef, given: TaskInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    fields: dict[str, Any] = {
        "target_count": Add(given.new_targets), "ordinal_next": Add(given.ordinals),
        "target_chunks": Add(given.chunks), "created_count": Add(given.ordinals),
    }
    if len(given.run_shards) > 1:  # (the guard on ordinal_next keeps it from a stale read)
        fields.update({"run_shards": given.run_shards[-1], "run_shards_before": list(given.run_shards[:-1])})
    if given.dispatch_id is None:
        return fields, (eq("ordinal_next", int(task.ordinal_next)), eq("halted", False))
    # too many nodes for one request: the dispatch queue creates their runs in chunks
    fields.update({
        "dispatch_id": given.dispatch_id, "dispatch_first_chunk": int(task.target_chunks),
        "dispatch_first_ordinal": given.first_ordinal, "dispatch_total": given.dispatch_total,
        "dispatch_chunks": given.dispatch_chunks, "dispatched_through": 0, "dispatch_progress_at": given.now,
    })
    return fields, (eq("ordinal_next", int(task.ordinal_next)), eq("halted", False),
                    eq("target_chunks", int(task.target_chunks)))


def _t(action: str, sources: set[str], target: str | None, build: Builder) -> Transition:
    return Transition(action, frozenset(sources), target, build)


TASK_TRANSITIONS: Final[dict[str, Transition]] = {
    t.action: t
    for t in (
        # the dispatch job, once the runs of the attempt exist
        _t("start", {S.PENDING}, S.RUNNING, _start),
        # the finishing rules, from the aggregated counts they read
        _t("complete", {S.RUNNING}, S.COMPLETED, _finish),
        _t("partially_fail", {S.RUNNING}, S.PARTIAL_FAILURE, _finish),
        _t("fail", {S.RUNNING, S.PENDING}, S.FAILED, _finish),
        _t("finish_cancel", {S.CANCELLING}, S.CANCELLED, _finish_cancel),
        # the user
        _t("cancel", {S.PENDING, S.RUNNING, S.APPLY_PENDING}, S.CANCELLING, _no_guard),
        _t("retry", {S.FAILED, S.PARTIAL_FAILURE, S.CANCELLED}, S.PENDING, _retry),
        _t("confirm", {S.APPLY_PENDING}, S.RUNNING, _confirm),
        _t("discard", {S.APPLY_PENDING}, S.DISCARDED, _same_attempt_only),
        # two-phase: the plan is ready, or lost
        _t("await_confirmation", {S.RUNNING}, S.APPLY_PENDING, _await_confirmation),
        _t("replan", {S.APPLY_PENDING, S.RUNNING}, S.PENDING, _replan),
        # the status stays
        _t("halt", {S.RUNNING}, None, _halt),
        _t("reopen_window", {S.RUNNING}, None, _reopen_window),
        _t("narrow_window", {S.PENDING, S.RUNNING}, None, _narrow_window),
        _t("grow_targets", {S.PENDING, S.RUNNING}, None, _grow_targets),
        # one more chunk of a dispatch done (a cancelled retry still resets the rest of its runs)
        _t("dispatch_chunk", {S.RUNNING, S.CANCELLING}, None, _dispatch_chunk),
        # a task queued behind its concurrency key records whom it waits for (services/waiting.py)
        _t("wait_for_key", {S.PENDING}, None, _wait_for_key),
        # the sweeper's next look at the runs nobody claimed (services/claim_timeouts.py)
        _t("schedule_claim_check", {S.RUNNING}, None, _schedule_claim_check),
        # the sweeper's next look at the task (services/due_sweeps.py); keeps `updated_at`
        _t("schedule_look", set(TASK_ACTIVE), None, _schedule_look),
        # `dispatch {"selector": true}` reaching nodes added to a finished release's group
        _t("reopen_targets", set(REOPENABLE), S.RUNNING, _grow_targets),
    )
}

#: the action that finishes a running task in each terminal status
FINISH_ACTIONS: Final = {S.COMPLETED: "complete", S.PARTIAL_FAILURE: "partially_fail", S.FAILED: "fail"}


def _entry(transition: Transition, task: TaskRef, given: TaskInputs) -> dict[str, Any]:
    if transition.action == "schedule_look":  # bookkeeping: the sweeper's graces count from `updated_at`
        return {}
    fields: dict[str, Any] = {"updated_at": given.now}
    if transition.action == "halt":  # the sweeper re-sends the halt job while runs wait
        fields.update(_look_due(task, clock.parse_rfc3339(given.now)))
    if transition.target is None:
        return fields
    terminal = transition.target in TASK_TERMINAL
    fields.update(
        status=transition.target,
        completed_at=given.now if terminal else CLEAR,
        error_message=given.error_message if terminal and given.error_message else CLEAR,
        active_pk=CLEAR if terminal else ACTIVE,
        active_sk=CLEAR if terminal else task.task_id,
        # API.md "Retention": the task is kept so long after it ends (domain/retention.py)
        expires_at=retention.task_expiry(given.now or clock.now_iso()) if terminal else CLEAR,
    )
    # a status change is due for a look at once; the look schedules the next (domain/due.py)
    fields.update({"due_pk": CLEAR, "due_sk": CLEAR} if terminal else _look_due(task, clock.parse_rfc3339(given.now)))
    if transition.target != S.PENDING:
        fields.update(waiting_for_task_id=CLEAR, waiting_for_owner=CLEAR)
    return fields


def task_change(action: str, task: TaskRef, given: TaskInputs) -> Change:
    """The one conditional write of `action` on `task`. Raises UnknownAction."""
    transition = transition_of(TASK_TRANSITIONS, "task", action)
    assert transition.build is not None
    fields, guard = transition.build(task, given)
    # `ver` numbers the task's own writes (the aggregator's counter writes leave it): the stream
    # aggregator counts each status change once in the statistics (services/aggregation.py)
    return Change("task", (task.task_id,), action, transition.sources,
                  {**fields, **_entry(transition, task, given), "ver": Add(1)}, guard)


def allowed_task_targets(source: str) -> frozenset[str]:
    return frozenset(t.target for t in TASK_TRANSITIONS.values() if source in t.sources and t.target is not None)
