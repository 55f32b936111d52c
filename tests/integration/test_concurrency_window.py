"""A concurrency window that stalls (domain/window.py) is reopened by the sweeper, one run at a
time: narrowed too far (a deregistration that died between narrowing the window and failing its
runs leaves it so), nothing can be claimed until the task's look after the grace period (a large
task's, through a job: services/run_looks.py)."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib import clock, config
from chalicelib.services import jobs, run_looks, sweeper
from chalicelib.store import run_partitions, runs, tasks
from tests.harness import Fleet, assert_statistics_equal_recount

NODES = ["w-0", "w-1", "w-2"]


def one_at_a_time(fleet: Fleet, nodes: list[str] = NODES) -> str:
    body: dict[str, Any] = {"type": "shell", "target_nodes": nodes, "parameters": {"command": ["true"]},
                            "max_concurrency": 1}
    return fleet.started(body)


def ordinal(task_id: str, node: str) -> int:
    run = runs.find(task_id, node)
    assert run is not None
    return int(run.ordinal)


def test_a_window_narrowed_too_far_is_reopened_for_the_lowest_waiting_run_only(fleet: Fleet) -> None:
    # GIVEN a task of three nodes one at a time, its window narrowed two runs too far
    task_id = one_at_a_time(fleet)
    assert tasks.update_quietly(tasks.get(task_id), "narrow_window", clock.now_iso(), shift=2)
    assert all(fleet.claim(node) == [] for node in NODES)

    # WHEN the sweeper looks at it after the grace period
    report = sweeper.sweep(clock.now_epoch() + config.undispatched_grace_seconds() + 5)
    fleet.settle()

    # THEN the run with the lowest ordinal is released, and only it
    assert report.windows_reopened == 1
    first = min(NODES, key=lambda node: ordinal(task_id, node))
    assert [node for node in NODES if fleet.claim(node)] == [first]
    assert_statistics_equal_recount()


def test_two_looks_from_one_read_of_a_stalled_window_release_one_run(fleet: Fleet) -> None:
    # GIVEN a task of three nodes one at a time, its window narrowed two runs too far, read once
    task_id = one_at_a_time(fleet)
    assert tasks.update_quietly(tasks.get(task_id), "narrow_window", clock.now_iso(), shift=2)
    fleet.settle()
    stalled = tasks.get(task_id)

    # WHEN two looks reopen it from that same read (a job delivered twice, or a job and a sweep)
    first = run_looks.reopen_stalled_window(stalled, stalled.counts)
    second = run_looks.reopen_stalled_window(stalled, stalled.counts)

    # THEN only the first moved the window: one run is released, not two
    assert (first, second) == (True, False)
    assert sum(1 for node in NODES if fleet.claim(node)) == 1


def test_a_window_whose_released_run_waits_is_left_as_it_is(fleet: Fleet) -> None:
    # GIVEN a task of three nodes one at a time whose released run's node does not claim
    task_id = one_at_a_time(fleet)
    before = tasks.get(task_id).finished_base

    # WHEN the sweeper looks at it after the grace period
    report = sweeper.sweep(clock.now_epoch() + config.undispatched_grace_seconds() + 5)

    # THEN the window is not moved: nothing is stalled
    assert report.windows_reopened == 0
    assert tasks.get(task_id).finished_base == before


def test_a_large_task_s_stalled_window_is_reopened_by_a_job_not_in_the_sweep(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a task of 40 nodes over 4 run partitions (10 runs a job), one at a time, narrowed too far
    monkeypatch.setattr(run_partitions, "RUNS_PER_PARTITION", 10)
    monkeypatch.setattr(jobs, "RUNS_PER_JOB", 10)
    nodes = [f"w-{i:02d}" for i in range(40)]
    task_id = one_at_a_time(fleet, nodes)
    assert tasks.update_quietly(tasks.get(task_id), "narrow_window", clock.now_iso(), shift=2)

    # WHEN the sweeper looks at it after the grace period, reading the task's runs impossible
    iter_runs = runs.iter_runs
    monkeypatch.setattr(runs, "iter_runs", lambda *a, **k: pytest.fail("the sweep read the task's runs"))
    report = sweeper.sweep(clock.now_epoch() + config.undispatched_grace_seconds() + 5)
    monkeypatch.setattr(runs, "iter_runs", iter_runs)

    # THEN jobs reopened it, reading one group of run partitions each: the run with the lowest
    # ordinal is released, and only it
    assert report.windows_reopened == 0
    monkeypatch.setattr(runs, "iter_runs", read_in_groups(iter_runs, reads := []))
    fleet.settle()
    assert reads == [10] * 4
    first = min(nodes, key=lambda node: ordinal(task_id, node))
    assert [node for node in nodes if fleet.claim(node)] == [first]


def read_in_groups(iter_runs: Any, reads: list[int]) -> Any:
    """`runs.iter_runs` that records how many runs each call read, and fails a call that reads
    every run partition of a task at once."""
    def reading(task_id: str, status: str | None = None, partitions: range | None = None) -> Any:
        assert partitions is not None, "a job read every run of the task"
        found = list(iter_runs(task_id, status, partitions))
        reads.append(len(found))
        return iter(found)
    return reading


def test_a_large_task_s_window_check_stops_at_the_first_group_holding_a_released_waiting_run(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a task of 40 nodes over 4 run partitions (10 runs a job), 20 at a time, nobody claiming
    monkeypatch.setattr(run_partitions, "RUNS_PER_PARTITION", 10)
    monkeypatch.setattr(jobs, "RUNS_PER_JOB", 10)
    nodes = [f"w-{i:02d}" for i in range(40)]
    task_id = fleet.started({"type": "shell", "target_nodes": nodes, "parameters": {"command": ["true"]},
                             "max_concurrency": 20})
    before = tasks.get(task_id).finished_base

    # WHEN the sweeper looks at it after the grace period and the jobs run
    iter_runs = runs.iter_runs
    sweeper.sweep(clock.now_epoch() + config.undispatched_grace_seconds() + 5)
    monkeypatch.setattr(runs, "iter_runs", read_in_groups(iter_runs, reads := []))
    fleet.settle()

    # THEN the first job found a released run waiting in its group and stopped: nothing moved
    assert reads == [10]
    assert tasks.get(task_id).finished_base == before
