"""Node inventory through the local runtime: real agent processes run the demo reclaim steps
in their sandbox; allocations survive agent restarts; the CLI drives it all."""

from __future__ import annotations

import csv
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from openpyxl import load_workbook

from tests.e2e.stack import Stack, fleetrun
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def cli(stack: Stack, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return fleetrun(*args, env=stack.user_environment(tmp_path), timeout=60)


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
    assert cli(stack, tmp_path, "node", "allocate", node_id, "--user", "carol").returncode == 0
    # WHEN an admin reclaims it with the CLI and follows the task
    done = cli(stack, tmp_path, "node", "reclaim", node_id, "--watch")
    # THEN the task completed, the node is idle and carol's traces are gone from the sandbox
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"node {node_id} is idle: reclaimed" in done.stdout
    sandbox = work_dir / "sandbox"
    assert list((sandbox / "proc" / "carol").iterdir()) == []
    assert [p.name for p in (sandbox / "home" / "carol").iterdir()] == [".ssh"]
    assert (sandbox / "home" / "carol" / ".ssh" / "authorized_keys").read_text() == ""
    assert list((sandbox / "containers").iterdir()) == []
    assert node(stack, node_id)["status"] == "idle"
    allocations = cli(stack, tmp_path, "node", "allocations", node_id, "--json")
    assert [a["ended_by"] for a in json.loads(allocations.stdout)["items"]] == ["reclaim"]


def test_a_failed_reclaim_keeps_the_node_in_maintenance_until_a_reclaim_succeeds(stack: Stack, tmp_path: Path) -> None:
    # GIVEN a node whose demo steps are told to fail (the fail-nodes file of the README tour)
    node_id = stack.node_id("broken")
    work_dir = tmp_path / node_id
    (work_dir / "sandbox").mkdir(parents=True)
    (work_dir / "sandbox" / "fail-nodes").write_text(f"{node_id}\n")
    stack.start_agent(node_id, stack.register(node_id), work_dir)
    # WHEN it is reclaimed
    done = cli(stack, tmp_path, "node", "reclaim", node_id, "--user", "dave", "--watch")
    # THEN the reclaim failed, the node stays in maintenance and the task says why
    assert done.returncode == 1, done.stdout + done.stderr
    failed = node(stack, node_id)
    assert failed["status"] == "maintenance"
    assert failed["reclaim"]["outcome"] == "failed"
    task_id = failed["reclaim"]["task_id"]
    assert stack.task(task_id)["status"] == "failed"
    failure = wait_for(lambda: [e for e in stack.events(task_id) if e.get("name") == "node.reclaim_failed"], 10,
                       "the node.reclaim_failed event")
    assert failure[0]["type"] == "error"
    # AND its other work waits while it is in maintenance: a claimable run, ahead of the next
    # reclaim in the node's claim order (same priority, older task) ...
    waiting = stack.shell_task(node_id, ["true"], priority=10)
    stack.wait_task(waiting, ["running"])
    stack.wait_run(waiting, node_id, ["pending"])
    # ... is passed over by the agent, which claims and runs that later reclaim (failing again)
    retried = cli(stack, tmp_path, "node", "reclaim", node_id, "--watch")
    assert retried.returncode == 1, retried.stdout + retried.stderr
    assert node(stack, node_id)["reclaim"]["task_id"] != task_id
    assert stack.runs(waiting)[node_id]["status"] == "pending"
    # WHEN the machine is fixed and reclaimed again (for the same user by default)
    (work_dir / "sandbox" / "fail-nodes").unlink()
    again = cli(stack, tmp_path, "node", "reclaim", node_id, "--watch")
    # THEN the node is idle and the waiting work runs
    assert again.returncode == 0, again.stdout + again.stderr
    assert node(stack, node_id)["status"] == "idle"
    assert stack.wait_task(waiting)["status"] == "completed"
    listing = cli(stack, tmp_path, "nodes")
    assert node_id in listing.stdout


def test_the_usage_report_downloads_and_equals_a_recount(stack: Stack, tmp_path: Path) -> None:
    # GIVEN a user who had a node for a while this month, and the admin's tasks of this month
    user = f"u{uuid.uuid4().hex[:8]}"
    node_id = stack.node_id("report")
    stack.register(node_id)
    stack.admin.post(f"/v1/nodes/{node_id}/allocate", {"user": user})
    closed = stack.admin.post(f"/v1/nodes/{node_id}/release")["allocation"]
    stack.shell_task(node_id, ["true"])
    month = closed["started_at"][:7]
    xlsx_path, csv_path = tmp_path / "usage.xlsx", tmp_path / "usage.csv"

    def downloaded() -> tuple[list[list[Any]], dict[str, dict[str, str]]] | None:
        """Both files, once their admin task count equals a recount over the API (the stream
        counts a task within seconds: README "Usage reports")."""
        for fmt, path in (("xlsx", xlsx_path), ("csv", csv_path)):
            done = cli(stack, tmp_path, "report", "usage", "--month", month, "--format", fmt, "-o", str(path))
            assert done.returncode == 0, done.stdout + done.stderr
        recounted = len(stack.admin.pages("/v1/tasks", owner="admin", created_after=f"{month}-01T00:00:00.000Z"))
        _, *rows = [list(r) for r in load_workbook(xlsx_path)["Usage"].iter_rows(values_only=True)]
        from_csv = {r["user"]: r for r in csv.DictReader(csv_path.open()) if r["kind"] == "user"}
        in_xlsx = [r[6] for r in rows if r[1] == "user" and r[2] == "admin"] or [0]
        in_csv = int(from_csv.get("admin", {}).get("tasks", 0))
        return (rows, from_csv) if in_xlsx == [in_csv] == [recounted] else None

    # WHEN the admin downloads this month's report in both formats with the CLI
    # THEN the files open with openpyxl and csv, and their figures equal a recount over the API
    rows, from_csv = wait_for(downloaded, 30, "the report's admin tasks to equal a recount")
    by_user = {r[2]: r for r in rows if r[1] == "user"}
    assert by_user[user][4:] == [1, closed["hours"], 0]
    assert (from_csv[user]["allocations"], float(from_csv[user]["allocated_hours"])) == ("1", closed["hours"])
    [total] = [r for r in rows if r[1] == "total"]
    assert total[6] == sum(r[6] for r in by_user.values())
    assert total[4] == sum(r[4] for r in by_user.values())


def test_the_report_route_redirects_to_a_presigned_url_that_serves_the_file(stack: Stack) -> None:
    # WHEN the route is called over HTTP without following the redirect
    answer = requests.get(f"{stack.url}/v1/reports/usage", params={"month": "2021-01", "format": "csv"},
                          headers={"Authorization": f"Bearer {stack.admin_token}"}, allow_redirects=False, timeout=30)
    # THEN it is a 303 to a presigned URL that serves the (empty) report without fleetrun credentials
    assert answer.status_code == 303
    assert answer.headers["Location"] == answer.json()["url"]
    file = requests.get(answer.headers["Location"], timeout=30)
    assert file.status_code == 200
    assert file.headers["Content-Type"].startswith("text/csv")
    assert "fleetrun-usage-2021-01.csv" in file.headers["Content-Disposition"]
    assert file.text.splitlines()[-1] == "2021-01,total,,,0,0.0,0"
    # AND a client that follows redirects gets the file at once
    followed = requests.get(f"{stack.url}/v1/reports/usage", params={"month": "2021-01", "format": "xlsx"},
                            headers={"Authorization": f"Bearer {stack.admin_token}"}, timeout=30)
    assert followed.status_code == 200
    assert followed.content[:2] == b"PK"


def test_an_agent_exits_with_a_clear_message_when_its_token_is_rotated_and_when_its_node_is_deregistered(
        stack: Stack, tmp_path: Path) -> None:
    # GIVEN a node's agent running a 5 s step
    node_id = stack.node_id("rotated")
    first = stack.start_agent(node_id, stack.register(node_id), tmp_path / "first")
    task_id = stack.shell_task(node_id, ["sleep", "5"])
    stack.wait_run(task_id, node_id, ["running"], timeout=20, attempt=1)
    # WHEN an admin rotates the node's token with the CLI
    rotated = cli(stack, tmp_path, "node", "rotate-token", node_id)
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    [new_token] = [line.strip() for line in rotated.stdout.splitlines() if line.strip().startswith("frn.")]
    # THEN the agent stops at its next request, exits non-zero and says why in one line
    wait_for(lambda: first.poll() is not None, 20, "the agent with the old token to exit")
    assert first.returncode == 3
    assert (f"node {node_id}: its token was revoked or rotated (401); register it again or give the agent "
            "the new token") in stack.agent_log(first)
    # AND an agent with the new token finishes the node's work (the run is offered again once its lease lapsed)
    second = stack.start_agent(node_id, new_token, tmp_path / "second")
    assert stack.wait_task(task_id, timeout=40)["status"] == "completed"
    assert "claimed attempt 2" in stack.agent_log(second)
    # WHEN the node's labels change, and it is deregistered, with the CLI
    updated = cli(stack, tmp_path, "node", "update", node_id, "--label", "pool=cdn", "--slots", "2")
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert f"node {node_id} is idle: labels pool=cdn; 2 slot(s)" in updated.stdout
    gone = cli(stack, tmp_path, "node", "deregister", node_id, "--yes")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert f"node {node_id} deregistered: its runs in " in gone.stdout
    # THEN its agent stops the same way
    wait_for(lambda: second.poll() is not None, 20, "the agent of the deregistered node to exit")
    assert second.returncode == 3
