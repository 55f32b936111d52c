"""Sweeps cost O(due work) (issue 17): leases and plan reservations are found through the lease
watches the stream writes, and each active task's next look through the sparse, sharded
`due-index` (chalicelib/domain/due.py), so a lapsed lease is acted on within one pass whatever
the number of active tasks, and a pass with nothing due makes the same DynamoDB requests at 10
and at 1,000 active tasks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from chalicelib import aws, config
from chalicelib.domain import due
from chalicelib.services import due_sweeps, sweeper
from chalicelib.store import runs, tasks
from chalicelib.store.dynamo import run_key
from chalicelib.store.models import LeaseWatchItem, NodeRunItem, TaskItem, task_pk
from tests.harness import Fleet, assert_statistics_equal_recount
from tests.service_clock import Clock

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from scale_sweeps import DynamoRequests, add_active_tasks, sweeper_requests_per_sweep

sys.path.pop(0)

LEASE = 4
SWEEP_INTERVAL = 1.0


@pytest.fixture
def service_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


@pytest.fixture
def short_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETRUN_LEASE_SECONDS", str(LEASE))
    config.reset()


def shell(*targets: str) -> dict[str, Any]:
    return {"type": "shell", "target_nodes": list(targets), "parameters": {"command": ["true"]}}


def due_keys_of_run(task_id: str, node: str) -> tuple[str | None, str | None]:
    item = NodeRunItem.get(*run_key(task_id, node), consistent_read=True)  # (runs may be sharded)
    return item.due_pk, item.due_sk


def watched_seconds(task_id: str, node: str) -> list[int]:
    """The due seconds of the lease watches that hold the run (services/lease_watch.py)."""
    return sorted(due.due_second(item.sk) for number in range(due.WATCH_SHARDS)
                  for item in LeaseWatchItem.query(due.watch_pk(number), consistent_read=True)
                  if due.run_item_id(task_id, node) in item.runs)


def due_keys_of_task(task_id: str) -> tuple[str | None, str | None]:
    item = TaskItem.get(task_pk(task_id), "META", consistent_read=True)
    return item.due_pk, item.due_sk


def sweep_until(service_clock: Clock, done: Any, seconds: float) -> float:
    """Sweep every SWEEP_INTERVAL of service time until `done()`; the service time it took."""
    waited = 0.0
    while waited <= seconds:
        sweeper.sweep()
        if done():
            return waited
        service_clock.advance(SWEEP_INTERVAL)
        waited += SWEEP_INTERVAL
    raise AssertionError(f"not done within {seconds} s of service time")


class TestTheIndexFollowsTheWrites:
    def test_a_claim_is_watched_from_the_stream_and_a_heartbeat_writes_nothing_for_the_sweeper(
            self, fleet: Fleet, service_clock: Clock, short_leases: None):
        # GIVEN a run claimed by its node, and the claim's stream record delivered
        task_id = fleet.started(shell("n-1"))
        [run] = fleet.claim("n-1")
        claimed = runs.find(task_id, "n-1")
        assert claimed is not None
        assert claimed.lease_expires_at is not None
        assert due_keys_of_run(task_id, "n-1") == (None, None)  # no index entry on the run
        fleet.settle()
        # THEN the run is watched the first second after its lease lapses
        at_claim = due.lapse_second(claimed.lease_expires_at)
        assert watched_seconds(task_id, "n-1") == [at_claim]
        # WHEN it heartbeats, the run's lease moves on and nothing else is written for the sweeper
        service_clock.advance(LEASE - 1)
        answer = fleet.agent("n-1", f"/v1/runs/{run['run_id']}/heartbeat", {"attempt": run["attempt"]})
        assert answer.status == 200, answer
        fleet.settle()
        extended = runs.find(task_id, "n-1")
        assert extended is not None
        assert extended.lease_expires_at is not None
        assert extended.lease_expires_at > claimed.lease_expires_at
        assert watched_seconds(task_id, "n-1") == [at_claim]
        # WHEN the sweeper reads the watch once due, it finds the lease held and watches it again
        service_clock.advance(2)
        report = sweeper.sweep()
        assert report.leases_rearmed == 1
        assert report.requeued_runs == 0
        assert watched_seconds(task_id, "n-1") == [due.lapse_second(extended.lease_expires_at)]
        held = runs.find(task_id, "n-1")
        assert held is not None
        # (the run itself is not written: same version)
        assert held.ver == extended.ver
        # WHEN it completes, the finished task leaves the index; its run's watch is read for nothing
        assert fleet.finish("n-1", run).status == 200
        fleet.settle()
        assert fleet.task(task_id)["status"] == "completed"
        assert due_keys_of_task(task_id) == (None, None)
        service_clock.advance(LEASE + 2)
        report = sweeper.sweep()
        assert (report.leases_rearmed, report.requeued_runs, report.timed_out_runs) == (0, 0, 0)
        assert watched_seconds(task_id, "n-1") == []

    def test_a_status_change_makes_the_task_due_at_once_and_its_look_schedules_the_next(self, fleet: Fleet):
        # GIVEN a task that just started (a status change)
        task_id = fleet.started(shell("n-1"))
        due_pk, due_sk = due_keys_of_task(task_id)
        assert due_pk == due.due_pk(due.TASK, due.shard(task_id))
        assert due_sk is not None
        assert due.due_second(due_sk) <= service_now()
        # WHEN a sweep looks at it
        report = sweeper.sweep()
        # THEN its next look is scheduled ahead, where its checks can next be due
        assert report.tasks_seen >= 1
        _, later_sk = due_keys_of_task(task_id)
        assert later_sk is not None
        assert due.due_second(later_sk) > service_now()
        # AND a sweep right after has nothing to look at
        assert sweeper.sweep().tasks_seen == 0


class TestALeaseWhateverTheActiveTasks:
    def test_a_sweep_with_1000_active_tasks_acts_on_one_expired_lease_in_time(
            self, fleet: Fleet, service_clock: Clock, short_leases: None):
        # GIVEN a run whose agent was killed right after its claim (a 4 s lease), the claim's
        # stream record delivered
        task_id = fleet.started(shell("n-1"))
        [run] = fleet.claim("n-1")
        fleet.settle()
        # AND 1,000 other active tasks
        add_active_tasks(1000)
        # WHEN the sweeper runs every second of service time
        waited = sweep_until(service_clock, lambda: _offered_again(task_id), LEASE + SWEEP_INTERVAL + 2)
        # THEN the run was offered again within lease + sweep interval + 2 s (claimable by its node)
        assert waited <= LEASE + SWEEP_INTERVAL + 2
        again = runs.find(task_id, "n-1")
        assert again is not None
        assert (again.attempt, again.claim_pk) == (run["attempt"] + 1, "RUNNER#n-1")

    def test_a_lease_is_acted_on_in_the_first_pass_even_when_every_task_is_due_for_a_look(
            self, fleet: Fleet, service_clock: Clock):
        # GIVEN a lapsed lease and 500 never-dispatched tasks whose looks are all due (two and
        # a half passes' bound)
        task_id = fleet.started(shell("n-1"))
        fleet.claim("n-1")
        fleet.settle()
        bound = due.SHARDS * due_sweeps.LOOKS_PER_SHARD
        created = set(add_active_tasks(500))
        assert len(created) > 2 * bound
        service_clock.advance(max(config.lease_seconds(), config.undispatched_grace_seconds()) + 2)
        # WHEN one sweep runs
        report = sweeper.sweep()
        # THEN the lease was acted on, and the pass looked at no more tasks than its bound
        assert _offered_again(task_id)
        assert report.requeued_runs == 1
        assert len([t for t in report.redispatched if t in created]) <= bound
        # AND the next passes take the rest (each look schedules the next one ahead)
        for _ in range(len(created) // due_sweeps.LOOKS_PER_SHARD + 1):
            if not due_sweeps.due_now(due.TASK, service_clock.now(), due_sweeps.LOOKS_PER_SHARD):
                break
            sweeper.sweep()
        assert due_sweeps.due_now(due.TASK, service_clock.now(), due_sweeps.LOOKS_PER_SHARD) == []


class TestHeartbeatsOverSeveralLeases:
    def test_a_heartbeating_run_is_never_released_and_one_whose_heartbeats_stop_is_offered_again_in_time(
            self, fleet: Fleet, service_clock: Clock, short_leases: None):
        # GIVEN a run claimed by its node, and an agent that heartbeats every third of a lease
        task_id = fleet.started(shell("n-1"))
        [run] = fleet.claim("n-1")
        fleet.settle()
        heartbeat_every = LEASE / 3
        since_heartbeat, rearmed, last_heartbeat = 0.0, 0, service_clock.now()
        # WHEN the sweeper runs every second of service time over five leases
        for _ in range(int(5 * LEASE / SWEEP_INTERVAL)):
            service_clock.advance(SWEEP_INTERVAL)
            since_heartbeat += SWEEP_INTERVAL
            if since_heartbeat >= heartbeat_every:
                answer = fleet.agent("n-1", f"/v1/runs/{run['run_id']}/heartbeat", {"attempt": run["attempt"]})
                assert answer.status == 200, answer
                since_heartbeat, last_heartbeat = 0.0, service_clock.now()
            report = sweeper.sweep()
            rearmed += report.leases_rearmed
            # THEN it is never released nor timed out while its agent heartbeats
            assert (report.requeued_runs, report.timed_out_runs) == (0, 0)
            held = runs.find(task_id, "n-1")
            assert held is not None
            assert (held.status, held.attempt) == ("running", run["attempt"])
        # AND it was watched again about once a lease (10 heartbeats), not once a heartbeat
        assert 2 <= rearmed <= 6, rearmed
        # WHEN its heartbeats stop
        last = runs.find(task_id, "n-1")
        assert last is not None
        assert last.lease_expires_at is not None
        # THEN it is offered again within lease + sweep interval + 2 s of its last heartbeat
        sweep_until(service_clock, lambda: _offered_again(task_id), LEASE + SWEEP_INTERVAL + 2)
        assert service_clock.now() - last_heartbeat <= LEASE + SWEEP_INTERVAL + 2
        assert service_clock.now() - last.lease_expires_at <= SWEEP_INTERVAL + 2


class TestManyHeldLeases:
    def test_a_pass_watches_again_more_held_leases_than_a_page_and_still_acts_on_the_lapsed_one(
            self, fleet: Fleet, service_clock: Clock, short_leases: None, monkeypatch: pytest.MonkeyPatch):
        # GIVEN pages of 1 watch, 24 runs whose agents heartbeat and one whose agent died,
        # each claim's record delivered in its own batch (a watch each)
        monkeypatch.setattr(due_sweeps, "WATCHES_PER_SHARD", 1)
        nodes = [f"n-{i:02d}" for i in range(25)]
        task_id = fleet.started({**shell(*nodes), "max_concurrency": 25})
        claimed = {}
        for node in nodes:
            claimed[node] = fleet.claim(node)[0]
            fleet.settle()
        assert sum(len(list(LeaseWatchItem.query(due.watch_pk(n)))) for n in range(due.WATCH_SHARDS)) == 25
        service_clock.advance(LEASE - 1)
        for node in nodes[1:]:
            run = claimed[node]
            answer = fleet.agent(node, f"/v1/runs/{run['run_id']}/heartbeat", {"attempt": run["attempt"]})
            assert answer.status == 200, answer
        # WHEN one pass runs once every claim's watch is due
        service_clock.advance(2)
        report = sweeper.sweep()
        # THEN every held lease was watched again (more than one page of every shard) ...
        assert report.leases_rearmed == 24
        assert due_sweeps.due_watches(service_clock.now(), 100) == []
        # ... and the lapsed one offered again, in the same pass
        assert report.requeued_runs == 1
        dead = runs.find(task_id, nodes[0])
        assert dead is not None
        assert (dead.status, dead.attempt) == ("pending", 2)


class TestALostClaimRecord:
    def test_a_run_whose_claim_record_was_lost_is_watched_by_the_recount_and_offered_again(
            self, fleet: Fleet, service_clock: Clock, short_leases: None, monkeypatch: pytest.MonkeyPatch):
        # GIVEN a claim whose stream record never arrives (a lost batch), and its agent killed
        monkeypatch.setenv("FLEETRUN_RECOUNT_GRACE_SECONDS", str(RECOUNT_GRACE))
        config.reset()
        task_id = fleet.started(shell("n-1"))
        fleet.settle()
        fleet.stream.drop_next(_is_claim)
        fleet.claim("n-1")
        fleet.settle()
        assert any(_is_claim(record) for record in fleet.stream.dropped)
        assert watched_seconds(task_id, "n-1") == []
        # WHEN the sweeper runs every second of service time
        waited = sweep_until(service_clock, lambda: _offered_again(task_id), RECOUNT_GRACE + LEASE + 2 * SWEEP_INTERVAL)
        # THEN the recount its wrong counts brought watched the run, and it was offered again
        assert waited <= RECOUNT_GRACE + LEASE + 2 * SWEEP_INTERVAL
        fleet.settle()
        assert nonzero(fleet.task(task_id)["node_counts"]) == {"pending": 1}
        assert_statistics_equal_recount()


RECOUNT_GRACE = 6


def _is_claim(record: dict[str, Any]) -> bool:
    images = record["dynamodb"]
    status = images.get("NewImage", {}).get("status", {}).get("S")
    return images["Keys"]["sk"]["S"].startswith("RUN#") and status == "running"


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {status: n for status, n in counts.items() if n}


def _offered_again(task_id: str) -> bool:
    run = runs.find(task_id, "n-1")
    return run is not None and run.status == "pending" and int(run.attempt) == 2


class TestTheCostOfAPass:
    def test_a_sweep_makes_the_same_dynamodb_requests_at_10_and_1000_active_tasks(self, fleet: Fleet):
        at_10 = sweeper_requests_per_sweep(fleet, 10)
        at_1000 = sweeper_requests_per_sweep(fleet, 1000)
        assert sum(1 for _ in tasks.iter_active()) >= 1000
        assert at_10 == at_1000
        # one query per shard of the task looks and of the lease watches, and the node and
        # connection sweeps
        assert at_10 <= due.SHARDS + due.WATCH_SHARDS + 6

    def test_the_count_is_of_requests_not_of_retries(self, fleet: Fleet):
        requests = DynamoRequests()
        with requests.installed(), requests.measuring():
            tasks.find("no-such-task")
        assert requests.by_operation == {"GetItem": 1}


def service_now() -> float:
    from chalicelib import clock

    return clock.now_epoch()


class TestItemsFromBeforeTheIndex:
    def test_a_run_and_a_task_written_without_due_entries_are_found_by_the_one_time_backfill(
            self, fleet: Fleet, service_clock: Clock):
        # GIVEN a running run and its task as an older version wrote them (no due entry, no lease
        # watch), in a table whose backfill has not run
        task_id = fleet.started(shell("n-1"))
        fleet.claim("n-1")
        fleet.settle()
        forget_lease_watches()
        ddb = aws.client("dynamodb")
        ddb.update_item(TableName=config.table_name(), Key={"pk": {"S": task_pk(task_id)}, "sk": {"S": "META"}},
                        UpdateExpression="REMOVE due_pk, due_sk")
        ddb.delete_item(TableName=config.table_name(), Key=due.BACKFILL_KEY)
        # WHEN the sweeper runs after the lease lapsed
        service_clock.advance(config.lease_seconds() + 1)
        report = sweeper.sweep()
        # THEN the walk found the lapsed lease, and gave the task a look
        assert _offered_again(task_id)
        assert report.requeued_runs == 1
        assert due_keys_of_task(task_id)[0] == due.due_pk(due.TASK, due.shard(task_id))
        # AND after its last round, a lease later, the walk is done: one read a pass
        for _ in range(4):
            service_clock.advance(config.lease_seconds() + 1)
            sweeper.sweep()
        state = ddb.get_item(TableName=config.table_name(), Key=due.BACKFILL_KEY, ConsistentRead=True)["Item"]
        assert int(state["round"]["N"]) == due.BACKFILL_DONE_ROUND

    def test_a_run_still_held_from_before_the_lease_watches_is_watched_by_the_backfill(
            self, fleet: Fleet, service_clock: Clock):
        # GIVEN a running run claimed under an older version (no lease watch), its lease live, in
        # a table whose backfill has not run
        task_id = fleet.started(shell("n-1"))
        [run] = fleet.claim("n-1")
        fleet.settle()
        forget_lease_watches()
        ddb = aws.client("dynamodb")
        ddb.delete_item(TableName=config.table_name(), Key=due.BACKFILL_KEY)
        service_clock.advance(1)
        answer = fleet.agent("n-1", f"/v1/runs/{run['run_id']}/heartbeat", {"attempt": run["attempt"]})
        assert answer.status == 200, answer
        assert watched_seconds(task_id, "n-1") == []
        # WHEN the sweeper's walk passes
        report = sweeper.sweep()
        # THEN the run keeps its lease and is watched, due when that lease lapses
        held = runs.find(task_id, "n-1")
        assert held is not None
        assert held.lease_expires_at is not None
        assert (held.status, report.requeued_runs) == ("running", 0)
        assert watched_seconds(task_id, "n-1") == [due.lapse_second(held.lease_expires_at)]


def forget_lease_watches() -> None:
    for number in range(due.WATCH_SHARDS):
        for item in LeaseWatchItem.query(due.watch_pk(number)):
            item.delete()
