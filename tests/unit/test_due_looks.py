"""When the sweeper looks at a task again (services/due_sweeps.next_look) and what the transition
tables write into the due index (domain/due.py): no AWS needed."""

from __future__ import annotations

import pytest

from chalicelib import clock
from chalicelib.domain import due
from chalicelib.domain.records import NodeRun, Task
from chalicelib.domain.run_transitions import RUN_TRANSITIONS, RunInputs, run_change
from chalicelib.domain.task_transitions import TASK_TRANSITIONS, TaskInputs, task_change
from chalicelib.domain.writes import CLEAR
from chalicelib.services import due_sweeps

NOW = "2026-01-01T00:00:00Z"
EPOCH = clock.parse_rfc3339(NOW)
GRACE = 60  # FLEETRUN_UNDISPATCHED_GRACE_SECONDS default
RECOUNT = 120  # FLEETRUN_RECOUNT_GRACE_SECONDS default


def _task(**values) -> Task:
    base = {"task_id": "T1", "type": "shell", "owner": "alice", "status": "pending", "created_at": NOW,
            "updated_at": NOW, "max_concurrency": 2, "attempt": 1}
    return Task(**{**base, **values})


def _run(**values) -> NodeRun:
    base = {"task_id": "T1", "node": "n-1", "runner": "n-1", "type": "shell", "owner": "alice", "status": "running"}
    return NodeRun(**{**base, **values})


class TestTheNextLook:
    def test_an_undispatched_task_is_looked_at_once_its_grace_has_passed(self):
        assert due_sweeps.next_look(_task(), EPOCH + 1) == EPOCH + GRACE + 1

    def test_after_a_re_send_the_next_look_is_one_grace_later(self):
        assert due_sweeps.next_look(_task(), EPOCH + 500) == EPOCH + 500 + GRACE

    @pytest.mark.parametrize("status", ["completed", "failed", "cancelled", "discarded", "partial_failure"])
    def test_a_terminal_task_needs_no_look(self, status):
        assert due_sweeps.next_look(_task(status=status), EPOCH) is None

    def test_a_running_task_with_waiting_runs_and_none_running_is_looked_at_for_the_earliest_check(self):
        task = _task(status="running", started_at=NOW, dispatched_attempt=1, claim_timeout_seconds=30,
                     counts={"pending": 2, "running": 0})
        assert due_sweeps.next_look(task, EPOCH + 1) == EPOCH + 30  # the claim deadline, before grace and recount

    def test_a_busy_running_task_is_looked_at_when_its_counters_could_be_quiet(self):
        task = _task(status="running", started_at=NOW, dispatched_attempt=1, counted_at=NOW,
                     counts={"pending": 0, "running": 2})
        assert due_sweeps.next_look(task, EPOCH + 1) == EPOCH + RECOUNT


class TestWhatTheTransitionsWrite:
    @pytest.mark.parametrize("action", ["claim", "claim_apply"])
    def test_a_lease_enters_the_index_in_the_write_that_starts_it(self, action):
        run = _run(status="pending" if action == "claim" else "apply_pending")
        given = RunInputs(now=NOW, now_epoch=EPOCH, runner="n-1", lease_expires_at=int(EPOCH) + 60,
                          claim_sk="x", generation=1)
        fields = run_change(action, run, given).fields
        assert (fields["due_pk"], fields["due_sk"]) == due.lapse_due_keys("T1", "n-1", EPOCH + 60)

    def test_a_plan_reservation_enters_the_index_in_the_write_that_starts_it(self):
        given = RunInputs(now=NOW, now_epoch=EPOCH, runner="n-1", reservation_expires_at=EPOCH + 90.5)
        fields = run_change("await_confirmation", _run(), given).fields
        assert (fields["due_pk"], fields["due_sk"]) == due.lapse_due_keys("T1", "n-1", EPOCH + 90.5)

    @pytest.mark.parametrize("action", ["heartbeat", "extend_reservation"])
    def test_a_heartbeat_or_an_extension_leaves_the_entry_where_it_is(self, action):
        # (an expiry only moves later: the entry comes due early and the sweeper moves it on)
        run = _run(status="running" if action == "heartbeat" else "apply_pending")
        given = RunInputs(now=NOW, now_epoch=EPOCH, runner="n-1", lease_expires_at=int(EPOCH) + 60,
                          reservation_expires_at=EPOCH + 60, progress=30)
        fields = run_change(action, run, given).fields
        assert "due_pk" not in fields
        assert "due_sk" not in fields

    @pytest.mark.parametrize(("status", "expiry"), [("running", "lease_expires_at"),
                                                     ("apply_pending", "reservation_expires_at")])
    def test_the_sweepers_rearm_moves_the_entry_to_the_expiry_it_read_and_is_guarded_by_it(self, status, expiry):
        run = _run(status=status, attempt=3)
        change = run_change("rearm_due", run, RunInputs(now=NOW, now_epoch=EPOCH, **{expiry: int(EPOCH) + 75}))
        assert (change.fields["due_pk"], change.fields["due_sk"]) == due.lapse_due_keys("T1", "n-1", EPOCH + 75)
        assert {(p.attribute, p.value) for p in change.guard} == {
            ("status", status), ("attempt", 3), (expiry, int(EPOCH) + 75)}
        assert change.sources == frozenset({"running", "apply_pending"})

    def test_a_rearm_changes_nothing_a_client_or_the_counters_see(self):
        # no status, progress, step or updated_at: the stream aggregator finds nothing to count in
        # its record, and the run as pushed and read is the same (its `ver` still numbers the write)
        given = RunInputs(now=NOW, now_epoch=EPOCH, lease_expires_at=int(EPOCH) + 75)
        fields = run_change("rearm_due", _run(), given).fields
        assert set(fields) == {"due_pk", "due_sk", "ver"}

    @pytest.mark.parametrize("action", sorted(a for a, t in RUN_TRANSITIONS.items()
                                              if t.target not in (None, "running", "apply_pending")))
    def test_every_other_status_removes_the_entry(self, action):
        given = RunInputs(now=NOW, now_epoch=EPOCH, runner="n-1", generation=1, ordinal=0, claim_sk="x")
        fields = run_change(action, _run(), given).fields
        assert (fields["due_pk"], fields["due_sk"]) == (CLEAR, CLEAR)

    @pytest.mark.parametrize("action", sorted(a for a, t in TASK_TRANSITIONS.items() if t.target is not None))
    def test_a_task_status_change_is_due_at_once_or_leaves_the_index(self, action):
        fields = task_change(action, _task(), TaskInputs(now=NOW, scope="failed")).fields
        if fields["active_pk"] is CLEAR:
            assert (fields["due_pk"], fields["due_sk"]) == (CLEAR, CLEAR)
        else:
            assert (fields["due_pk"], fields["due_sk"]) == due.task_due_keys("T1", EPOCH)

    def test_the_sweepers_look_keeps_updated_at_and_is_guarded_by_the_version(self):
        change = task_change("schedule_look", _task(ver=7), TaskInputs(now=NOW, look_at=EPOCH + 90))
        assert "updated_at" not in change.fields
        assert change.fields["due_sk"] == due.task_due_keys("T1", EPOCH + 90)[1]
        assert {(p.attribute, p.value) for p in change.guard} == {("ver", 7)}

    def test_shards_spread_items_and_stay_put(self):
        shards = {due.shard(f"T{i}") for i in range(200)}
        assert shards == set(range(due.SHARDS))
        assert due.shard("T1/n-1") == due.shard("T1/n-1")


class TestALookForADispatchInChunks:
    def test_a_dispatch_with_chunks_left_is_looked_at_once_its_progress_stamp_could_be_stale(self):
        task = _task(status="running", started_at=NOW, dispatched_attempt=1, dispatch_chunks=3,
                     dispatched_through=1, dispatch_progress_at=NOW, counts={"pending": 0, "running": 5})
        assert due_sweeps.next_look(task, EPOCH + 1) == EPOCH + GRACE + 1

    def test_a_finished_dispatch_needs_no_such_look(self):
        task = _task(status="running", started_at=NOW, dispatched_attempt=1, dispatch_chunks=3,
                     dispatched_through=3, dispatch_progress_at=NOW, counts={"pending": 0, "running": 5})
        assert due_sweeps.next_look(task, EPOCH + 1) == EPOCH + RECOUNT
