"""Two-phase tasks with real agent processes on the local runtime (4 s leases, 1 s sweeps).

The incident this prevents: a plan/apply task whose worker died while waiting for
confirmation was applied by a fresh worker without the plan. Here the runner is killed
(SIGKILL) or loses its plan directory while the task waits; the task must plan again, wait
for a new confirmation and apply where the plan is. The demo steps log every plan and every
apply (refused or not) to `<agent work dir>/sandbox/iac.log`, which proves no apply ever
ran without a plan file.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from chalicelib import clock
from tests.e2e.stack import LEASE_SECONDS, Stack, fleetrun
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

WAITING = ("apply_pending",)


def iac_task(stack: Stack, runner: str, workspace: str) -> str:
    task = stack.create_task({
        "type": "iac.plan_apply", "target_nodes": [runner],
        "parameters": {"workspace": workspace, "source": "git::infra", "secret_variables": {"token": "s3cr3t"}},
    })
    return str(task["task_id"])


def iac_log(work_dir: Path) -> list[list[str]]:
    """`<verb> <attempt> task=<id>` of every plan/apply the demo steps ran in this work dir."""
    path = work_dir / "sandbox" / "iac.log"
    if not path.is_file():
        return []
    return [[parts[0], parts[1], parts[3]] for parts in (line.split() for line in path.read_text().splitlines())]


def run_dir(work_dir: Path, task_id: str, node: str) -> Path:
    return work_dir / "runs" / task_id / node


def event_names(stack: Stack, task_id: str) -> list[str]:
    return [e["message"].split(":")[0] for e in stack.events(task_id) if e["message"].startswith("task.")]


def renewed_after(stack: Stack, task_id: str, runner: str, moment: float) -> bool:
    """Whether the runner's reservation was renewed after `moment` (a renewal grants a lease from now)."""
    reservation = stack.runs(task_id)[runner]["reservation"]
    return reservation is not None and clock.parse_rfc3339(reservation["expires_at"]) - LEASE_SECONDS > moment


def dispatch_waited(stack: Stack, *task_ids: str) -> bool:
    """Whether the dispatch of each task ran and found the task waiting for its concurrency key."""
    waited = {record.get("task_id") for record in stack.logged("task waits for its concurrency key")}
    return waited >= set(task_ids)


def confirm(stack: Stack, task_id: str) -> dict[str, Any]:
    task: dict[str, Any] = stack.admin.post(f"/v1/tasks/{task_id}/confirm")
    return task


def test_a_killed_runner_never_applies_and_the_restarted_runner_plans_again(stack: Stack, tmp_path: Path) -> None:
    runner = stack.node_id("tf")
    token = stack.register(runner)
    first_dir, second_dir = tmp_path / "a-before", tmp_path / "a-after"
    agent = stack.start_agent(runner, token, first_dir)
    # GIVEN a plan on runner A
    task_id = iac_task(stack, runner, f"ws-{uuid.uuid4().hex[:6]}")
    stack.wait_task(task_id, WAITING)
    assert (run_dir(first_dir, task_id, runner) / "plan.json").is_file()
    # WHEN A keeps heartbeating past the end of the reservation its plan was first granted
    first_end = clock.parse_rfc3339(stack.runs(task_id)[runner]["reservation"]["expires_at"])
    wait_for(lambda: renewed_after(stack, task_id, runner, first_end), LEASE_SECONDS * 3,
             "a heartbeat after the first reservation's end")
    # THEN the task keeps waiting for confirmation of that plan
    task = stack.task(task_id)
    assert (task["status"], task["attempt"]) == ("apply_pending", 1)
    assert "task.replan" not in event_names(stack, task_id)
    # WHEN A is killed while the task waits for confirmation
    agent.kill()
    agent.wait()
    # THEN after the lease the task plans again (attempt 2), with nobody to plan it yet
    stack.wait_run(task_id, runner, ["pending"], attempt=2, timeout=LEASE_SECONDS * 4)
    assert "task.replan" in event_names(stack, task_id)
    # WHEN A comes back without its work directory
    stack.start_agent(runner, token, second_dir)
    # THEN it plans again and the task waits for a new confirmation
    task = stack.wait_task(task_id, WAITING)
    assert task["attempt"] == 2
    # WHEN confirmed THEN the apply runs where the new plan is
    confirm(stack, task_id)
    task = stack.wait_task(task_id)
    assert task["status"] == "completed", task
    assert iac_log(first_dir) == [["plan", "1", f"task={task_id}"]]
    assert iac_log(second_dir) == [["plan", "2", f"task={task_id}"], ["apply", "2", f"task={task_id}"]]
    plan_hash = (run_dir(second_dir, task_id, runner) / "plan.json").read_text()
    assert (run_dir(second_dir, task_id, runner) / "applied.json").is_file()
    assert plan_hash


def test_a_runner_that_loses_its_plan_reports_it_and_the_task_plans_again(stack: Stack, tmp_path: Path) -> None:
    runner = stack.node_id("tf")
    work_dir = tmp_path / "a"
    agent = stack.start_agent(runner, stack.register(runner), work_dir)
    task_id = iac_task(stack, runner, f"ws-{uuid.uuid4().hex[:6]}")
    stack.wait_task(task_id, WAITING)
    # WHEN the plan directory disappears under a live runner
    shutil.rmtree(run_dir(work_dir, task_id, runner))
    # THEN the runner reports plan-lost at once (well before a lease), plans again, waits again
    wait_for(lambda: "task.replan" in event_names(stack, task_id), LEASE_SECONDS, "task.replan")
    task = stack.wait_task(task_id, WAITING)
    assert task["attempt"] == 2
    assert "reported plan-lost" in stack.agent_log(agent)
    confirm(stack, task_id)
    assert stack.wait_task(task_id)["status"] == "completed"
    assert iac_log(work_dir) == [["plan", "1", f"task={task_id}"], ["plan", "2", f"task={task_id}"],
                                 ["apply", "2", f"task={task_id}"]]


def test_tasks_of_one_workspace_run_one_at_a_time_and_a_waiting_plan_holds_the_key(
        stack: Stack, tmp_path: Path) -> None:
    runner = stack.node_id("tf")
    work_dir = tmp_path / "a"
    stack.start_agent(runner, stack.register(runner), work_dir, slots=3)
    workspace = f"ws-{uuid.uuid4().hex[:6]}"
    # GIVEN three tasks on one workspace (the key defaults to it)
    first, second, third = (iac_task(stack, runner, workspace) for _ in range(3))
    assert stack.task(first)["concurrency_key"] == workspace
    # THEN only the first plans; the others wait in pending without node runs
    stack.wait_task(first, WAITING)
    wait_for(lambda: dispatch_waited(stack, second, third), 10, "the dispatch of both to wait for the key")
    for waiting in (second, third):
        assert stack.task(waiting)["status"] == "pending"
        assert stack.runs(waiting) == {}
    # WHEN the first is applied THEN the second plans (and holds the key while it waits)
    confirm(stack, first)
    assert stack.wait_task(first)["status"] == "completed"
    stack.wait_task(second, WAITING)
    assert stack.task(third)["status"] == "pending"
    # WHEN the holder is cancelled THEN the third starts
    stack.admin.post(f"/v1/tasks/{second}/cancel")
    assert stack.wait_task(second)["status"] == "cancelled"
    stack.wait_task(third, WAITING)
    confirm(stack, third)
    assert stack.wait_task(third)["status"] == "completed"
    assert [entry[0] + ":" + entry[2] for entry in iac_log(work_dir)] == [
        f"plan:task={first}", f"apply:task={first}", f"plan:task={second}", f"plan:task={third}",
        f"apply:task={third}",
    ]


def test_the_cli_watches_a_plan_until_it_waits_then_confirms_and_watches_the_apply(
        stack: Stack, tmp_path: Path) -> None:
    runner = stack.node_id("tf")
    work_dir = tmp_path / "a"
    stack.start_agent(runner, stack.register(runner), work_dir)
    env = stack.user_environment(tmp_path)
    # WHEN a user submits and watches THEN the watch ends when the plan waits: exit 3
    submitted = fleetrun("submit", "iac.plan_apply", "-n", runner, "--param", f"workspace=cli-{runner}",
                         "--param", "source=git::infra", "--watch", env=env, timeout=60)
    assert submitted.returncode == 3, submitted.stdout + submitted.stderr
    assert "fleetrun confirm" in submitted.stdout
    task_id = submitted.stdout.split("fleetrun confirm ")[1].split()[0]
    # WHEN the user confirms and watches THEN the apply runs and the watch exits 0
    confirmed = fleetrun("confirm", task_id, "--watch", env=env, timeout=60)
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    assert [entry[0] for entry in iac_log(work_dir)] == ["plan", "apply"]
