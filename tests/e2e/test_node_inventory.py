"""Node inventory through the local runtime: real agent processes run the demo reclaim steps
in their sandbox; allocations survive agent restarts; the CLI drives it all."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Stack, clean_environment, wait_for

pytestmark = pytest.mark.e2e


def fleetrun(stack: Stack, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_environment(FLEETRUN_URL=stack.url, FLEETRUN_TOKEN=stack.admin_token,
                            FLEETRUN_CONFIG=str(tmp_path / "config.json"))
    return subprocess.run([sys.executable, "-m", "fleetrun", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def node(stack: Stack, node_id: str) -> dict[str, Any]:
    found: dict[str, Any] = stack.admin.get(f"/v1/nodes/{node_id}")
    return found


def a_used_machine(sandbox: Path, user: str) -> None:
    """What `user` leaves on a machine: a process, files in the home, a container, an SSH key."""
    (sandbox / "proc" / user).mkdir(parents=True)
    (sandbox / "proc" / user / "train.pid").write_text("4242\n")
    (sandbox / "home" / user / ".ssh").mkdir(parents=True)
    (sandbox / "home" / user / ".ssh" / "authorized_keys").write_text(f"ssh-ed25519 AAAA {user}\n")
    (sandbox / "home" / user / "notebook.ipynb").write_text("{}")
    (sandbox / "containers").mkdir(parents=True)
    (sandbox / "containers" / "jupyter.json").write_text(json.dumps({"user": user}))


def test_an_allocation_survives_restarts_of_the_nodes_agent(stack: Stack, tmp_path: Path) -> None:
    # GIVEN a node with a running agent, allocated to bob
    node_id = stack.node_id("alloc")
    token = stack.register(node_id)
    stack.start_agent(node_id, token, tmp_path / node_id)
    wait_for(lambda: node(stack, node_id)["last_seen_at"], 20, "the agent's first contact")
    allocated = stack.admin.post(f"/v1/nodes/{node_id}/allocate", {"user": "bob"})["allocation"]
    # WHEN the agent process is stopped and started again, and does work
    stack.stop_agents()
    stack.start_agent(node_id, token, tmp_path / node_id)
    task_id = stack.shell_task(node_id, ["true"])
    assert stack.wait_task(task_id)["status"] == "completed"
    # THEN the node is still allocated to bob with the very same, still open, allocation
    after = node(stack, node_id)
    assert after["status"] == "allocated"
    assert after["allocation"] == {"allocation_id": allocated["allocation_id"], "user": "bob",
                                   "started_at": allocated["started_at"]}
    history = stack.admin.pages(f"/v1/nodes/{node_id}/allocations")
    assert [(a["allocation_id"], a["ended_at"]) for a in history] == [(allocated["allocation_id"], None)]


def test_reclaim_cleans_the_machine_and_returns_it_to_idle(stack: Stack, tmp_path: Path) -> None:
    # GIVEN a node allocated to carol, who left processes, files, a container and a key behind
    node_id = stack.node_id("reclaim")
    work_dir = tmp_path / node_id
    a_used_machine(work_dir / "sandbox", "carol")
    stack.start_agent(node_id, stack.register(node_id), work_dir)
    assert fleetrun(stack, tmp_path, "node", "allocate", node_id, "--user", "carol").returncode == 0
    # WHEN an admin reclaims it with the CLI and follows the task
    done = fleetrun(stack, tmp_path, "node", "reclaim", node_id, "--watch")
    # THEN the task completed, the node is idle and carol's traces are gone from the sandbox
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"node {node_id} is idle: reclaimed" in done.stdout
    sandbox = work_dir / "sandbox"
    assert list((sandbox / "proc" / "carol").iterdir()) == []
    assert [p.name for p in (sandbox / "home" / "carol").iterdir()] == [".ssh"]
    assert (sandbox / "home" / "carol" / ".ssh" / "authorized_keys").read_text() == ""
    assert list((sandbox / "containers").iterdir()) == []
    assert node(stack, node_id)["status"] == "idle"
    allocations = fleetrun(stack, tmp_path, "node", "allocations", node_id, "--json")
    assert [a["ended_by"] for a in json.loads(allocations.stdout)["items"]] == ["reclaim"]


def test_a_failed_reclaim_keeps_the_node_in_maintenance_until_a_reclaim_succeeds(stack: Stack, tmp_path: Path) -> None:
    # GIVEN a node whose demo steps are told to fail (the fail-nodes file of the README tour)
    node_id = stack.node_id("broken")
    work_dir = tmp_path / node_id
    (work_dir / "sandbox").mkdir(parents=True)
    (work_dir / "sandbox" / "fail-nodes").write_text(f"{node_id}\n")
    stack.start_agent(node_id, stack.register(node_id), work_dir)
    # WHEN it is reclaimed
    done = fleetrun(stack, tmp_path, "node", "reclaim", node_id, "--user", "dave", "--watch")
    # THEN the reclaim failed, the node stays in maintenance and the task says why
    assert done.returncode == 1, done.stdout + done.stderr
    failed = node(stack, node_id)
    assert failed["status"] == "maintenance" and failed["reclaim"]["outcome"] == "failed"
    task_id = failed["reclaim"]["task_id"]
    assert stack.task(task_id)["status"] == "failed"
    failure = wait_for(lambda: [e for e in stack.events(task_id) if e.get("name") == "node.reclaim_failed"], 10,
                       "the node.reclaim_failed event")
    assert failure[0]["type"] == "error"
    # AND its other work waits while it is in maintenance
    waiting = stack.shell_task(node_id, ["true"])
    time.sleep(2)  # the agent polls every second or so
    assert stack.runs(waiting)[node_id]["status"] == "pending"
    # WHEN the machine is fixed and reclaimed again (for the same user by default)
    (work_dir / "sandbox" / "fail-nodes").unlink()
    again = fleetrun(stack, tmp_path, "node", "reclaim", node_id, "--watch")
    # THEN the node is idle and the waiting work runs
    assert again.returncode == 0, again.stdout + again.stderr
    assert node(stack, node_id)["status"] == "idle"
    assert stack.wait_task(waiting)["status"] == "completed"
    listing = fleetrun(stack, tmp_path, "nodes")
    assert node_id in listing.stdout
