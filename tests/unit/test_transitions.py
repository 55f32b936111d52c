"""The one transition table (API.md, "Statuses"): which status may follow which, and the
fields each status sets or clears on entry.

The expected tables below are written out by hand from API.md on purpose: a careless edit
of `TASK_TRANSITIONS` / `RUN_TRANSITIONS` must fail here rather than be mirrored.
"""

from __future__ import annotations

import itertools

import pytest

from chalicelib.domain.records import NodeRun, Task
from chalicelib.domain.run_transitions import RUN_TRANSITIONS, RunInputs, allowed_run_targets, claim_keys, run_change
from chalicelib.domain.statuses import (
    RUN_STATUSES,
    RUN_TERMINAL,
    TASK_STATUSES,
    TASK_TERMINAL,
    RunStatus,
    TaskStatus,
)
from chalicelib.domain.task_transitions import TASK_TRANSITIONS, TaskInputs, allowed_task_targets, task_change
from chalicelib.domain.writes import CLEAR, Add
from chalicelib.errors import FleetrunError, UnknownAction

NOW = "2026-11-22T18:07:19.384Z"

#: source -> the task statuses that may follow it (a finished release runs again when a selector
#: dispatch adds a node to it)
EXPECTED_TASK: dict[str, set[str]] = {
    "pending": {"running", "cancelling", "failed"},
    "running": {"completed", "partial_failure", "failed", "cancelling", "apply_pending", "pending"},
    "apply_pending": {"running", "discarded", "cancelling", "pending"},
    "cancelling": {"cancelled"},
    "completed": {"running"},
    "partial_failure": {"pending", "running"},
    "failed": {"pending"},
    "cancelled": {"pending"},
    "discarded": set(),
}

#: source -> the node-run statuses that may follow it (a waiting run fails when its node is deregistered,
#: and times out when nobody claims it within the task's claim_timeout_seconds)
EXPECTED_RUN: dict[str, set[str]] = {
    "pending": {"running", "cancelled", "failed", "timed_out"},
    "running": {"succeeded", "failed", "timed_out", "pending", "cancelled", "apply_pending"},
    "apply_pending": {"running", "pending", "cancelled", "failed"},
    "succeeded": {"pending"},
    "failed": {"pending"},
    "timed_out": {"pending"},
    "cancelled": {"pending"},
}

TASK_TERMINAL_EXPECTED = {"completed", "partial_failure", "failed", "cancelled", "discarded"}
RUN_TERMINAL_EXPECTED = {"succeeded", "failed", "timed_out", "cancelled"}


def _table_allows(table, source: str, target: str) -> bool:
    return any(source in t.sources and t.target == target for t in table.values())


class TestStatusesAreTheDocumentedOnes:
    def test_task_statuses(self):
        assert set(TASK_STATUSES) == set(EXPECTED_TASK)
        assert len(TASK_STATUSES) == len(set(TASK_STATUSES))

    def test_run_statuses(self):
        assert set(RUN_STATUSES) == set(EXPECTED_RUN)
        assert len(RUN_STATUSES) == len(set(RUN_STATUSES))

    def test_terminal_statuses(self):
        assert set(TASK_TERMINAL) == TASK_TERMINAL_EXPECTED
        assert set(RUN_TERMINAL) == RUN_TERMINAL_EXPECTED

    def test_every_transition_names_known_statuses(self):
        for transition in TASK_TRANSITIONS.values():
            assert transition.sources <= set(TASK_STATUSES), transition
            assert transition.target is None or transition.target in TASK_STATUSES, transition
        for run_transition in RUN_TRANSITIONS.values():
            assert run_transition.sources <= set(RUN_STATUSES), run_transition
            assert run_transition.target is None or run_transition.target in RUN_STATUSES, run_transition

    def test_actions_are_keyed_by_their_own_name(self):
        assert all(name == t.action for name, t in TASK_TRANSITIONS.items())
        assert all(name == t.action for name, t in RUN_TRANSITIONS.items())


class TestTaskTransitionTable:
    @pytest.mark.parametrize(
        ("source", "target"),
        list(itertools.product(EXPECTED_TASK, EXPECTED_TASK)),
    )
    def test_pair_is_allowed_iff_documented(self, source, target):
        # GIVEN the documented table
        expected = target in EXPECTED_TASK[source]
        # WHEN / THEN some transition of the table goes from source to target exactly then
        assert _table_allows(TASK_TRANSITIONS, source, target) is expected
        assert (target in allowed_task_targets(source)) is expected

    @pytest.mark.parametrize("source", sorted(EXPECTED_TASK))
    def test_allowed_targets_of_each_source(self, source):
        assert allowed_task_targets(source) == frozenset(EXPECTED_TASK[source])

    def test_a_terminal_status_is_left_only_by_a_retry_or_a_reopening_selector_dispatch(self):
        for status in TASK_TERMINAL_EXPECTED:
            retryable = status in {"failed", "partial_failure", "cancelled"}
            reopenable = status in {"completed", "partial_failure"}
            expected = {"pending"} if retryable else set()
            assert allowed_task_targets(status) == frozenset(expected | ({"running"} if reopenable else set()))
            leaving = {t.action for t in TASK_TRANSITIONS.values() if status in t.sources}
            assert leaving <= {"retry", "reopen_targets"}

    def test_unknown_status_has_no_targets(self):
        assert allowed_task_targets("bogus") == frozenset()

    @pytest.mark.parametrize(
        ("action", "sources", "target"),
        [
            ("cancel", {"pending", "running", "apply_pending"}, "cancelling"),
            ("retry", {"failed", "partial_failure", "cancelled"}, "pending"),
            ("confirm", {"apply_pending"}, "running"),
            ("discard", {"apply_pending"}, "discarded"),
        ],
    )
    def test_user_actions_are_allowed_from_the_documented_statuses(self, action, sources, target):
        # API.md, "Lifecycle actions": the `allowed from` column
        transition = TASK_TRANSITIONS[action]
        assert transition.sources == frozenset(sources)
        assert transition.target == target


class TestRunTransitionTable:
    @pytest.mark.parametrize(
        ("source", "target"),
        list(itertools.product(EXPECTED_RUN, EXPECTED_RUN)),
    )
    def test_pair_is_allowed_iff_documented(self, source, target):
        expected = target in EXPECTED_RUN[source]
        assert _table_allows(RUN_TRANSITIONS, source, target) is expected
        assert (target in allowed_run_targets(source)) is expected

    @pytest.mark.parametrize("source", sorted(EXPECTED_RUN))
    def test_allowed_targets_of_each_source(self, source):
        assert allowed_run_targets(source) == frozenset(EXPECTED_RUN[source])

    def test_retry_failed_leaves_succeeded_runs_alone(self):
        # API.md, retry: scope `failed` resets failed/timed_out/cancelled; scope `all` every finished node
        assert RUN_TRANSITIONS["retry_failed"].sources == frozenset({"failed", "timed_out", "cancelled"})
        assert RUN_TRANSITIONS["retry_all"].sources == frozenset({"succeeded", "failed", "timed_out", "cancelled"})

    def test_unknown_status_has_no_targets(self):
        assert allowed_run_targets("bogus") == frozenset()


def _task(**values) -> Task:
    base = {"task_id": "T1", "type": "shell", "owner": "alice", "status": "failed", "created_at": NOW,
            "updated_at": NOW, "max_concurrency": 10, "attempt": 2, "target_count": 4, "counted_ver": 42,
            "progress_sum": 400, "counts": {**dict.fromkeys(RUN_STATUSES, 0), "succeeded": 1, "failed": 2,
                                              "timed_out": 1}}
    return Task(**{**base, **values})


def _run(**values) -> NodeRun:
    base = {"task_id": "T1", "node": "n-1", "runner": "n-1", "type": "shell", "owner": "alice",
            "status": "running", "attempt": 2, "generation": 1, "ordinal": 7, "priority": 5}
    return NodeRun(**{**base, **values})


#: the fields a run must not carry into a new attempt
ATTEMPT_FIELDS = ("lease_owner", "lease_expires_at", "reservation_owner", "reservation_expires_at", "confirmed",
                  "output", "output_key", "final_events", "started_at", "completed_at", "error_message", "step")

#: every run action with inputs that make its builder happy
RUN_INPUTS = RunInputs(now=NOW, now_epoch=1000.0, error_message="why", runner="n-1", lease_expires_at=1030,
                       reservation_expires_at=1030.0, step="run", phase="run", generation=2, ordinal=3,
                       claim_sk="05#T1#000007")


class TestTaskChanges:
    @pytest.mark.parametrize("action", sorted(a for a, t in TASK_TRANSITIONS.items() if t.target in TASK_TERMINAL))
    def test_entering_a_terminal_status_sets_completed_at_the_error_and_leaves_the_active_index(self, action):
        change = task_change(action, _task(status="running"), TaskInputs(now=NOW, error_message="2 node(s) failed"))
        assert change.fields["completed_at"] == NOW
        assert change.fields["error_message"] == "2 node(s) failed"
        assert change.fields["active_pk"] is CLEAR
        assert change.fields["active_sk"] is CLEAR

    @pytest.mark.parametrize("action", sorted(a for a, t in TASK_TRANSITIONS.items()
                                              if t.target is not None and t.target not in TASK_TERMINAL))
    def test_entering_an_active_status_clears_completed_at_and_error_and_joins_the_active_index(self, action):
        # WHEN a task enters pending/running/apply_pending/cancelling, even if an error is passed
        change = task_change(action, _task(), TaskInputs(now=NOW, error_message="stale", scope="failed"))
        # THEN both are cleared in the same change, and the sweeper's index lists it
        assert change.fields["status"] == TASK_TRANSITIONS[action].target
        assert change.fields["completed_at"] is CLEAR
        assert change.fields["error_message"] is CLEAR
        assert (change.fields["active_pk"], change.fields["active_sk"]) == ("ACTIVE", "T1")

    def test_retry_clears_completed_at_in_same_write_and_moves_the_counts_it_resets(self):
        # GIVEN a failed task: 1 succeeded, 2 failed, 1 timed out, attempt 2
        task = _task()
        # WHEN it is retried for its failed nodes
        change = task_change("retry", task, TaskInputs(now=NOW, scope="failed"))
        # THEN one write: a new attempt, pending, old outcome cleared, 3 runs counted pending
        assert change.sources == frozenset({"failed", "partial_failure", "cancelled"})
        assert change.fields["status"] == "pending"
        assert change.fields["completed_at"] is CLEAR
        assert change.fields["error_message"] is CLEAR
        assert change.fields["attempt"] == 3
        assert change.fields["started_at"] is CLEAR
        assert change.fields["counts.pending"] == 3
        assert change.fields["counts.failed"] == 0
        assert change.fields["counts.succeeded"] == 1
        assert change.fields["progress_sum"] == 100
        assert change.fields["finished_base"] == 1  # the succeeded run stays finished
        assert change.fields["halted"] is False
        assert change.fields["queued_at"] == NOW

    def test_retry_is_guarded_by_the_counts_and_attempt_it_was_decided_from(self):
        change = task_change("retry", _task(), TaskInputs(now=NOW, scope="all"))
        guarded = {p.attribute: p.value for p in change.guard}
        assert guarded["attempt"] == 2
        assert guarded["counts.failed"] == 2
        assert guarded["counts.succeeded"] == 1

    @pytest.mark.parametrize("action", ["retry", "replan"])
    def test_a_new_attempt_resets_the_same_fields_whichever_action_starts_it(self, action):
        change = task_change(action, _task(status="apply_pending"), TaskInputs(now=NOW, scope="all"))
        for name in ("started_at", "plan_confirmed", "awaiting_since"):
            assert change.fields[name] is CLEAR, name
        assert change.fields["attempt"] == 3
        assert change.fields["halted"] is False
        assert change.fields["retry_scope"] == ("all" if action == "retry" else "replan")

    def test_finishing_is_guarded_by_the_counts_it_read(self):
        change = task_change("complete", _task(status="running"), TaskInputs(now=NOW))
        guarded = {p.attribute: p.value for p in change.guard}
        assert guarded == {"counted_ver": 42, "attempt": 2, "target_count": 4}

    def test_start_records_the_dispatch_figures_and_the_start(self):
        change = task_change("start", _task(status="pending"), TaskInputs(now=NOW, created_count=4, ordinal_next=4))
        assert change.fields["started_at"] == NOW
        assert change.fields["dispatched_attempt"] == 2
        assert change.fields["created_count"] == 4

    def test_growing_targets_adds_without_reading_and_is_guarded_by_the_ordinals_read(self):
        task = _task(status="running", ordinal_next=4)
        change = task_change("grow_targets", task, TaskInputs(now=NOW, new_targets=2, ordinals=3, chunks=1))
        assert change.fields["target_count"] == Add(2)
        assert change.fields["ordinal_next"] == Add(3)
        assert "status" not in change.fields
        assert {p.attribute: p.value for p in change.guard}["ordinal_next"] == 4

    @pytest.mark.parametrize("finished", ["completed", "partial_failure"])
    def test_reopening_a_finished_task_grows_it_and_runs_it_again_in_one_write(self, finished):
        # GIVEN a finished task
        task = _task(status=finished, ordinal_next=4)
        # WHEN a selector dispatch adds a node to it
        change = task_change("reopen_targets", task, TaskInputs(now=NOW, new_targets=1, ordinals=1, chunks=1))
        # THEN the same write grows its targets, makes it running and clears what a finish set
        assert (change.fields["status"], change.fields["target_count"]) == ("running", Add(1))
        assert change.fields["completed_at"] is CLEAR
        assert change.fields["error_message"] is CLEAR
        assert change.fields["active_pk"] == "ACTIVE"
        assert change.sources == {"completed", "partial_failure"}

    def test_narrowing_the_window_adds_to_its_base_within_the_attempt_read(self):
        change = task_change("narrow_window", _task(status="running"), TaskInputs(now=NOW, shift=2))
        assert change.fields["finished_base"] == Add(2)
        assert {p.attribute: p.value for p in change.guard} == {"attempt": 2}


class TestRunChanges:
    @pytest.mark.parametrize("action", sorted(a for a, t in RUN_TRANSITIONS.items() if t.target == "pending"))
    def test_entering_pending_makes_the_run_claimable_and_clears_the_attempt_before(self, action):
        # GIVEN a run that held a lease, a reservation and an output
        run = _run(status="apply_pending" if action.startswith("replan") else "failed")
        # WHEN any action brings it back to pending
        change = run_change(action, run, RUN_INPUTS)
        # THEN it is claimable by its runner, one attempt later, with nothing of the old attempt
        assert change.fields["claim_pk"] == "RUNNER#n-1"
        assert change.fields["claim_sk"].startswith("05#T1#")
        assert change.fields["attempt"] == 3
        assert change.fields["progress"] == 0
        assert change.fields["cancel_requested"] is False
        for name in ATTEMPT_FIELDS:
            assert change.fields[name] is CLEAR, name

    @pytest.mark.parametrize("action", sorted(a for a, t in RUN_TRANSITIONS.items()
                                              if t.target not in (None, "pending")))
    def test_every_other_status_change_clears_the_claim_keys(self, action):
        change = run_change(action, _run(), RUN_INPUTS)
        assert change.fields["claim_pk"] is CLEAR
        assert change.fields["claim_sk"] is CLEAR
        assert change.fields["last_action"] == action

    def test_confirm_makes_the_planned_run_claimable_by_its_runner_only(self):
        change = run_change("confirm", _run(status="apply_pending"), RUN_INPUTS)
        assert (change.fields["claim_pk"], change.fields["claim_sk"]) == claim_keys("n-1", 5, "T1", 7)
        assert {p.attribute for p in change.guard} >= {"reservation_owner", "reservation_expires_at", "confirmed"}

    @pytest.mark.parametrize("action", ["retry_failed", "retry_all", "replan_lapsed", "replan_lost",
                                        "replan_apply_lapsed"])
    def test_a_new_task_attempt_moves_the_run_into_it(self, action):
        change = run_change(action, _run(status="failed"), RUN_INPUTS)
        assert change.fields["generation"] == 2
        assert change.fields["reset_gen"] == 2

    def test_a_released_lease_keeps_the_ordinal_and_the_task_attempt(self):
        change = run_change("release", _run(), RUN_INPUTS)
        assert change.fields["ordinal"] == 7
        assert "generation" not in change.fields
        assert {p.attribute: p.op for p in change.guard} == {"attempt": "==", "lease_expires_at": "<"}

    def test_claim_takes_the_lease_and_starts_the_run(self):
        change = run_change("claim", _run(status="pending"), RUN_INPUTS)
        assert change.fields["started_at"] == NOW
        assert change.fields["lease_owner"] == "n-1"
        assert change.fields["lease_expires_at"] == 1030
        assert change.fields["completed_at"] is CLEAR
        assert change.fields["error_message"] is CLEAR

    def test_the_apply_claim_keeps_the_started_at_of_the_plan(self):
        # GIVEN a planned, confirmed run; WHEN its apply phase is claimed
        change = run_change("claim_apply", _run(status="apply_pending"), RUN_INPUTS)
        # THEN it is running again without a new start time, and the reservation is spent
        assert change.fields["status"] == "running"
        assert "started_at" not in change.fields
        assert change.fields["phase"] == "apply"
        assert change.fields["reservation_expires_at"] is CLEAR

    def test_succeeding_sets_progress_100_and_drops_the_lease(self):
        change = run_change("succeed", _run(), RUN_INPUTS)
        assert change.fields["progress"] == 100
        assert change.fields["completed_at"] == NOW
        assert change.fields["lease_expires_at"] is CLEAR

    @pytest.mark.parametrize("action", ["fail", "end_cancelled", "time_out", "cancel", "orphan"])
    def test_an_unsuccessful_end_sets_completed_at_and_error_but_keeps_progress(self, action):
        change = run_change(action, _run(), RUN_INPUTS)
        assert change.fields["completed_at"] == NOW
        assert change.fields["error_message"] == "why"
        assert "progress" not in change.fields
        assert "started_at" not in change.fields

    def test_what_the_leaseholder_does_is_guarded_by_its_lease(self):
        for action in ("succeed", "fail", "end_cancelled", "heartbeat", "await_confirmation", "request_cancel",
                       "give_back"):
            guarded = {p.attribute: p.value for p in run_change(action, _run(), RUN_INPUTS).guard}
            assert guarded == {"status": "running", "attempt": 2, "lease_owner": "n-1"}, action

    def test_a_run_of_a_deregistered_node_fails_only_in_the_attempt_it_was_read_in(self):
        change = run_change("orphan", _run(status="pending"), RUN_INPUTS)
        assert change.sources == frozenset({"pending", "apply_pending"})
        assert change.fields["status"] == "failed"
        assert {p.attribute: p.value for p in change.guard} == {"attempt": 2, "generation": 2}

    def test_a_lease_given_back_waits_for_the_same_runner_at_the_same_place(self):
        change = run_change("give_back", _run(), RUN_INPUTS)
        assert change.fields["status"] == "pending"
        assert change.fields["ordinal"] == 7
        assert change.fields["claim_pk"] == "RUNNER#n-1"
        assert "generation" not in change.fields

    def test_a_heartbeat_keeps_the_status(self):
        change = run_change("heartbeat", _run(), RunInputs(now=NOW, runner="n-1", lease_expires_at=9, progress=40))
        assert "status" not in change.fields
        # (and leaves the run's lease entry in the sweeper's due index where it is: domain/due.py)
        assert change.fields == {"lease_expires_at": 9, "progress": 40, "updated_at": NOW, "ver": Add(1)}


class TestUnknownAction:
    def test_unknown_task_action_raises(self):
        with pytest.raises(UnknownAction, match="unknown task action 'explode'"):
            task_change("explode", _task(), TaskInputs(now=NOW))

    def test_unknown_run_action_raises(self):
        with pytest.raises(UnknownAction, match="unknown run action 'explode'"):
            run_change("explode", _run(), RUN_INPUTS)

    def test_a_task_action_is_not_a_run_action(self):
        # `complete` is a task action only; runs `succeed`
        with pytest.raises(UnknownAction):
            run_change("complete", _run(), RUN_INPUTS)
        with pytest.raises(UnknownAction):
            task_change("succeed", _task(), TaskInputs(now=NOW))

    def test_unknown_action_is_a_fleetrun_error(self):
        assert issubclass(UnknownAction, FleetrunError)


def test_status_constants_match_their_values():
    assert TaskStatus.APPLY_PENDING == "apply_pending"
    assert RunStatus.TIMED_OUT == "timed_out"
