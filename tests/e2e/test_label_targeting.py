"""Label targeting through the local runtime with real agents (seed scenario 002): a release
submitted to a pool by `target_selector` reaches the pool's nodes, and a node that joins the
pool afterwards gets its run from `dispatch {"selector": true}` - only that node."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.e2e.stack import Stack, fleetrun

pytestmark = pytest.mark.e2e


def test_a_node_joining_the_pool_is_backfilled_by_the_selector_and_every_node_completes(
        stack: Stack, tmp_path: Path) -> None:
    # GIVEN three nodes of a pool, each with a running agent
    pool = {"pool": f"cdn-{uuid.uuid4().hex[:6]}"}
    first = [stack.node_id("cdn") for _ in range(3)]
    for node in first:
        stack.start_agent(node, stack.register(node, labels=pool), tmp_path / node)
    # WHEN a shell release is submitted to the pool; its runs hold until the gate opens
    gate = tmp_path / "gate"
    command = ["sh", "-c", f'while [ ! -e "{gate}" ]; do sleep 0.1; done; echo released']
    task = stack.create_task({"type": "shell", "target_selector": {"labels": pool},
                              "parameters": {"command": command}})
    # THEN its targets are exactly the pool's nodes, and the selector is kept on the task
    assert sorted(task["target_nodes"]) == sorted(first)
    assert task["target_selector"] == {"labels": pool}
    task_id = task["task_id"]
    for node in first:
        stack.wait_run(task_id, node, ["running"])
    # WHEN a fourth node joins the pool and the task is dispatched by its selector
    fourth = stack.node_id("cdn")
    stack.start_agent(fourth, stack.register(fourth, labels=pool), tmp_path / fourth)
    answer = stack.api().post(f"/v1/tasks/{task_id}/dispatch", {"selector": True})
    # THEN only the fourth gets a new run
    assert (answer["dispatch"]["created_count"], answer["dispatch"]["skipped_count"]) == (1, 3)
    listed = stack.admin.pages("/v1/nodes", label=f"pool:{pool['pool']}")
    assert sorted(n["node_id"] for n in listed) == sorted([*first, fourth])
    # AND the same dispatch from the CLI creates nothing more; the CLI lists the pool by label
    env = stack.user_environment(tmp_path)
    again = fleetrun("dispatch", task_id, "--selector", env=env)
    assert again.returncode == 0, again.stderr
    assert "created 0, skipped 4 of 4 node(s)" in again.stdout
    nodes = fleetrun("nodes", "--label", f"pool={pool['pool']}", "--json", env=env)
    assert sorted(n["node_id"] for n in json.loads(nodes.stdout)["items"]) == sorted([*first, fourth])
    # AND once the gate opens all four runs succeed and the task completes
    gate.touch()
    assert stack.wait_task(task_id, timeout=60)["status"] == "completed"
    runs = stack.runs(task_id)
    assert sorted(runs) == sorted([*first, fourth])
    assert {run["status"] for run in runs.values()} == {"succeeded"}
