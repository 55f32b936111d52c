"""Runs that can't hang, the pure rules: the `claim_timeout` run transition, the claimable clock
every entry into `pending` starts, when a run's claim deadline is (never early), why a runner
did not claim, and the task's record of whom it waits for on its concurrency key."""

from __future__ import annotations

import pytest

from chalicelib import clock
from chalicelib.domain import claim_deadlines
from chalicelib.domain.claim_deadlines import WindowState
from chalicelib.domain.records import Node, NodeRun, Task
from chalicelib.domain.run_transitions import RUN_TRANSITIONS, RunInputs, run_change
from chalicelib.domain.statuses import RUN_STATUSES, TASK_STATUSES
from chalicelib.domain.task_transitions import TASK_TRANSITIONS, TaskInputs, task_change
from chalicelib.domain.writes import CLEAR
from chalicelib.services.runner_state import why_unclaimed

NOW = "2026-11-22T18:07:19.384Z"
EPOCH = clock.parse_rfc3339(NOW)


def _run(**values) -> NodeRun:
    base = {"task_id": "T1", "node": "edge-12", "runner": "edge-12", "type": "shell", "owner": "alice",
            "status": "pending", "attempt": 2, "generation": 1, "ordinal": 3, "priority": 5, "claimable_at": 900.0}
    return NodeRun(**{**base, **values})


def _task(**values) -> Task:
    base = {"task_id": "T1", "type": "shell", "owner": "alice", "status": "pending", "created_at": NOW,
            "updated_at": NOW, "max_concurrency": 2, "attempt": 1}
    return Task(**{**base, **values})


INPUTS = RunInputs(now=NOW, now_epoch=EPOCH, error_message="runner edge-12 is not a registered node", generation=1,
                   runner="edge-12", lease_expires_at=1030, step="run", phase="run", ordinal=3, claim_sk="05#T1#000003")


class TestTheClaimTimeoutTransition:
    @pytest.mark.parametrize("source", RUN_STATUSES)
    def test_only_a_pending_run_can_time_out_unclaimed(self, source):
        allowed = source in RUN_TRANSITIONS["claim_timeout"].sources
        assert allowed is (source == "pending")
        assert RUN_TRANSITIONS["claim_timeout"].target == "timed_out"

    def test_it_ends_the_run_with_the_reason_and_makes_it_unclaimable(self):
        change = run_change("claim_timeout", _run(), INPUTS)
        assert change.fields["status"] == "timed_out"
        assert change.fields["error_message"] == "runner edge-12 is not a registered node"
        assert change.fields["completed_at"] == NOW
        for name in ("claim_pk", "claim_sk", "claimable_at"):
            assert change.fields[name] is CLEAR, name
        assert change.fields["last_action"] == "claim_timeout"

    def test_it_is_guarded_by_the_attempt_and_task_attempt_it_was_decided_from(self):
        # a run offered again (attempt + 1) or reset by a retry (generation + 1) meanwhile is not hit
        change = run_change("claim_timeout", _run(), INPUTS)
        assert {p.attribute: p.value for p in change.guard} == {"attempt": 2, "generation": 1}
        assert change.sources == frozenset({"pending"})


class TestTheClaimableClock:
    @pytest.mark.parametrize("action", sorted(a for a, t in RUN_TRANSITIONS.items() if t.target == "pending"))
    def test_every_entry_into_pending_starts_the_clock_afresh(self, action):
        run = _run(status="apply_pending" if action.startswith("replan") else "failed")
        change = run_change(action, run, INPUTS)
        assert change.fields["claimable_at"] == EPOCH

    def test_the_clock_is_read_from_the_timestamp_when_no_epoch_is_given(self):
        change = run_change("give_back", _run(status="running"), RunInputs(now=NOW, runner="edge-12"))
        assert change.fields["claimable_at"] == EPOCH

    @pytest.mark.parametrize("action", ["claim", "succeed", "cancel", "orphan", "time_out"])
    def test_leaving_pending_or_running_stops_it(self, action):
        change = run_change(action, _run(status="running"), INPUTS)
        assert change.fields["claimable_at"] is CLEAR


def _state(**values) -> WindowState:
    base = {"max_concurrency": 2, "counts": {"pending": 4}, "finished_base": 0, "timeout": 30.0,
            "started_at": 1000.0, "window_moved_at": None}
    return WindowState(**{**base, **values})


class TestTheClaimDeadline:
    @pytest.mark.parametrize(
        ("ordinal", "claimable_at", "state", "expected"),
        [
            # inside the first window: from the task's start or the run's own clock, whichever is later
            (0, 900.0, _state(), 1030.0),
            (1, 1100.0, _state(), 1130.0),
            # outside the window: not claimable, no deadline
            (2, 900.0, _state(), None),
            # admitted by a window move: from the latest move (never earlier than its admission)
            (2, 900.0, _state(counts={"pending": 3, "succeeded": 1}, window_moved_at=1500.0), 1530.0),
            # a run of the first window is not pushed back by later moves
            (1, 900.0, _state(counts={"pending": 3, "succeeded": 1}, window_moved_at=1500.0), 1030.0),
            # offered again after its window moved: its own clock
            (2, 1600.0, _state(counts={"pending": 3, "succeeded": 1}, window_moved_at=1500.0), 1630.0),
        ],
    )
    def test_deadline(self, ordinal, claimable_at, state, expected):
        assert claim_deadlines.deadline(ordinal, claimable_at, state) == expected

    def test_the_next_check_is_the_earliest_deadline_ahead_and_at_most_one_timeout_away(self):
        assert claim_deadlines.next_check([None, 1040.0, 1020.0, 990.0], now=1000.0, timeout=30.0) == 1020.0
        assert claim_deadlines.next_check([None, 2000.0], now=1000.0, timeout=30.0) == 1030.0
        assert claim_deadlines.next_check([], now=1000.0, timeout=600.0) == 1600.0


def _node(**values) -> Node:
    base = {"node_id": "edge-12", "token_hash": "", "created_at": NOW, "status": "idle", "slots": 2,
            "last_seen_at": NOW}
    return Node(**{**base, **values})


@pytest.mark.parametrize(
    ("node", "leased", "reason"),
    [
        (None, 0, "runner edge-12 is not a registered node"),
        (_node(status="offline", offline_since=NOW), 0, f"runner edge-12 offline since {NOW}"),
        (_node(status="maintenance"), 0, "runner edge-12 in maintenance (it claims only its machine.reclaim run)"),
        (_node(), 2, "runner edge-12 busy on all 2 slots"),
        (_node(status="allocated"), 1, f"runner edge-12 online but did not claim it (last seen {NOW})"),
        (_node(last_seen_at=None), 0, "runner edge-12 online but did not claim it (last seen never)"),
    ],
)
def test_the_reason_names_the_runner_and_its_state(node, leased, reason):
    assert why_unclaimed("edge-12", node, leased) == reason


class TestWaitingForAConcurrencyKey:
    def test_waiting_is_recorded_only_from_pending_and_keeps_the_status(self):
        transition = TASK_TRANSITIONS["wait_for_key"]
        assert transition.sources == frozenset({"pending"})
        assert transition.target is None

    def test_it_names_the_task_waited_for_and_is_guarded_by_what_was_read(self):
        # GIVEN a task already recorded as waiting for T0; WHEN the key's holder is now T9
        task = _task(waiting_for_task_id="T0", waiting_for_owner="bob")
        change = task_change("wait_for_key", task, TaskInputs(now=NOW, holder_task_id="T9", holder_owner="carol"))
        # THEN one write names T9, and holds only if nobody recorded another holder meanwhile
        assert (change.fields["waiting_for_task_id"], change.fields["waiting_for_owner"]) == ("T9", "carol")
        assert {p.attribute: p.value for p in change.guard} == {"attempt": 1, "waiting_for_task_id": "T0"}

    @pytest.mark.parametrize("action", sorted(a for a, t in TASK_TRANSITIONS.items()
                                              if t.target is not None and "pending" in t.sources))
    def test_leaving_pending_clears_waiting_for_in_the_same_write(self, action):
        task = _task(waiting_for_task_id="T0", waiting_for_owner="bob")
        change = task_change(action, task, TaskInputs(now=NOW))
        assert change.fields["waiting_for_task_id"] is CLEAR
        assert change.fields["waiting_for_owner"] is CLEAR


class TestTheTaskFieldsTheSweeperKeeps:
    @pytest.mark.parametrize("status", TASK_STATUSES)
    def test_the_sweeper_schedules_its_next_look_only_at_a_running_task(self, status):
        assert (status in TASK_TRANSITIONS["schedule_claim_check"].sources) is (status == "running")

    def test_reopening_the_window_stamps_when_it_moved(self):
        change = task_change("reopen_window", _task(status="running"), TaskInputs(now=NOW, shift=1))
        assert change.fields["window_moved_at"] == NOW
