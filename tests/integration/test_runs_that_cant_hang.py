"""Runs that can't hang, on moto: the create answer warns about runners that are not nodes; a
run nobody claims within `claim_timeout_seconds` of becoming claimable ends `timed_out` with
its runner's state as the reason (never earlier: not while the concurrency window holds it
back, and a run offered again gets a fresh clock), and statistics still equal a recount; a
task queued behind a concurrency key says whom it waits for, with one `task.waiting` event."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from chalicelib import config
from chalicelib.api.schemas import SCHEMAS
from chalicelib.services import claim_timeouts, jobs, liveness, sweeper
from chalicelib.store import run_partitions, runs, tasks
from tests.harness import Fleet, assert_statistics_equal_recount
from tests.service_clock import Clock

TIMEOUT = 30


@pytest.fixture
def service_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


def shell(*targets: str, **extra: Any) -> dict[str, Any]:
    return {"type": "shell", "target_nodes": list(targets), "parameters": {"command": ["true"]},
            "claim_timeout_seconds": TIMEOUT, **extra}


def created(fleet: Fleet, body: dict[str, Any]) -> dict[str, Any]:
    answer = fleet.submit(body)
    assert answer.status == 202, answer
    Draft202012Validator(SCHEMAS["CreatedTask"]).validate(answer.body)
    fleet.settle()
    return answer.body  # type: ignore[no-any-return]


def sweep_after(fleet: Fleet, service_clock: Clock, seconds: float) -> sweeper.SweepReport:
    service_clock.advance(seconds)
    report = sweeper.sweep()
    fleet.settle()
    return report


class TestTheCreateAnswer:
    def test_runners_that_are_not_registered_nodes_are_warned_about_and_the_task_is_created(self, fleet):
        fleet.register("edge-12")
        body = created(fleet, shell("edge-12", "edge-99", "edge-98"))
        assert body["warnings"] == [{
            "code": "unknown_runners", "nodes": ["edge-98", "edge-99"], "count": 2,
            "message": body["warnings"][0]["message"],
        }]
        assert "edge-98, edge-99" in body["warnings"][0]["message"]
        assert fleet.task(body["task_id"])["status"] == "running"
        assert body["claim_timeout_seconds"] == TIMEOUT

    def test_a_delegate_runner_is_the_only_one_checked(self, fleet):
        fleet.register("salt-master")
        body = created(fleet, shell("host-1", "host-2", runner_node="salt-master"))
        assert body["warnings"] == []

    def test_a_replay_answers_with_the_warnings_as_they_are_now(self, fleet):
        first = fleet.submit(shell("edge-99"), key="k-1")
        assert [w["nodes"] for w in first.body["warnings"]] == [["edge-99"]]
        fleet.register("edge-99")
        replay = fleet.submit(shell("edge-99"), key="k-1")
        assert replay.status == 200
        assert replay.body["warnings"] == []

    @pytest.mark.parametrize("seconds", [29, 86_401, "60", 30.5])
    def test_a_claim_timeout_out_of_range_is_a_validation_error_with_its_path(self, fleet, seconds):
        answer = fleet.submit(shell("edge-12", claim_timeout_seconds=seconds))
        assert answer.status == 400, answer
        assert answer.body["error"]["code"] == "validation_error"
        assert any("claim_timeout_seconds" in d["path"] for d in answer.body["error"]["details"])

    def test_the_default_claim_timeout_is_600_s(self, fleet):
        body = created(fleet, {"type": "shell", "target_nodes": ["edge-99"], "parameters": {"command": ["true"]}})
        assert body["claim_timeout_seconds"] == 600


class TestAnUnclaimedRunTimesOut:
    def test_a_run_on_an_unregistered_runner_ends_timed_out_with_the_reason_and_the_task_fails(
            self, fleet, service_clock):
        # GIVEN a task whose only runner is not a registered node
        task_id = created(fleet, shell("edge-99"))["task_id"]
        # WHEN less than the timeout has passed THEN nothing happens
        assert sweep_after(fleet, service_clock, TIMEOUT - 5).unclaimed_timed_out == 0
        assert fleet.runs(task_id)["edge-99"]["status"] == "pending"
        # WHEN the timeout has passed THEN the run times out with the runner's state, the task fails
        assert sweep_after(fleet, service_clock, 6).unclaimed_timed_out == 1
        run = fleet.runs(task_id)["edge-99"]
        assert run["status"] == "timed_out"
        assert "runner edge-99 is not a registered node" in run["error_message"]
        task = fleet.task(task_id)
        assert task["status"] == "failed"
        assert task["node_counts"]["timed_out"] == 1
        assert [e for e in fleet.events(task_id) if "node.claim_timed_out" in e["message"]]
        assert_statistics_equal_recount()

    def test_a_run_the_stream_counted_only_after_the_first_look_still_times_out_in_time(self, fleet, service_clock):
        # GIVEN a task dispatched and looked at before the aggregator counted its run
        answer = fleet.submit(shell("edge-99"))
        assert answer.status == 202, answer
        fleet.stream.drain()  # the aggregator sends the dispatch job
        fleet.queue.drain()  # which creates the run and starts the task
        task = tasks.get(answer.body["task_id"])
        assert (task.status, task.counts["pending"]) == ("running", 0)
        assert sweeper.sweep().tasks_seen == 1
        # WHEN the stream catches up, and the timeout passes
        fleet.settle()
        # THEN the next sweep times the run out (the look is not put off until the recount's)
        assert sweep_after(fleet, service_clock, TIMEOUT + 1).unclaimed_timed_out == 1

    def test_a_run_whose_runner_is_offline_says_since_when(self, fleet, service_clock):
        fleet.register("edge-12")
        task_id = created(fleet, shell("edge-12"))["task_id"]
        offline_at = service_clock.now() + config.node_offline_seconds() + 1
        assert liveness.mark_silent_nodes_offline(offline_at) == ["edge-12"]
        sweep_after(fleet, service_clock, TIMEOUT + 1)
        message = fleet.runs(task_id)["edge-12"]["error_message"]
        assert message.startswith("runner edge-12 offline since 20"), message

    def test_a_run_whose_runner_is_in_maintenance_says_so(self, fleet, service_clock):
        fleet.register("gpu-1")
        assert fleet.call("POST", "/v1/nodes/gpu-1/reclaim", {"user": "bob"}, bearer=fleet.admin).status == 202
        task_id = created(fleet, shell("gpu-1"))["task_id"]
        sweep_after(fleet, service_clock, TIMEOUT + 1)
        assert fleet.runs(task_id)["gpu-1"]["error_message"].startswith("runner gpu-1 in maintenance")

    def test_a_run_whose_runner_holds_all_its_slots_says_busy(self, fleet, service_clock):
        # GIVEN a delegate with 2 slots running 2 of the task's 3 runs
        assert fleet.call("POST", "/v1/nodes", {"node_id": "salt", "slots": 2}, bearer=fleet.admin).status == 201
        fleet.node_tokens["salt"] = fleet.call("POST", "/v1/nodes/salt/token", bearer=fleet.admin).body["token"]
        task_id = created(fleet, shell("h-1", "h-2", "h-3", runner_node="salt", max_errors="100%"))["task_id"]
        claimed = fleet.claim("salt", 2)
        assert len(claimed) == 2
        fleet.settle()  # (the reason reads the delegate's leases from the task's counts)
        # WHEN the third waits past the timeout, the two keeping their leases
        service_clock.advance(TIMEOUT + 1)
        for run in claimed:
            beat = fleet.agent("salt", f"/v1/runs/{run['run_id']}/heartbeat", {"attempt": run["attempt"]})
            assert beat.status == 200, beat
        sweeper.sweep()
        fleet.settle()
        # THEN it times out naming the busy runner
        (waiting,) = [run for run in fleet.runs(task_id).values() if run["status"] != "running"]
        assert waiting["status"] == "timed_out"
        assert waiting["error_message"].startswith("runner salt busy on all 2 slots")

    def test_a_registered_idle_runner_that_never_claims_is_named_online(self, fleet, service_clock):
        fleet.register("edge-12")
        task_id = created(fleet, shell("edge-12"))["task_id"]
        sweep_after(fleet, service_clock, TIMEOUT + 1)
        assert fleet.runs(task_id)["edge-12"]["error_message"].startswith("runner edge-12 online but did not claim")


class TestNeverEarly:
    def test_a_run_the_window_holds_back_gets_its_full_timeout_once_admitted(self, fleet, service_clock):
        # GIVEN two runs on unknown runners, one at a time, failures tolerated
        task_id = created(fleet, shell("edge-98", "edge-99", max_concurrency=1, max_errors="100%"))["task_id"]
        # WHEN the first times out THEN the second, held back until now, is still pending
        assert sweep_after(fleet, service_clock, TIMEOUT + 1).unclaimed_timed_out == 1
        statuses = sorted(run["status"] for run in fleet.runs(task_id).values())
        assert statuses == ["pending", "timed_out"]
        # AND it is not timed out before a full timeout from its admission
        assert sweep_after(fleet, service_clock, TIMEOUT - 5).unclaimed_timed_out == 0
        assert sweep_after(fleet, service_clock, 6).unclaimed_timed_out == 1
        assert fleet.task(task_id)["status"] == "failed"
        assert_statistics_equal_recount()

    def test_a_run_offered_again_after_its_lease_lapsed_gets_a_fresh_clock(self, fleet, service_clock):
        # GIVEN a run claimed late in its timeout, whose agent then goes silent
        fleet.register("edge-12")
        task_id = created(fleet, shell("edge-12"))["task_id"]
        service_clock.advance(TIMEOUT - 5)
        assert len(fleet.claim("edge-12")) == 1
        fleet.settle()  # (the claim's record watches its lease: services/lease_watch.py)
        # WHEN its lease lapses, it is offered again
        report = sweep_after(fleet, service_clock, config.lease_seconds() + 1)
        assert report.requeued_runs == 1
        assert fleet.runs(task_id)["edge-12"]["status"] == "pending"
        # THEN it waits a full timeout from then, not from its creation
        assert sweep_after(fleet, service_clock, TIMEOUT - 5).unclaimed_timed_out == 0
        assert sweep_after(fleet, service_clock, 6).unclaimed_timed_out == 1
        assert_statistics_equal_recount()

    def test_a_task_is_read_again_only_once_its_next_check_has_come(self, fleet, service_clock):
        # GIVEN a task looked at once (its second run admitted by the first one's timeout)
        task_id = created(fleet, shell("edge-98", "edge-99", max_concurrency=1, max_errors="100%"))["task_id"]
        assert not claim_timeouts.due(tasks.get(task_id), service_clock.now() + TIMEOUT - 1)
        swept_at = service_clock.now() + TIMEOUT + 1  # the sweep runs at this time or, with real time gone by, later
        sweep_after(fleet, service_clock, TIMEOUT + 1)
        # THEN the sweeper reads its pending runs again only a full timeout later
        task = tasks.get(task_id)
        assert not claim_timeouts.due(task, swept_at + TIMEOUT - 1)
        assert claim_timeouts.due(task, service_clock.now() + TIMEOUT)


class TestALargeTask:
    """The look reads one group of a task's run partitions; claim-check jobs walk the others."""

    @pytest.fixture
    def reads(self, monkeypatch: pytest.MonkeyPatch) -> list[range | None]:
        """The run partitions of each read of pending runs; 10 runs a partition and a job."""
        monkeypatch.setattr(run_partitions, "RUNS_PER_PARTITION", 10)
        monkeypatch.setattr(jobs, "RUNS_PER_JOB", 10)
        seen: list[range | None] = []
        iter_runs = runs.iter_runs

        def read(task_id: str, status: str | None = None, partitions: range | None = None) -> Any:
            if status == "pending":
                seen.append(partitions)
            return iter_runs(task_id, status, partitions)

        monkeypatch.setattr(runs, "iter_runs", read)
        return seen

    def test_the_look_times_out_its_first_group_and_jobs_walk_the_others(self, fleet, service_clock, reads):
        # GIVEN a task of 40 runs over 4 run partitions, on runners that are not nodes
        targets = [f"far-{i:02d}" for i in range(40)]
        task_id = created(fleet, shell(*targets, max_errors="100%"))["task_id"]
        assert runs.run_shards(task_id) == 4
        reads.clear()
        # WHEN its timeout has passed and the sweeper looks
        service_clock.advance(TIMEOUT + 1)
        report = sweeper.sweep()
        # THEN the look timed out the runs of the first partition only
        assert report.unclaimed_timed_out == sum(1 for t in targets if run_partitions.shard_of(t, 4) == 0)
        # AND once the queue ran, every run timed out, each read was one partition (a job
        # delivered again reads its own again), the task failed with exact counts
        fleet.settle()
        assert set(reads) == {range(i, i + 1) for i in range(4)}
        assert {run["status"] for run in fleet.runs(task_id).values()} == {"timed_out"}
        assert fleet.task(task_id)["status"] == "failed"
        assert_statistics_equal_recount()

    def test_runs_held_back_by_the_window_are_looked_at_again_a_timeout_after_the_walk(
            self, fleet, service_clock, reads):
        # GIVEN 40 runs on runners that are not nodes, 20 at a time
        targets = [f"far-{i:02d}" for i in range(40)]
        task_id = created(fleet, shell(*targets, max_concurrency=20, max_errors="100%"))["task_id"]
        # WHEN the timeout has passed: the walk times out the 20 admitted ones
        assert sweep_after(fleet, service_clock, TIMEOUT + 1).unclaimed_timed_out <= 20
        statuses = Counter(run["status"] for run in fleet.runs(task_id).values())
        assert statuses == {"timed_out": 20, "pending": 20}
        # THEN the others, admitted by those timeouts, get a full timeout from then
        assert sweep_after(fleet, service_clock, TIMEOUT - 5).unclaimed_timed_out == 0
        sweep_after(fleet, service_clock, 6)
        assert {run["status"] for run in fleet.runs(task_id).values()} == {"timed_out"}
        assert_statistics_equal_recount()


class TestWaitingForAConcurrencyKey:
    def test_a_queued_task_names_the_holder_once_and_runs_after_it(self, fleet):
        # GIVEN a running task holding key ws-1 (bob's) and alice's task queued behind it
        fleet.register("n1")
        first = fleet.submit(shell("n1", concurrency_key="ws-1"), who="bob").body["task_id"]
        fleet.settle()
        second = created(fleet, shell("n1", concurrency_key="ws-1"))["task_id"]
        # THEN the second says whom it waits for, with one event naming the holder and its owner
        assert fleet.task(second)["waiting_for"] == {"task_id": first, "owner": "bob"}
        assert fleet.task(first, who="bob")["waiting_for"] is None

        def waiting_events() -> list[dict[str, Any]]:
            return [e for e in fleet.events(second) if e["message"].startswith("task.waiting")]

        (event,) = waiting_events()
        for named in (first, "bob", "'ws-1'"):
            assert named in event["message"]
        # WHEN its dispatch job is delivered again THEN no second event
        from chalicelib.services import dispatch

        dispatch.run_dispatch_job(second, 1)
        fleet.settle()
        assert len(waiting_events()) == 1
        # WHEN the holder ends THEN the second runs and waits for nothing
        for run in fleet.claim("n1", 10):
            assert fleet.finish("n1", run).status == 200
        fleet.settle()
        assert fleet.task(second)["status"] == "running"
        assert fleet.task(second)["waiting_for"] is None
        assert_statistics_equal_recount()
