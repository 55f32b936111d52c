"""What a step gets from the agent (parameters, FLEETRUN_* context) and how the agent runs steps:
a custom steps directory, a missing executable, a delegate runner with two slots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.stack import Stack

pytestmark = pytest.mark.e2e

_RECORDING_STEP = """#!/bin/sh
env | grep '^FLEETRUN_' | sort > "$FLEETRUN_WORK_DIR/env.txt"
cat > "$FLEETRUN_WORK_DIR/stdin.json"
echo "::progress 50 halfway there"
echo "::event warning run careful now"
echo plain output
"""


def _steps_dir(root: Path) -> Path:
    step = root / "shell" / "run"
    step.parent.mkdir(parents=True)
    step.write_text(_RECORDING_STEP)
    step.chmod(0o755)
    return root


def test_a_step_gets_its_parameters_and_context_and_may_report_progress_and_events(
        stack: Stack, tmp_path: Path) -> None:
    # GIVEN an agent whose shell/run step records what it was given
    node = stack.node_id("contract")
    token = stack.register(node)
    work = tmp_path / "work"
    stack.start_agent(node, token, work, {"FLEETRUN_NODE_TOKEN": token}, steps_dir=_steps_dir(tmp_path / "steps"))

    # WHEN a shell task runs on it
    parameters = {"command": ["echo", "a b"], "timeout_seconds": 60}
    task_id = stack.create_task({"type": "shell", "target_nodes": [node], "parameters": parameters})["task_id"]
    assert stack.wait_task(task_id)["status"] == "completed"

    # THEN the step saw the parameters on stdin and as FLEETRUN_PARAM_*, and the run's context
    run_dir = work / "runs" / task_id / node
    assert json.loads((run_dir / "stdin.json").read_text()) == {"command": ["echo", "a b"], "timeout_seconds": 60}
    env = dict(line.split("=", 1) for line in (run_dir / "env.txt").read_text().splitlines())
    assert env["FLEETRUN_PARAM_COMMAND"] == json.dumps(["echo", "a b"])
    assert env["FLEETRUN_PARAM_TIMEOUT_SECONDS"] == "60"
    assert env["FLEETRUN_RUN_ID"] == f"{task_id}.{node}"
    assert (env["FLEETRUN_TASK_ID"], env["FLEETRUN_STEP"], env["FLEETRUN_ATTEMPT"]) == (task_id, "run", "1")
    assert env["FLEETRUN_NODE"] == env["FLEETRUN_TARGET_NODE"] == node
    assert Path(env["FLEETRUN_WORK_DIR"]) == run_dir.resolve()
    assert Path(env["FLEETRUN_SANDBOX"]) == (work / "sandbox").resolve()
    assert "FLEETRUN_NODE_TOKEN" not in env
    # AND its progress and event lines reached the API as an event carrying the progress
    warning = [e for e in stack.events(task_id) if e.get("type") == "warning" and e.get("node") == node]
    assert [(e["step"], e["message"], e["progress"]) for e in warning] == [("run", "careful now", 50)]


def test_a_step_without_an_executable_fails_the_run_with_a_clear_message(stack: Stack, tmp_path: Path) -> None:
    # GIVEN an agent whose steps directory only knows shell/run
    node = stack.node_id("nostep")
    stack.start_agent(node, stack.register(node), tmp_path / "work", steps_dir=_steps_dir(tmp_path / "steps"))

    # WHEN a config.release task runs on it
    task = stack.create_task({"type": "config.release", "target_nodes": [node], "parameters": {"website_id": 3}})
    assert stack.wait_task(task["task_id"])["status"] == "failed"

    # THEN the run says which executable is missing where, on its first attempt
    run = stack.runs(task["task_id"])[node]
    assert run["error_message"] == f"no executable for step apply_config of config.release on {node}"
    assert run["attempt"] == 1


def test_a_delegate_runner_with_two_slots_runs_the_runs_of_its_targets_at_once(stack: Stack, tmp_path: Path) -> None:
    # GIVEN a Salt master's agent with two slots
    master = stack.node_id("salt-master")
    stack.start_agent(master, stack.register(master), tmp_path, {"FLEETRUN_DEMO_STEP_SECONDS": "0.5"}, slots=2)
    targets = [stack.node_id("gpu"), stack.node_id("gpu")]

    # WHEN a scale-up of two hosts names it as the runner
    parameters = {"ssh_user": "root", "salt_master": master, "partition": "a100"}
    task = stack.create_task({"type": "slurm.scale_up", "target_nodes": targets, "parameters": parameters,
                              "runner_node": master})
    assert stack.wait_task(task["task_id"])["status"] == "completed"

    # THEN the master did both, for each target, at the same time
    runs = stack.runs(task["task_id"])
    assert {(r["runner"], r["status"]) for r in runs.values()} == {(master, "succeeded")}
    first, second = runs.values()
    assert first["started_at"] < second["completed_at"]
    assert second["started_at"] < first["completed_at"]
    sandbox = tmp_path / "sandbox"
    for target in targets:
        assert f"id: {target}\nmaster: {master}\n" in (sandbox / "salt" / "minions" / f"{target}.conf").read_text()
    assert (sandbox / "slurm" / "partitions" / "a100").read_text().split() == sorted(targets)
