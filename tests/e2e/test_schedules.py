"""Schedules through the local runtime: `fleetrun schedules` creates one, the local scheduler fires it
onto the intake queue, the intake pump creates the task and a real agent runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.stack import Stack, fleetrun
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def test_a_rate_schedule_fires_at_once_and_its_task_runs_on_the_agent(stack: Stack, tmp_path: Path) -> None:
    env = stack.user_environment(tmp_path)
    node = stack.node_id("sched")
    stack.start_agent(node, stack.register(node), tmp_path / node)
    tag = f"sched-{node}"
    # WHEN a user creates an hourly schedule with the CLI
    created = fleetrun("schedules", "create", "hourly uptime", "rate(1 hour)", "shell", "-n", node,
                       "--param", 'command=["sh","-c","echo scheduled"]', "--tag", tag, "--json", env=env)
    assert created.returncode == 0, created.stderr
    schedule = json.loads(created.stdout)
    # THEN the local scheduler fires it at once (a rate schedule starts at its creation) and the task completes
    task = wait_for(lambda: next(iter(stack.admin.get("/v1/tasks", tag=tag)["items"]), None), 20,
                    "the schedule's first task")
    assert stack.wait_task(task["task_id"])["status"] == "completed"
    # AND the schedule is listed with its next firing an hour after the first
    listed = fleetrun("schedules", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert schedule["schedule_id"] in listed.stdout
    assert "rate(1 hour)" in listed.stdout
    # AND the scheduler's later ticks fire nothing more before the hour is up
    assert len(stack.admin.get("/v1/tasks", tag=tag)["items"]) == 1
    assert schedule["next_fire_at"] is not None
    # WHEN it is deleted
    deleted = fleetrun("schedules", "delete", schedule["schedule_id"], env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert schedule["schedule_id"] not in [s["schedule_id"] for s in stack.admin.pages("/v1/schedules")]


def test_a_bad_expression_is_refused_with_the_reason(stack: Stack, tmp_path: Path) -> None:
    env = stack.user_environment(tmp_path)
    done = fleetrun("schedules", "create", "bad", "cron(0 2 * * * *)", "shell", "-n", "x",
                    "--param", 'command=["true"]', env=env)
    assert done.returncode == 1
    assert "validation_error" in done.stderr
    assert "$.expression: exactly one of day-of-month and day-of-week must be ?" in done.stderr
