"""The contract both repository backends keep (store/memory.py and store/dynamo.py): the
service rules' unit tests run on the in-memory one only because it passes every test here."""

from __future__ import annotations

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from chalicelib.domain import due
from chalicelib.domain.records import IdempotencyRecord, NodeRun, Task
from chalicelib.domain.statuses import RUN_STATUSES
from chalicelib.errors import Busy, ConditionFailed, Conflict, IdempotencyRecordExists, InvalidTransition, TaskNotFound
from chalicelib.store import backend, events, retrying, runs, tasks
from chalicelib.store.backend import LeaseWatch
from chalicelib.store.runs import NewRun, RunKey, RunTemplate

NOW = "2026-12-03T10:00:00.000Z"


def _task(task_id: str = "01TASK", **values) -> Task:
    base = {"task_id": task_id, "type": "shell", "owner": "alice", "status": "pending", "created_at": NOW,
            "updated_at": NOW, "max_concurrency": 2, "target_count": 2, "ordinal_next": 2}
    return Task(**{**base, **values})


def _create(task: Task, targets=("n-1", "n-2"), key: str | None = None) -> None:
    idempotency = IdempotencyRecord("alice", key, task.task_id, "h", 1) if key else None
    tasks.create(task, list(targets), idempotency, events.new_item(task.task_id, [{"name": "task.created"}]))


def _template(task_id: str = "01TASK", dispatch_id: str = "01TASK:1") -> RunTemplate:
    return RunTemplate(task_id=task_id, type="shell", owner="alice", priority=5, runner_node=None, generation=1,
                       dispatch_id=dispatch_id, now=NOW)


def _conflict_next_write(store: str, monkeypatch: pytest.MonkeyPatch, times: int = 1) -> None:
    """The next `times` writes meet another transaction on the same item, as DynamoDB may answer."""
    if store == "memory":
        backend.current().conflict_next = times  # type: ignore[attr-defined]
        return
    original = BaseClient._make_api_call
    fired: list[str] = []

    def make_api_call(client, name, params):
        if name in ("UpdateItem", "TransactWriteItems") and len(fired) < times:
            fired.append(name)
            raise ClientError({"Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                               "CancellationReasons": [{"Code": "TransactionConflict"}]}, name)
        return original(client, name, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", make_api_call)


class TestTaskCreationAndReads:
    def test_a_created_task_reads_back_with_its_targets(self, store):
        _create(_task(name="first"))
        task = tasks.get("01TASK")
        assert (task.name, task.status, task.attempt, task.counts["pending"]) == ("first", "pending", 1, 0)
        assert tasks.load_targets("01TASK") == ["n-1", "n-2"]
        assert list(tasks.iter_active()) == ["01TASK"]

    def test_the_targets_of_a_page_of_tasks_read_together_in_order_across_chunks(self, store):
        # GIVEN a task of more targets than one chunk holds, and a small one
        many = [f"edge-{i:05d}" for i in range(tasks.TARGET_CHUNK_SIZE + 3)]
        _create(_task("01BIG", target_count=len(many)), targets=many)
        _create(_task("01SMALL"))
        # WHEN both are read together
        found = tasks.load_targets_of([tasks.get("01BIG"), tasks.get("01SMALL")])
        # THEN each has its own, in the order it was created with
        assert found == {"01BIG": many, "01SMALL": ["n-1", "n-2"]}

    def test_an_unknown_task_is_not_found(self, store):
        assert tasks.find("nope") is None
        with pytest.raises(TaskNotFound):
            tasks.get("nope")

    def test_a_second_creation_with_the_same_idempotency_record_is_refused(self, store):
        _create(_task("01A"), key="k1")
        with pytest.raises(IdempotencyRecordExists):
            _create(_task("01B"), key="k1")
        assert tasks.find("01B") is None
        record = tasks.idempotency_record("alice", "k1")
        assert record is not None
        assert (record.task_id, record.request_hash) == ("01A", "h")
        assert tasks.idempotency_record("alice", "k2") is None

    @pytest.mark.parametrize(("first", "second"), [
        (("alice", "k123#1"), ("alice#k123", "1")),
        # the escape character itself: `alice#k` must not be escaped into the owner `alice%23k`
        (("alice%23k", "1"), ("alice#k", "1")),
    ])
    def test_an_owner_and_key_spelling_anothers_joined_record_hold_a_record_of_their_own(self, store, first, second):
        # GIVEN `first` created a task with its idempotency key
        tasks.create(_task("01A"), ["n-1"], IdempotencyRecord(*first, "01A", "h", 1),
                     events.new_item("01A", [{"name": "task.created"}]))
        # WHEN `second`, whose owner and key joined with `#` read the same, creates one
        tasks.create(_task("01B", owner=second[0]), ["n-1"], IdempotencyRecord(*second, "01B", "h", 1),
                     events.new_item("01B", [{"name": "task.created"}]))
        # THEN each owner's key names their own task
        assert tasks.idempotency_record(*first).task_id == "01A"  # type: ignore[union-attr]
        assert tasks.idempotency_record(*second).task_id == "01B"  # type: ignore[union-attr]


class TestTaskTransitions:
    def test_a_transition_writes_its_status_and_fields(self, store):
        _create(_task())
        started = tasks.transition(tasks.get("01TASK"), "start", NOW, created_count=2, ordinal_next=2)
        assert (started.status, started.started_at, started.dispatched_attempt) == ("running", NOW, 1)

    def test_a_transition_from_a_wrong_status_is_an_invalid_transition_and_writes_nothing(self, store):
        _create(_task())
        with pytest.raises(InvalidTransition) as raised:
            tasks.transition(tasks.get("01TASK"), "confirm", NOW)
        assert raised.value.current == "pending"
        assert tasks.get("01TASK").status == "pending"

    def test_a_guard_that_no_longer_holds_is_a_conflict(self, store):
        # GIVEN a task read at attempt 1, then moved on by another writer
        _create(_task())
        read = tasks.get("01TASK")
        tasks.transition(read, "start", NOW)
        tasks.transition(tasks.get("01TASK"), "cancel", NOW)
        tasks.transition(tasks.get("01TASK"), "finish_cancel", NOW)
        tasks.transition(tasks.get("01TASK"), "retry", NOW, scope="all")
        # WHEN a transition decided from the old read is applied (the status is right again)
        # THEN its attempt guard refuses it
        with pytest.raises(Conflict):
            tasks.transition(read, "start", NOW)

    def test_a_terminal_task_leaves_the_active_index_and_a_retry_brings_it_back(self, store):
        _create(_task())
        tasks.transition(tasks.get("01TASK"), "cancel", NOW)
        cancelled = tasks.transition(tasks.get("01TASK"), "finish_cancel", NOW)
        assert cancelled.completed_at == NOW
        assert list(tasks.iter_active()) == []
        retried = tasks.transition(cancelled, "retry", NOW, scope="all")
        assert (retried.status, retried.attempt, retried.completed_at) == ("pending", 2, None)
        assert list(tasks.iter_active()) == ["01TASK"]

    def test_a_retry_moves_the_counts_in_the_same_write(self, store):
        counts = {**dict.fromkeys(RUN_STATUSES, 0), "succeeded": 1, "failed": 1}
        _create(_task(status="failed", counts=counts, progress_sum=200))
        retried = tasks.transition(tasks.get("01TASK"), "retry", NOW, scope="failed")
        assert retried.counts["pending"] == 1
        assert retried.counts["failed"] == 0
        assert retried.counts["succeeded"] == 1
        assert retried.progress_sum == 100
        assert retried.finished_base == 1

    def test_a_transition_with_an_event_writes_both_or_neither(self, store):
        _create(_task())
        event = events.new_item("01TASK", [{"name": "task.cancel_requested"}])
        tasks.transition(tasks.get("01TASK"), "cancel", NOW, event=event)
        assert tasks.get("01TASK").status == "cancelling"
        with pytest.raises(InvalidTransition):
            tasks.transition(tasks.get("01TASK"), "cancel", NOW, event=events.new_item("01TASK", [{"name": "x"}]))

    def test_a_conflict_that_outlives_the_write_retries_is_busy_and_changes_nothing(self, store, monkeypatch):
        _create(_task())
        _conflict_next_write(store, monkeypatch, times=retrying.ATTEMPTS)
        with pytest.raises(Busy):
            tasks.transition(tasks.get("01TASK"), "cancel", NOW, event=events.new_item("01TASK", [{"name": "x"}]))
        assert tasks.get("01TASK").status == "pending"

    def test_adding_targets_adds_without_a_read_and_is_guarded_by_the_ordinals_read(self, store):
        _create(_task(status="running"))
        read = tasks.get("01TASK")
        tasks.add_targets(read, ["n-3"], 1, NOW)
        grown = tasks.get("01TASK")
        assert (grown.target_count, grown.ordinal_next, grown.created_count) == (3, 3, 1)
        assert tasks.load_targets("01TASK") == ["n-1", "n-2", "n-3"]
        with pytest.raises(Conflict):
            tasks.add_targets(read, ["n-4"], 1, NOW)  # another dispatch took ordinal 2 meanwhile

    def test_a_quiet_update_reports_a_lost_race_as_false(self, store):
        _create(_task(status="running"))
        read = tasks.get("01TASK")
        assert tasks.update_quietly(read, "halt", NOW) is True
        assert tasks.update_quietly(read, "halt", NOW) is False
        assert tasks.get("01TASK").halted is True


class TestRuns:
    def test_creating_runs_is_idempotent_and_counts_a_resumed_dispatch_as_its_own(self, store):
        created, skipped = runs.create_missing(_template(), [NewRun("n-1", 0), NewRun("n-2", 1)])
        assert (sorted(created), skipped) == (["n-1", "n-2"], [])
        again, _ = runs.create_missing(_template(), [NewRun("n-1", 0)])
        assert again == ["n-1"]  # the same dispatch, resumed
        other, skipped = runs.create_missing(_template(dispatch_id="other"), [NewRun("n-1", 0)])
        assert (other, skipped) == ([], ["n-1"])

    def test_claimable_runs_come_best_first_after_a_key_and_leave_the_list_once_claimed(self, store):
        runs.create_missing(_template(), [NewRun("n-1", 0)])
        runs.create_missing(RunTemplate(task_id="01TASK", type="shell", owner="alice", priority=9,
                                        runner_node="n-1", generation=1, dispatch_id="d", now=NOW), [NewRun("n-9", 1)])
        found = runs.claimable("n-1", None, 10)
        assert [c.node for c in found] == ["n-9", "n-1"]  # priority 9 first
        assert [c.node for c in runs.claimable("n-1", found[0].claim_sk, 10)] == ["n-1"]
        claimed = runs.transition(found[0], "claim", NOW, runner="n-1", lease_expires_at=100, step="run",
                                  phase="run", claim_sk=found[0].claim_sk, generation=1)
        assert claimed is not None
        assert claimed.status == "running"
        assert [c.node for c in runs.claimable("n-1", None, 10)] == ["n-1"]

    def test_a_claim_of_a_key_already_claimed_is_refused(self, store):
        runs.create_missing(_template(), [NewRun("n-1", 0)])
        candidate = runs.claimable("n-1", None, 1)[0]
        lease = {"runner": "n-1", "lease_expires_at": 100, "step": "run", "phase": "run",
                 "claim_sk": candidate.claim_sk, "generation": 1}
        assert runs.transition(candidate, "claim", NOW, **lease) is not None
        assert runs.transition(candidate, "claim", NOW, **lease) is None

    def test_a_leaseholders_write_needs_the_lease(self, store):
        runs.create_missing(_template(), [NewRun("n-1", 0)])
        candidate = runs.claimable("n-1", None, 1)[0]
        runs.transition(candidate, "claim", NOW, runner="n-1", lease_expires_at=100, step="run", phase="run",
                        claim_sk=candidate.claim_sk, generation=1)
        assert runs.transition(RunKey("01TASK", "n-1", 2), "heartbeat", NOW, runner="n-1", lease_expires_at=200) is None
        assert runs.transition(RunKey("01TASK", "n-1", 1), "heartbeat", NOW, runner="n-2", lease_expires_at=200) is None
        beat = runs.transition(RunKey("01TASK", "n-1", 1), "heartbeat", NOW, runner="n-1", lease_expires_at=200,
                               progress=40)
        assert beat is not None
        assert (beat.lease_expires_at, beat.progress) == (200, 40)
        done = runs.transition(RunKey("01TASK", "n-1", 1), "succeed", NOW, runner="n-1",
                               completion={"output": "ok"})
        assert done is not None
        assert (done.status, done.progress, done.output, done.lease_expires_at) == (
            "succeeded", 100, "ok", None)

    def test_a_released_lease_makes_the_run_claimable_again_one_attempt_later(self, store):
        runs.create_missing(_template(), [NewRun("n-1", 0)])
        candidate = runs.claimable("n-1", None, 1)[0]
        running = runs.transition(candidate, "claim", NOW, runner="n-1", lease_expires_at=100, step="run",
                                  phase="run", claim_sk=candidate.claim_sk, generation=1)
        assert running is not None
        assert runs.transition(running, "release", NOW, now_epoch=50) is None  # the lease still holds
        released = runs.transition(running, "release", NOW, now_epoch=150)
        assert released is not None
        assert (released.status, released.attempt, released.lease_owner, released.started_at) == (
            "pending", 2, None, None)
        assert [c.node for c in runs.claimable("n-1", None, 10)] == ["n-1"]

    def test_runs_of_a_task_filter_by_status(self, store):
        runs.create_missing(_template(), [NewRun("n-1", 0), NewRun("n-2", 1)])
        assert sorted(r.node for r in runs.iter_runs("01TASK")) == ["n-1", "n-2"]
        assert list(runs.iter_runs("01TASK", "running")) == []
        assert isinstance(runs.find("01TASK", "n-1"), NodeRun)
        assert runs.find("01TASK", "n-3") is None

    def test_many_runs_read_at_once_are_those_that_exist(self, store):
        runs.create_missing(_template(), [NewRun(f"n-{i}", i) for i in range(150)])
        wanted = [("01TASK", f"n-{i}") for i in range(150)] + [("01TASK", "n-999")]  # over 100: two requests
        found = runs.find_many(wanted)
        assert sorted(r.node for r in found) == sorted(f"n-{i}" for i in range(150))


class TestLeaseWatches:
    def test_watches_read_back_oldest_first_up_to_a_key_and_leave_once_deleted(self, store):
        store_ = backend.current()
        watches = [LeaseWatch(0, due.watch_sk(second, f"7.{n}"), (("01TASK", f"n-{second}-{n}"),))
                   for second in (100, 90, 110) for n in range(2)]
        store_.put_lease_watches(watches)
        found = store_.lease_watches(0, due.upto(100), 10)
        assert [w.sk for w in found] == sorted(w.sk for w in watches if due.due_second(w.sk) <= 100)
        assert found[0].runs == (("01TASK", "n-90-0"),)
        assert len(store_.lease_watches(0, due.upto(100), 3)) == 3
        store_.delete_lease_watches(found)
        assert [w.sk for w in store_.lease_watches(0, due.upto(200), 10)] == [due.watch_sk(110, "7.0"),
                                                                             due.watch_sk(110, "7.1")]


class TestTransactions:
    def test_a_transaction_applies_every_change_or_none(self, store):
        # GIVEN a task and its run
        _create(_task(status="running"))
        runs.create_missing(_template(), [NewRun("n-1", 0)])
        task, run = tasks.get("01TASK"), runs.find("01TASK", "n-1")
        assert run is not None
        # WHEN one change of the transaction does not hold (the run is not apply_pending)
        with pytest.raises(ConditionFailed):
            tasks.commit([tasks.change(task, "halt", NOW), runs.change(run, "cancel", NOW, generation=9)])
        # THEN the other change was not applied either
        assert tasks.get("01TASK").halted is False
        # AND a transaction whose changes all hold applies all of them
        tasks.commit([tasks.change(task, "halt", NOW), runs.change(run, "cancel", NOW, generation=1)],
                     [events.new_item("01TASK", [{"name": "x"}])])
        assert tasks.get("01TASK").halted is True
        assert runs.find("01TASK", "n-1").status == "cancelled"  # type: ignore[union-attr]
