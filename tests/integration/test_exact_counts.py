"""Counts that are exact on DynamoDB Streams' own terms (ARCHITECTURE.md, invariant 8).

The fidelity layer delivers the stream as AWS may: records spread over shards by item, order
kept per item only, shards concurrent and interleaved, batches of any size, whole batches
replayed, some dropped; transactions cancelled with TransactionConflict and requests throttled.
Whatever it does, a task's node counts, its statistics and its end equal a recount from its
runs: each run write is counted once (services/aggregation.py), and what a lost record left
wrong the sweeper recounts (services/recount.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from chalicelib import config
from chalicelib.services import jobs, statistics, sweeper
from chalicelib.store import run_partitions, runs
from fleetrun.local import fidelity
from fleetrun.local.fidelity.streams import ShardedStreamPump
from fleetrun.local.pumps import LambdaContext
from tests.harness import Fleet, assert_statistics_equal_recount
from tests.service_clock import Clock

GRACE = 30


def shell(nodes: list[str], **extra: Any) -> dict[str, Any]:
    return {"type": "shell", "target_nodes": nodes, "parameters": {"command": ["true"]}, **extra}


def counted_from_runs(task_id: str) -> dict[str, int]:
    return dict(Counter(run.status for run in runs.iter_runs(task_id)))


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {status: n for status, n in counts.items() if n}


@pytest.fixture
def chaos(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    """A fleet on the harshest settings of the acceptance: 10% batch replays, 5% transaction
    conflicts, 2% throttles, 4 shards (and no rate limit on the 2,000 registrations)."""
    monkeypatch.setenv("FLEETRUN_RATE_LIMIT", "100000")
    config.reset()
    fidelity.install(fidelity.current().with_rates(
        mode=fidelity.STRICT, shards=4, replay_rate=0.10, conflict_rate=0.05, throttle_rate=0.02))
    return Fleet(aws)


@pytest.mark.slow
def test_a_2000_node_task_ends_with_exact_counts_under_shards_replays_conflicts_and_throttles(chaos: Fleet):
    # GIVEN 2,000 registered nodes and a task on all of them
    fleet = chaos
    assert isinstance(fleet.stream, ShardedStreamPump)
    nodes = [f"n{i:04d}" for i in range(2000)]
    fleet.register(*nodes)
    task_id = fleet.started(shell(nodes, max_concurrency=2000))

    # WHEN every node claims its run and completes it (the stream settled every 200 nodes)
    claims: Counter[str] = Counter()
    for start in range(0, len(nodes), 200):
        for node in nodes[start:start + 200]:
            for run in fleet.claim(node, 10):
                claims[run["node"]] += 1
                answer = fleet.finish(node, run)
                assert answer.status == 200, answer
        fleet.settle()
    fleet.settle()

    # THEN the task completed, every run executed once, and every count equals a recount
    task = fleet.task(task_id)
    assert task["status"] == "completed"
    assert claims == Counter(dict.fromkeys(nodes, 1))
    assert {int(run.attempt) for run in runs.iter_runs(task_id)} == {1}
    assert nonzero(task["node_counts"]) == counted_from_runs(task_id) == {"succeeded": 2000}
    assert task["progress"] == 100
    assert fleet.stats()["node_runs"]["succeeded"] == 2000
    assert_statistics_equal_recount()


def test_a_dropped_stream_batch_is_recounted_within_sweep_interval_and_grace(
    aws: Any, monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("FLEETRUN_RECOUNT_GRACE_SECONDS", str(GRACE))
    config.reset()
    fidelity.install(fidelity.current().with_rates(mode=fidelity.STRICT, replay_rate=0.0))
    fleet = Fleet(aws)
    service_clock = Clock(monkeypatch)
    assert isinstance(fleet.stream, ShardedStreamPump)
    nodes = ["n1", "n2", "n3", "n4"]
    fleet.register(*nodes)
    task_id = fleet.started(shell(nodes))

    # GIVEN the stream batch that carries n4's completion is lost (a dead-lettered batch)
    fleet.stream.drop_next(lambda record: record["dynamodb"]["Keys"]["sk"]["S"] == "RUN#n4"
                           and record["dynamodb"].get("NewImage", {}).get("status", {}).get("S") == "succeeded")
    assert fleet.run_agents(nodes) == 4
    assert fleet.stream.dropped
    task = fleet.task(task_id)
    assert task["status"] == "running"  # n4 (and what else the batch held) not counted as ended
    assert task["node_counts"]["succeeded"] < 4

    # WHEN the sweeper passes before the grace period, then once after it
    service_clock.advance(GRACE / 2)
    assert sweeper.sweep().recounted == []
    service_clock.advance(GRACE / 2 + 1)
    report = sweeper.sweep()
    fleet.settle()

    # THEN that pass recounts the task from its runs and it completes with exact counts
    assert report.recounted == [task_id]
    task = fleet.task(task_id)
    assert task["status"] == "completed"
    assert nonzero(task["node_counts"]) == counted_from_runs(task_id) == {"succeeded": 4}
    assert_statistics_equal_recount()


def test_a_large_task_is_recounted_by_a_job_not_in_the_sweep(aws: Any, monkeypatch: pytest.MonkeyPatch):
    # GIVEN a task of 40 runs over 4 run partitions (10 runs a job), a completion's batch lost
    monkeypatch.setenv("FLEETRUN_RECOUNT_GRACE_SECONDS", str(GRACE))
    config.reset()
    monkeypatch.setattr(run_partitions, "RUNS_PER_PARTITION", 10)
    monkeypatch.setattr(jobs, "RUNS_PER_JOB", 10)
    fidelity.install(fidelity.current().with_rates(mode=fidelity.STRICT, replay_rate=0.0))
    fleet = Fleet(aws)
    service_clock = Clock(monkeypatch)
    nodes = [f"n{i:02d}" for i in range(40)]
    task_id = fleet.started(shell(nodes, max_concurrency=40))
    fleet.stream.drop_next(lambda record: record["dynamodb"]["Keys"]["sk"]["S"] == "RUN#n07"
                           and record["dynamodb"].get("NewImage", {}).get("status", {}).get("S") == "succeeded")
    assert fleet.run_agents(nodes) == 40
    assert fleet.task(task_id)["status"] == "running"

    # WHEN the sweeper passes after the grace period, reading every run of a task impossible
    service_clock.advance(GRACE + 1)
    iter_runs = runs.iter_runs
    monkeypatch.setattr(runs, "iter_runs", lambda *a, **k: pytest.fail("the sweep read every run of the task"))
    report = sweeper.sweep()
    monkeypatch.setattr(runs, "iter_runs", iter_runs)

    # THEN the sweep handed the recount to a job, which made the counts exact and the task complete
    assert report.recounted == []
    fleet.settle()
    task = fleet.task(task_id)
    assert task["status"] == "completed"
    assert nonzero(task["node_counts"]) == counted_from_runs(task_id) == {"succeeded": 40}
    assert_statistics_equal_recount()


def test_a_late_copy_of_a_recounted_record_is_not_counted_again(aws: Any, monkeypatch: pytest.MonkeyPatch):
    # GIVEN a task whose last completion was lost and recounted
    monkeypatch.setenv("FLEETRUN_RECOUNT_GRACE_SECONDS", str(GRACE))
    config.reset()
    fidelity.install(fidelity.current().with_rates(mode=fidelity.STRICT, replay_rate=0.0))
    fleet = Fleet(aws)
    service_clock = Clock(monkeypatch)
    fleet.register("n1", "n2")
    task_id = fleet.started(shell(["n1", "n2"]))
    lost: list[dict[str, Any]] = []

    def completion_of_n2(record: dict[str, Any]) -> bool:
        found = (record["dynamodb"]["Keys"]["sk"]["S"] == "RUN#n2"
                 and record["dynamodb"].get("NewImage", {}).get("status", {}).get("S") == "succeeded")
        if found:
            lost.append(record)
        return found

    fleet.stream.drop_next(completion_of_n2)
    fleet.run_agents(["n1", "n2"])
    service_clock.advance(GRACE + 1)
    assert sweeper.sweep().recounted == [task_id]
    fleet.settle()
    before = fleet.task(task_id)
    assert before["status"] == "completed"

    # WHEN the lost record arrives after all (a redelivery from a stream outage)
    fleet.app_module.stream_aggregator({"Records": lost}, LambdaContext("fleetrun-stream-consumer"))
    fleet.settle()

    # THEN nothing is counted twice
    after = fleet.task(task_id)
    assert after["node_counts"] == before["node_counts"]
    assert nonzero(after["node_counts"]) == {"succeeded": 2}
    assert_statistics_equal_recount()


def test_the_daily_reconcile_recounts_an_active_task_from_its_runs(aws: Any):
    # GIVEN a task whose last completion was lost on the stream
    fidelity.install(fidelity.current().with_rates(mode=fidelity.STRICT, replay_rate=0.0))
    fleet = Fleet(aws)
    fleet.register("n1", "n2")
    task_id = fleet.started(shell(["n1", "n2"]))
    fleet.stream.drop_next(lambda record: record["dynamodb"]["Keys"]["sk"]["S"] == "RUN#n2"
                           and record["dynamodb"].get("NewImage", {}).get("status", {}).get("S") == "succeeded")
    fleet.run_agents(["n1", "n2"])
    assert fleet.task(task_id)["status"] == "running"

    # WHEN the reconcile runs (before any grace period: it recounts every active task), then
    # the sweeper's next pass
    statistics.reconcile()
    assert_statistics_equal_recount()
    sweeper.sweep()
    fleet.settle()

    # THEN the task's counts come from its runs, it completed, and the statistics agree
    task = fleet.task(task_id)
    assert task["status"] == "completed"
    assert nonzero(task["node_counts"]) == counted_from_runs(task_id) == {"succeeded": 2}
    assert_statistics_equal_recount()
