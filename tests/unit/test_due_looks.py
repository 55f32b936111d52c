"""When the sweeper looks at a task again (services/due_sweeps.next_look), what the transition
tables write into the due index (domain/due.py) and what the stream watches of the leases
that start (services/lease_watch.py): no AWS needed."""

from __future__ import annotations

import pytest

from chalicelib import clock
from chalicelib.domain import due
from chalicelib.domain.records import NodeRun, Task
from chalicelib.domain.run_transitions import RUN_TRANSITIONS, RunInputs, run_change
from chalicelib.domain.task_transitions import TASK_TRANSITIONS, TaskInputs, task_change
from chalicelib.domain.writes import CLEAR
from chalicelib.services import due_sweeps, lease_watch
from chalicelib.store.stream_records import Record

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

    def test_a_started_task_whose_runs_the_stream_has_not_counted_yet_is_looked_at_for_its_claim_check(self):
        # GIVEN the look right after the dispatch, before the aggregator counted the run it created
        task = _task(status="running", started_at=NOW, dispatched_attempt=1, claim_timeout_seconds=30,
                     target_count=1, counted_at=NOW)
        # THEN its next look is its claim deadline, not the recount's (the counts then say pending)
        assert due_sweeps.next_look(task, EPOCH + 1) == EPOCH + 30

    def test_a_busy_running_task_is_looked_at_when_its_counters_could_be_quiet(self):
        task = _task(status="running", started_at=NOW, dispatched_attempt=1, counted_at=NOW, target_count=2,
                     counts={"pending": 0, "running": 2})
        assert due_sweeps.next_look(task, EPOCH + 1) == EPOCH + RECOUNT


class TestWhatTheTransitionsWrite:
    @pytest.mark.parametrize("action", sorted(RUN_TRANSITIONS))
    def test_no_run_write_touches_the_due_index(self, action):
        # (leases are watched from the stream: services/lease_watch.py)
        given = RunInputs(now=NOW, now_epoch=EPOCH, runner="n-1", generation=1, ordinal=0, claim_sk="x",
                          lease_expires_at=int(EPOCH) + 60, reservation_expires_at=EPOCH + 60, progress=30)
        fields = run_change(action, _run(status=next(iter(RUN_TRANSITIONS[action].sources))), given).fields
        assert "due_pk" not in fields
        assert "due_sk" not in fields

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


def _record(seq: int, node: str, old: str | None, new: str, **expiries: float) -> Record:
    def image(status: str, **values: float) -> dict:
        found = {"task_id": {"S": "T1"}, "node": {"S": node}, "status": {"S": status}}
        return {**found, **{name: {"N": str(value)} for name, value in values.items()}}

    body = {"SequenceNumber": str(seq), "Keys": {"pk": {"S": "TASK#T1"}, "sk": {"S": f"RUN#{node}"}},
            "NewImage": image(new, **expiries)}
    if old is not None:
        body["OldImage"] = image(old)
    return Record({"eventName": "MODIFY" if old else "INSERT", "dynamodb": body})


class TestTheLeaseWatch:
    def test_a_batch_of_claims_is_watched_at_the_second_each_lease_lapses_one_item_per_second(self, memory):
        # GIVEN 40 claims whose leases lapse in the same second, a heartbeat and a completion
        claims = [_record(100 + i, f"n-{i}", "pending", "running", lease_expires_at=EPOCH + 60 + (i % 2) * 0.5 + 0.2)
                  for i in range(40)]
        others = [_record(200, "n-0", "running", "running", lease_expires_at=EPOCH + 80),
                  _record(201, "n-1", "running", "succeeded")]
        # WHEN the stream consumer reads them
        lease_watch.consume([*claims, *others])
        # THEN every claimed run is watched once, due the second after its expiry, and nothing else
        watches = list(memory.lease_watches_by_key.values())
        watched = [(run, due.due_second(w.sk)) for w in watches for run in w.runs]
        assert sorted(watched) == sorted((("T1", f"n-{i}"), int(EPOCH) + 61) for i in range(40))
        assert len(watches) == 1  # one item for the batch's second, in the shard of its id
        assert watches[0].shard == due.watch_shard(watches[0].sk.partition("#")[2])

    def test_a_batch_delivered_again_writes_the_same_watches(self, memory):
        batch = [_record(7, "n-1", "apply_pending", "running", lease_expires_at=EPOCH + 30),
                 _record(9, "n-2", "running", "apply_pending", reservation_expires_at=EPOCH + 90)]
        lease_watch.consume(batch)
        first = dict(memory.lease_watches_by_key)
        lease_watch.consume(batch)
        assert memory.lease_watches_by_key == first
        assert sorted(due.due_second(sk) for _, sk in first) == [int(EPOCH) + 31, int(EPOCH) + 91]
