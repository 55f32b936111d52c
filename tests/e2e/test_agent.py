"""The node agent against the local runtime: real agent processes, real steps, real leases.

Each test registers its own nodes (unique ids), starts `python -m fleetrun.agent` with the
bundled demo steps and drives a task through the API. Leases are 4 s and the sweeper runs
every second (see conftest.py), so lease expiry is exercised in seconds.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.stack import LEASE_SECONDS, Stack
from tests.processes import process_alive
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def test_slurm_scale_up_on_two_nodes_completes_with_sandbox_files_and_progress(stack: Stack, tmp_path: Path) -> None:
    # GIVEN two nodes, each with its own agent
    nodes = [stack.node_id("slurm") for _ in range(2)]
    for node in nodes:
        stack.start_agent(node, stack.register(node), tmp_path / node)
    parameters = {"ssh_user": "root", "password": "hunter2-secret", "salt_master": "salt-1", "partition": "gpu"}

    # WHEN a slurm.scale_up task targets both
    task = stack.create_task({"type": "slurm.scale_up", "target_nodes": nodes, "parameters": parameters})
    done = stack.wait_task(task["task_id"], timeout=30)

    # THEN every step ran on each node's sandbox, and the progress of each step was reported
    assert done["status"] == "completed", stack.runs(task["task_id"])
    events = stack.events(task["task_id"])
    for node in nodes:
        sandbox = tmp_path / node / "sandbox"
        minion = (sandbox / "salt" / "minions" / f"{node}.conf").read_text()
        assert "master: salt-1" in minion
        assert "hunter2-secret" not in minion
        assert (sandbox / "slurm" / "nodes" / node).read_text().startswith(f"NodeName={node} ")
        assert node in (sandbox / "slurm" / "partitions" / "gpu").read_text().split()
        mine = [e for e in events if e.get("node") == node]
        assert {e["step"] for e in mine} >= {"deploy-minion", "register-node", "slurm-scale"}
        assert {30, 65, 100} <= {e.get("progress") for e in mine}, mine
        assert all("hunter2-secret" not in str(e) for e in mine)
    assert {run["status"] for run in stack.runs(task["task_id"]).values()} == {"succeeded"}


def test_a_step_exiting_non_zero_fails_the_run_with_its_last_output_lines(stack: Stack, tmp_path: Path) -> None:
    # GIVEN an agent
    node = stack.node_id("exit3")
    stack.start_agent(node, stack.register(node), tmp_path / node)

    # WHEN its step prints some lines (stdout and stderr) and exits 3
    script = "echo first line; echo 'second line' >&2; echo 'the very last words'; exit 3"
    task_id = stack.shell_task(node, ["sh", "-c", script])
    done = stack.wait_task(task_id)

    # THEN the run failed and says why, with the step's last output
    assert done["status"] == "failed"
    run = stack.runs(task_id)[node]
    assert run["status"] == "failed"
    assert "step run exited 3" in run["error_message"]
    assert run["error_message"].rstrip().endswith("the very last words")
    assert "second line" in run["error_message"]


def test_cancel_stops_the_running_step_within_one_heartbeat(stack: Stack, tmp_path: Path) -> None:
    # GIVEN a step that runs for 30 s and wrote its pid (it runs in the sandbox directory)
    node = stack.node_id("cancel")
    stack.start_agent(node, stack.register(node), tmp_path / node)
    pid_file = tmp_path / node / "sandbox" / "step.pid"
    task_id = stack.shell_task(node, ["sh", "-c", "echo $$ > step.pid; exec sleep 30"])
    wait_for(lambda: pid_file.is_file() and pid_file.read_text().strip(), 20, "the step to write its pid")
    pid = int(pid_file.read_text())
    assert process_alive(pid)

    # WHEN the task is cancelled
    started = time.monotonic()
    stack.admin.post(f"/v1/tasks/{task_id}/cancel")

    # THEN the step's process is gone and the run cancelled within a heartbeat (lease/3) plus slack
    limit = LEASE_SECONDS / 3 + 2
    wait_for(lambda: not process_alive(pid), limit, f"step process {pid} to stop", interval=0.05)
    stack.wait_run(task_id, node, ["cancelled"], timeout=max(0.1, limit - (time.monotonic() - started)))
    assert stack.wait_task(task_id, timeout=10)["status"] == "cancelled"


def test_a_run_of_an_agent_killed_mid_step_is_completed_by_its_restarted_agent(stack: Stack, tmp_path: Path) -> None:
    # GIVEN an agent running a 5 s step (attempt 1)
    node = stack.node_id("sigkill")
    token = stack.register(node)
    first = stack.start_agent(node, token, tmp_path / "first")
    task_id = stack.shell_task(node, ["sleep", "5"])
    stack.wait_run(task_id, node, ["running"], timeout=20, attempt=1)

    # WHEN the agent dies without a word, and a new agent process starts for the same node
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=5)
    second = stack.start_agent(node, token, tmp_path / "second")

    # THEN after the lease expires the run is offered again and the new agent completes attempt 2
    done = stack.wait_task(task_id, timeout=LEASE_SECONDS + 5 + 20)
    assert done["status"] == "completed"
    run = stack.runs(task_id)[node]
    assert (run["status"], run["attempt"]) == ("succeeded", 2)
    assert "claimed attempt 2" in stack.agent_log(second)
    assert any(e.get("type") == "warning" and node in e.get("message", "") for e in stack.events(task_id))


def test_a_step_printing_200_kib_succeeds_with_its_output_capped(stack: Stack, tmp_path: Path) -> None:
    # GIVEN an agent
    node = stack.node_id("chatty")
    agent = stack.start_agent(node, stack.register(node), tmp_path / node)

    # WHEN its step prints 200 KiB (200 lines of 1 KiB)
    program = "import sys\nfor i in range(200):\n    sys.stdout.write(f'{i:06d} ' + 'y' * 1016 + '\\n')\n"
    task_id = stack.shell_task(node, [sys.executable, "-c", program])
    done = stack.wait_task(task_id)

    # THEN the run succeeds: the completion carried at most 64 KiB (no 413, no retry without output)
    assert done["status"] == "completed", stack.runs(task_id)
    assert stack.runs(task_id)[node]["status"] == "succeeded"
    assert "rejected" not in stack.agent_log(agent)


def test_the_demo_failure_switch_fails_only_the_chosen_node(stack: Stack, tmp_path: Path) -> None:
    # GIVEN two agents told (by environment) that one of the nodes must fail
    healthy, doomed = stack.node_id("healthy"), stack.node_id("doomed")
    for node in (healthy, doomed):
        stack.start_agent(node, stack.register(node), tmp_path / node, {"FLEETRUN_DEMO_FAIL_NODES": f"x,{doomed}"})

    # WHEN a config release targets both, allowing one failure
    parameters = {"website_id": 41, "origin_set_id": 14, "config_version": "v7"}
    task = stack.create_task({"type": "config.release", "target_nodes": [healthy, doomed],
                              "parameters": parameters, "max_errors": 1})
    done = stack.wait_task(task["task_id"])

    # THEN the chosen node failed with the demo message, the other applied the config
    assert done["status"] == "partial_failure"
    runs = stack.runs(task["task_id"])
    assert runs[healthy]["status"] == "succeeded"
    assert runs[doomed]["status"] == "failed"
    assert f"demo failure requested for {doomed}" in runs[doomed]["error_message"]
    assert (tmp_path / healthy / "sandbox" / "cdn" / "41" / "config-v7.json").is_file()
    assert not (tmp_path / doomed / "sandbox" / "cdn").exists()
