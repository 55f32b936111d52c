"""The recount of a task whose runs do not fit one job's read, in chunks (services/recount.py
`Chunked`, ARCHITECTURE.md invariant 9): one group of run partitions per `run_look` job, a
second pass that keeps what it reads only when the first found the counts wrong, exact under
duplicated jobs and counters that move between jobs."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from chalicelib import config
from chalicelib.services import jobs, reconcile, recount, sweeper
from chalicelib.store import run_partitions, runs, tasks
from chalicelib.store.models import TTL_ATTRIBUTE
from fleetrun.local import fidelity
from tests.harness import Fleet, assert_statistics_equal_recount
from tests.service_clock import Clock

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from scale_recount import RecountFigures, recount_in_jobs, tallied_reads

sys.path.pop(0)

GRACE = 30
NODES = [f"n{i:02d}" for i in range(40)]  # 4 run partitions of 10, a job reads one


@pytest.fixture
def fleet(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    monkeypatch.setenv("FLEETRUN_RECOUNT_GRACE_SECONDS", str(GRACE))
    config.reset()
    monkeypatch.setattr(run_partitions, "RUNS_PER_PARTITION", 10)
    monkeypatch.setattr(jobs, "RUNS_PER_JOB", 10)
    fidelity.install(fidelity.current().with_rates(mode=fidelity.STRICT, replay_rate=0.0))
    return Fleet(aws)


@pytest.fixture
def reads() -> Iterator[list[int]]:
    """How many runs each read of a recount tallied, in order."""
    with tallied_reads() as tallied:
        yield tallied


def started(fleet: Fleet, lose: str | None = None, finish: list[str] = NODES) -> str:
    """A task on NODES whose runs of `finish` succeeded; with `lose`, the stream batch carrying
    that node's completion never reached the aggregator (nor what else the batch held)."""
    task_id = fleet.started({"type": "shell", "target_nodes": NODES, "parameters": {"command": ["true"]},
                             "max_concurrency": len(NODES)})
    assert len(runs.run_layout(task_id).pks()) == 4
    if lose is not None:
        fleet.stream.drop_next(lambda record: record["dynamodb"]["Keys"]["sk"]["S"] == f"RUN#{lose}"
                               and record["dynamodb"].get("NewImage", {}).get("status", {}).get("S") == "succeeded")
    assert fleet.run_agents(finish) == len(finish)
    return task_id


def recount_parts(fleet: Fleet, task_id: str) -> list[str]:
    return [item["sk"]["S"] for item in part_items(fleet, task_id)]


def part_items(fleet: Fleet, task_id: str) -> list[dict[str, Any]]:
    return boto3.client("dynamodb").query(
        TableName=fleet.provisioned.table_name, KeyConditionExpression="pk = :pk AND begins_with(sk, :r)",
        ExpressionAttributeValues={":pk": {"S": f"TASK#{task_id}"}, ":r": {"S": "RECOUNT#"}})["Items"]


def exact(fleet: Fleet, task_id: str) -> dict[str, Any]:
    task = fleet.task(task_id)
    recounted = Counter(run.status for run in runs.iter_runs(task_id))
    assert {status: n for status, n in task["node_counts"].items() if n} == dict(recounted)
    assert_statistics_equal_recount()
    return task


def test_a_lost_completion_of_a_large_task_is_repaired_by_jobs_that_each_read_one_partition_group(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch, reads: list[int],
):
    # GIVEN a 40-run task whose completion of n07 never reached the aggregator
    task_id = started(fleet, lose="n07")
    assert fleet.task(task_id)["status"] == "running"

    # WHEN the sweeper looks after the grace period and the dispatch queue runs the jobs
    clock = Clock(monkeypatch)
    clock.advance(GRACE + 1)
    sweeper.sweep()
    fleet.settle()

    # THEN 4 jobs added up the counts, found them wrong, 4 more kept what they read (for a day),
    # the last committed it: no job read more than one group; the task completed, counts exact
    assert reads == [10] * 8
    parts = part_items(fleet, task_id)
    assert len(parts) == 4
    assert all(0 <= int(clock.now()) + 86400 - int(part[TTL_ATTRIBUTE]["N"]) <= 60 for part in parts)
    task = exact(fleet, task_id)
    assert task["status"] == "completed"
    assert task["node_counts"]["succeeded"] == 40


def test_a_recount_in_chunks_that_finds_the_counts_right_writes_only_its_stamp(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch, reads: list[int],
):
    # GIVEN a 40-run task, half of it done, counted right, its counters quiet for the grace period
    task_id = started(fleet, finish=NODES[:20])
    before = tasks.get(task_id)
    Clock(monkeypatch).advance(GRACE + 1)

    # WHEN the sweeper looks and the jobs run
    sweeper.sweep()
    fleet.settle()

    # THEN one pass read every run, one group a job, and wrote nothing but the recount's stamp
    assert reads == [10] * 4
    assert recount_parts(fleet, task_id) == []
    after = tasks.get(task_id)
    assert after.recounted_at is not None
    assert after.recounted_at != before.recounted_at
    assert int(after.counted_ver) == int(before.counted_ver)
    assert exact(fleet, task_id)["node_counts"]["pending"] == 20


def test_a_recount_in_chunks_stops_when_a_record_is_counted_between_its_jobs(fleet: Fleet):
    # GIVEN a half-done 40-run task whose recount read its first group of partitions
    task_id = started(fleet, finish=NODES[:20])
    following, repaired = recount.step(tasks.get(task_id), recount.Chunked.start(tasks.get(task_id)))
    assert following is not None
    assert following.partition == 1
    assert not repaired

    # WHEN a node finishes its run and the aggregator counts it before the next job
    assert fleet.run_agents(["n30"]) == 1

    # THEN the next job stops the recount: it writes nothing, and the counts stay exact
    ver = int(tasks.get(task_id).counted_ver)
    assert recount.step(tasks.get(task_id), following) == (None, False)
    assert int(tasks.get(task_id).counted_ver) == ver
    assert recount_parts(fleet, task_id) == []
    assert exact(fleet, task_id)["node_counts"]["succeeded"] == 21


def test_jobs_of_the_second_pass_delivered_twice_still_commit_exact_counts(fleet: Fleet):
    # GIVEN a 40-run task whose completion of n33 was lost, and a recount's first pass over it
    task_id = started(fleet, lose="n33")
    chunk: recount.Chunked | None = recount.Chunked.start(tasks.get(task_id))
    while chunk is not None and not chunk.keep:
        chunk, _ = recount.step(tasks.get(task_id), chunk)
    assert chunk is not None
    assert chunk.keep
    assert chunk.partition == 0

    # WHEN every job of the second pass is delivered twice (the last one's second copy after it committed)
    outcomes = []
    while chunk is not None:
        following, repaired = recount.step(tasks.get(task_id), chunk)
        again, repaired_again = recount.step(tasks.get(task_id), chunk)
        assert again == following
        outcomes.append((repaired, repaired_again))
        chunk = following
    fleet.settle()

    # THEN the first copy of the last job committed the recount, the second found the counters
    # moved by it, and the task completed with exact counts
    assert outcomes == [(False, False)] * 3 + [(True, False)]
    task = exact(fleet, task_id)
    assert task["status"] == "completed"
    assert task["node_counts"]["succeeded"] == 40


def test_a_second_pass_whose_parts_do_not_cover_the_task_commits_nothing(fleet: Fleet):
    # GIVEN the second pass of a recount of a task with a lost completion, its first job's part gone
    task_id = started(fleet, lose="n01")
    counted = fleet.task(task_id)["node_counts"]
    assert counted["succeeded"] < 40
    chunk: recount.Chunked | None = recount.Chunked.start(tasks.get(task_id))
    while chunk is not None and not chunk.keep:
        chunk, _ = recount.step(tasks.get(task_id), chunk)
    assert chunk is not None
    chunk, _ = recount.step(tasks.get(task_id), chunk)
    [first] = recount_parts(fleet, task_id)
    boto3.client("dynamodb").delete_item(TableName=fleet.provisioned.table_name,
                                         Key={"pk": {"S": f"TASK#{task_id}"}, "sk": {"S": first}})

    # WHEN the rest of the pass runs
    repaired = False
    while chunk is not None:
        chunk, repaired = recount.step(tasks.get(task_id), chunk)

    # THEN its last job commits nothing: the counts are left for the next look
    assert not repaired
    assert fleet.task(task_id)["node_counts"] == counted


def test_a_reconcile_step_leaves_a_task_too_large_for_one_read_to_the_sweeper(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch, reads: list[int],
):
    # GIVEN a 40-run task whose completion of n12 was lost
    task_id = started(fleet, lose="n12")

    # WHEN a whole reconcile pass runs
    reconcile.run_pass()

    # THEN no step read the task's runs, and the statistics still equal a recount of the tasks;
    # the sweeper's jobs repair the task once its counters have been quiet for the grace period
    assert reads == []
    assert_statistics_equal_recount()
    Clock(monkeypatch).advance(GRACE + 1)
    sweeper.sweep()
    fleet.settle()
    assert exact(fleet, task_id)["status"] == "completed"


def test_the_scale_bench_plays_a_running_task_s_recount_one_job_at_a_time(fleet: Fleet):
    # GIVEN a half-done 40-run task, counted right
    task_id = started(fleet, finish=NODES[:20])

    # WHEN bench/scale.py's part recounts it job by job
    figures = recount_in_jobs(task_id)

    # THEN one pass of 4 jobs read 10 runs each and found the counts right; a job made 3 requests:
    # the task read, the query of its group, and the continuation sent (the last: the stamp)
    assert figures == RecountFigures(jobs=4, runs_read=40, max_runs_per_invocation=10,
                                     max_requests_per_invocation=3, counts_right=True)
