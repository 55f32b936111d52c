"""The one transition table (API.md, "Statuses"): which status may follow which, and the
fields each status sets or clears on entry.

The expected tables below are written out by hand from API.md on purpose: a careless edit
of `TASK_TRANSITIONS` / `RUN_TRANSITIONS` must fail here rather than be mirrored.
"""

from __future__ import annotations

import itertools

import pytest

from chalicelib.domain.statuses import (
    RUN_STATUSES,
    RUN_TERMINAL,
    TASK_STATUSES,
    TASK_TERMINAL,
    RunStatus,
    TaskStatus,
)
from chalicelib.domain.transitions import (
    CLEAR,
    RUN_TRANSITIONS,
    TASK_TRANSITIONS,
    allowed_run_targets,
    allowed_task_targets,
    run_entry_fields,
    run_transition,
    task_entry_fields,
    task_transition,
)
from chalicelib.errors import FleetrunError, UnknownAction

NOW = "2026-11-22T18:07:19.384Z"

#: source -> the task statuses that may follow it
EXPECTED_TASK: dict[str, set[str]] = {
    "pending": {"running", "cancelling", "failed"},
    "running": {"completed", "partial_failure", "failed", "cancelling", "apply_pending", "pending"},
    "apply_pending": {"running", "discarded", "cancelling", "pending"},
    "cancelling": {"cancelled"},
    "completed": set(),
    "partial_failure": {"pending"},
    "failed": {"pending"},
    "cancelled": {"pending"},
    "discarded": set(),
}

#: source -> the node-run statuses that may follow it
EXPECTED_RUN: dict[str, set[str]] = {
    "pending": {"running", "cancelled"},
    "running": {"succeeded", "failed", "timed_out", "pending", "cancelled", "apply_pending"},
    "apply_pending": {"running", "pending", "cancelled"},
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
            assert transition.target in TASK_STATUSES, transition
        for transition in RUN_TRANSITIONS.values():
            assert transition.sources <= set(RUN_STATUSES), transition
            assert transition.target in RUN_STATUSES, transition

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

    def test_no_terminal_status_but_a_retryable_one_can_be_left(self):
        for status in TASK_TERMINAL_EXPECTED:
            retryable = status in {"failed", "partial_failure", "cancelled"}
            assert allowed_task_targets(status) == (frozenset({"pending"}) if retryable else frozenset())

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


class TestTaskEntryFields:
    @pytest.mark.parametrize("target", sorted(TASK_TERMINAL_EXPECTED))
    def test_entering_a_terminal_status_sets_completed_at_and_the_given_error(self, target):
        # WHEN a task enters a terminal status with an error message
        fields = task_entry_fields(target, NOW, "2 node(s) failed")
        # THEN
        assert fields["status"] == target
        assert fields["updated_at"] == NOW
        assert fields["completed_at"] == NOW
        assert fields["error_message"] == "2 node(s) failed"

    @pytest.mark.parametrize("target", sorted(TASK_TERMINAL_EXPECTED))
    def test_entering_a_terminal_status_without_error_writes_no_error(self, target):
        fields = task_entry_fields(target, NOW)
        assert fields["completed_at"] == NOW
        assert fields["error_message"] is None

    @pytest.mark.parametrize("target", sorted(set(EXPECTED_TASK) - TASK_TERMINAL_EXPECTED))
    def test_entering_an_active_status_clears_completed_at_and_error_message(self, target):
        # WHEN a task enters pending/running/apply_pending/cancelling, even if an error is passed
        fields = task_entry_fields(target, NOW, "stale message")
        # THEN both are cleared in the same change
        assert fields["status"] == target
        assert fields["updated_at"] == NOW
        assert "completed_at" in fields
        assert fields["completed_at"] is CLEAR
        assert "error_message" in fields
        assert fields["error_message"] is CLEAR

    def test_retry_clears_completed_at_and_error_message_in_the_same_change(self):
        # GIVEN a failed task (terminal: completed_at and error_message are set)
        assert "failed" in TASK_TRANSITIONS["retry"].sources
        # WHEN it is retried
        change = task_transition("retry", NOW, "ignored")
        # THEN the one change that moves it to pending also clears both fields
        assert change.target == "pending"
        assert change.fields["status"] == "pending"
        assert change.fields["completed_at"] is None
        assert change.fields["error_message"] is None
        assert change.fields["updated_at"] == NOW

    @pytest.mark.parametrize("action", sorted(TASK_TRANSITIONS))
    def test_every_action_writes_the_entry_fields_of_its_target(self, action):
        change = task_transition(action, NOW, "why")
        assert change.transition is TASK_TRANSITIONS[action]
        assert change.target == TASK_TRANSITIONS[action].target
        assert change.fields == task_entry_fields(change.target, NOW, "why")


class TestRunEntryFields:
    def test_running_sets_started_at_and_clears_completed_at_and_error(self):
        fields = run_entry_fields(RunStatus.RUNNING, NOW, "stale")
        assert fields["status"] == "running"
        assert fields["updated_at"] == NOW
        assert fields["started_at"] == NOW
        assert "completed_at" in fields
        assert fields["completed_at"] is CLEAR
        assert "error_message" in fields
        assert fields["error_message"] is CLEAR

    def test_pending_clears_timestamps_and_error_and_resets_progress(self):
        fields = run_entry_fields(RunStatus.PENDING, NOW, "stale")
        assert fields["status"] == "pending"
        assert fields["updated_at"] == NOW
        for name in ("started_at", "completed_at", "error_message"):
            assert name in fields, name
            assert fields[name] is CLEAR, name
        assert fields["progress"] == 0

    def test_succeeded_sets_progress_100_and_completed_at(self):
        fields = run_entry_fields(RunStatus.SUCCEEDED, NOW)
        assert fields["status"] == "succeeded"
        assert fields["progress"] == 100
        assert fields["completed_at"] == NOW
        assert fields["error_message"] is None

    @pytest.mark.parametrize("target", sorted(RUN_TERMINAL_EXPECTED - {"succeeded"}))
    def test_unsuccessful_end_sets_completed_at_and_error_but_keeps_progress(self, target):
        fields = run_entry_fields(target, NOW, "step exited 1")
        assert fields["status"] == target
        assert fields["completed_at"] == NOW
        assert fields["error_message"] == "step exited 1"
        assert "progress" not in fields
        assert "started_at" not in fields

    def test_apply_pending_keeps_started_at(self):
        fields = run_entry_fields(RunStatus.APPLY_PENDING, NOW)
        assert fields == {"status": "apply_pending", "updated_at": NOW}

    @pytest.mark.parametrize("action", sorted(set(RUN_TRANSITIONS) - {"claim_apply"}))
    def test_every_action_writes_the_entry_fields_of_its_target(self, action):
        change = run_transition(action, NOW, "why")
        assert change.transition is RUN_TRANSITIONS[action]
        assert change.fields == run_entry_fields(RUN_TRANSITIONS[action].target, NOW, "why")

    def test_the_apply_claim_keeps_the_started_at_of_the_plan(self):
        # GIVEN a planned run; WHEN its apply phase is claimed
        change = run_transition("claim_apply", NOW)
        # THEN it is running again, without a new start time
        assert change.target == "running"
        assert "started_at" not in change.fields
        assert change.fields == {"status": "running", "updated_at": NOW, "completed_at": None, "error_message": None}


class TestUnknownAction:
    def test_unknown_task_action_raises(self):
        with pytest.raises(UnknownAction, match="unknown task action 'explode'"):
            task_transition("explode", NOW)

    def test_unknown_run_action_raises(self):
        with pytest.raises(UnknownAction, match="unknown run action 'explode'"):
            run_transition("explode", NOW)

    def test_a_task_action_is_not_a_run_action(self):
        # `complete` is a task action only; runs `succeed`
        with pytest.raises(UnknownAction):
            run_transition("complete", NOW)
        with pytest.raises(UnknownAction):
            task_transition("succeed", NOW)

    def test_unknown_action_is_a_fleetrun_error(self):
        assert issubclass(UnknownAction, FleetrunError)


def test_status_constants_match_their_values():
    assert TaskStatus.APPLY_PENDING == "apply_pending"
    assert RunStatus.TIMED_OUT == "timed_out"
