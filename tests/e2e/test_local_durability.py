"""The local runtime keeps what it acknowledged: across a `kill -9`, a clean restart, a torn journal,
and it refuses to start on a damaged snapshot (ARCHITECTURE.md invariant 10)."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import re
import stat
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetrun.client import Api
from tests.e2e.runtime_process import Processes, RuntimeProcess, clone_tasks
from tests.e2e.stack import TASK_TERMINAL
from tests.processes import process_alive
from tests.waiting import wait_for

#: a `slurm.scale_up` step that writes what it ran (attempt, step, the secret password it was
#: given) to its node's run log; the first step then takes DURABLE_FIRST_STEP_SECONDS
_STEP = """#!/usr/bin/env python3
import json, os, sys, time
parameters = json.load(sys.stdin)
log = os.path.join(os.environ["DURABLE_LOG_DIR"], os.environ["FLEETRUN_NODE"] + ".log")
with open(log, "a") as out:
    out.write(json.dumps({"attempt": os.environ["FLEETRUN_ATTEMPT"], "step": os.environ["FLEETRUN_STEP"],
                          "secret": parameters.get("password")}) + "\\n")
if os.environ["FLEETRUN_STEP"] == "deploy-minion":
    time.sleep(float(os.environ["DURABLE_FIRST_STEP_SECONDS"]))
"""
_STEPS = ("deploy-minion", "register-node", "slurm-scale")


@pytest.fixture
def processes() -> Iterator[Processes]:
    started = Processes()
    yield started
    started.close()


def _steps_dir(root: Path) -> Path:
    steps = root / "steps" / "slurm.scale_up"
    steps.mkdir(parents=True)
    for name in _STEPS:
        (steps / name).write_text(_STEP)
        (steps / name).chmod(0o755)
    return root / "steps"


def _statistics_recount(api: Api) -> dict[str, Any]:
    tasks = api.pages("/v1/tasks")
    runs = Counter(run["status"] for task in tasks for run in api.pages(f"/v1/tasks/{task['task_id']}/nodes"))
    return {"total_tasks": len(tasks), "by_status": Counter(task["status"] for task in tasks), "node_runs": runs}


@pytest.mark.slow
def test_a_killed_runtime_resumes_the_running_task_with_everything_it_acknowledged(
        tmp_path: Path, processes: Processes) -> None:
    # GIVEN a runtime with 3 agents running a 3-node task whose secret was sealed at creation
    runtime = RuntimeProcess(tmp_path / "data", processes, {"FLEETRUN_LEASE_SECONDS": "30"})
    runtime.start()
    admin = runtime.admin
    steps, logs = _steps_dir(tmp_path), tmp_path / "runs"
    logs.mkdir()
    nodes = [f"keep-{i}" for i in range(3)]
    tokens = {node: admin.post("/v1/nodes", {"node_id": node, "labels": {}})["token"] for node in nodes}
    agents = [runtime.start_agent(node, tokens[node], steps, tmp_path / "agents" / node,
                                  {"DURABLE_LOG_DIR": str(logs), "DURABLE_FIRST_STEP_SECONDS": "6"}) for node in nodes]
    parameters = {"ssh_user": "root", "salt_master": "salt-1", "partition": "gpu", "password": "s3cr3t"}
    body = {"type": "slurm.scale_up", "target_nodes": nodes, "parameters": parameters}
    task_id = admin.post("/v1/tasks", body, headers={"Idempotency-Key": "durable-1"})["task_id"]
    wait_for(lambda: all((logs / f"{n}.log").exists() for n in nodes), 30, "the first step on every node")

    # WHEN the runtime's process group is killed mid-step and started again
    runtime.kill()
    restart_seconds = runtime.start()

    # THEN the agents kept their runs; the task completes with each step once per attempt
    task = wait_for(lambda: (t := runtime.admin.get(f"/v1/tasks/{task_id}"))["status"] in TASK_TERMINAL and t,
                    60, "the task to finish after the restart", interval=0.3)
    assert task["status"] == "completed", (task, runtime.log()[-3000:])
    for node in nodes:
        ran = [json.loads(line) for line in (logs / f"{node}.log").read_text().splitlines()]
        per_attempt = Counter((entry["attempt"], entry["step"]) for entry in ran)
        assert set(per_attempt.values()) == {1}, (node, ran)
        assert {entry["step"] for entry in ran} == set(_STEPS)
        # the secret sealed before the kill reached the agent in its claim
        assert {entry["secret"] for entry in ran} == {"s3cr3t"}
    assert all(process_alive(agent.pid) for agent in agents), "an agent gave up during the restart"
    # an idempotency key acknowledged before the kill replays the same task
    status, replay, headers = runtime.admin.request("POST", "/v1/tasks", body, headers={"Idempotency-Key": "durable-1"})
    assert (status, replay["task_id"], headers.get("Idempotent-Replayed")) == (200, task_id, "true")
    # old node tokens still work
    assert Api(runtime.url, tokens[nodes[0]]).post(f"/v1/agents/{nodes[0]}/claim", {"max": 1}) == {"runs": []}
    # statistics equal a recount of what is stored once the stream has drained (the contract's "at rest")
    recount = _statistics_recount(runtime.admin)

    def counted() -> dict[str, Any]:
        statistics = runtime.admin.get("/v1/statistics")
        return {"total_tasks": statistics["total_tasks"],
                "by_status": {k: v for k, v in statistics["by_status"].items() if v},
                "node_runs": {k: v for k, v in statistics["node_runs"].items() if v}}
    expected = {"total_tasks": 1, "by_status": dict(recount["by_status"]), "node_runs": dict(recount["node_runs"])}
    assert recount["total_tasks"] == 1
    wait_for(lambda: counted() == expected, 30, "statistics to equal the recount", interval=0.3)
    print(f"healthy again {restart_seconds:.1f} s after the kill")


@pytest.mark.slow
def test_a_clean_restart_keeps_every_list_of_a_thousand_tasks(tmp_path: Path, processes: Processes) -> None:
    # GIVEN 30 tasks created at once (every answer arrives: no connection is reset), grown to
    # 1,000 tasks by cloning while the runtime is stopped
    runtime = RuntimeProcess(tmp_path / "data", processes, {"FLEETRUN_RATE_LIMIT": "100000"})
    runtime.start()
    runtime.admin.post("/v1/nodes", {"node_id": "idle-1", "labels": {"pool": "idle"}})

    def create(i: int) -> str:
        body = json.dumps({"type": "shell", "target_nodes": ["idle-1"], "parameters": {"command": ["true"]},
                           "tags": [f"batch-{i % 3}"]})
        connection = http.client.HTTPConnection("127.0.0.1", runtime.port, timeout=60)
        connection.request("POST", "/v1/tasks", body, {"Authorization": f"Bearer {runtime.admin_token}",
                                                        "Content-Type": "application/json"})
        answer = connection.getresponse()
        assert answer.status == 202, answer.read()
        task_id: str = json.loads(answer.read())["task_id"]
        connection.close()
        return task_id

    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        burst = list(pool.map(create, range(30)))  # a listen backlog of 5 reset some of these
    assert len(set(burst)) == 30
    wait_for(lambda: all(runtime.admin.pages(f"/v1/tasks/{t}/nodes") for t in burst), 60, "the runs of the burst")
    stop_seconds = runtime.stop()
    assert stop_seconds <= 5.0, f"stopping took {stop_seconds:.1f} s"
    clone_tasks(runtime.data_dir, 970)
    runtime.start()
    lists = ["/v1/tasks", "/v1/tasks?tag=batch-1", "/v1/tasks?status=pending", "/v1/nodes",
             f"/v1/tasks/{burst[0]}/nodes", f"/v1/tasks/{burst[0]}/events"]

    def read_all(api: Api) -> dict[str, Any]:
        # what was written, not what the sweeper may still move on (the clones were never dispatched)
        stable = ("task_id", "type", "owner", "tags", "created_at", "parameters", "target_nodes", "node", "event_id",
                  "message", "labels", "slots")
        seen: dict[str, Any] = {path: [{k: item.get(k) for k in stable} for item in api.pages(path)]
                                for path in lists}
        return seen

    before = read_all(runtime.admin)
    assert len(before["/v1/tasks"]) == 1000
    assert set(burst) <= {t["task_id"] for t in before["/v1/tasks"]}

    # WHEN it is stopped cleanly and started again
    runtime.stop()
    assert runtime.process is not None
    assert runtime.process.returncode == 0
    runtime.start()

    # THEN every list reads as before
    assert read_all(runtime.admin) == before
    assert stat.S_IMODE((runtime.data_dir / "admin.token").stat().st_mode) == 0o600


def test_a_torn_journal_tail_is_dropped_with_a_warning_and_the_rest_is_kept(
        tmp_path: Path, processes: Processes) -> None:
    # GIVEN a killed runtime whose journal ends in half a record (it died mid-write)
    runtime = RuntimeProcess(tmp_path / "data", processes)
    runtime.start()
    task_id = runtime.admin.post("/v1/tasks", {"type": "shell", "target_nodes": ["nowhere"],
                                               "parameters": {"command": ["true"]}})["task_id"]
    runtime.kill()
    journal = max((runtime.data_dir / "state").glob("journal-*.log"), key=lambda p: p.stat().st_mtime)
    with journal.open("ab") as out:
        out.write(b"\x40\x00\x00\x00\x01\x02\x03\x04half a record")

    # WHEN it starts again
    runtime.start()

    # THEN everything acknowledged is there, and the log says what was dropped
    assert runtime.admin.get(f"/v1/tasks/{task_id}")["task_id"] == task_id
    warning = re.search(r"ended in an incomplete record: 21 byte\(s\) after offset \d+", runtime.log())
    assert warning, runtime.log()[-3000:]
    assert list((runtime.data_dir / "state").glob("journal-*.log.torn-*"))


def test_a_damaged_snapshot_stops_the_start_and_changes_nothing(tmp_path: Path, processes: Processes) -> None:
    # GIVEN a stopped runtime whose snapshot was damaged
    runtime = RuntimeProcess(tmp_path / "data", processes)
    runtime.start()
    runtime.admin.post("/v1/nodes", {"node_id": "kept-1", "labels": {}})
    runtime.stop()
    state = runtime.data_dir / "state"
    snapshot = state / "snapshot.bin"
    damaged = bytearray(snapshot.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    snapshot.write_bytes(bytes(damaged))
    files_before = {p.name: p.read_bytes() for p in state.iterdir()}

    # WHEN it is started
    process = runtime.launch()
    process.wait(timeout=30)

    # THEN it refuses with a message naming the file and the way out; nothing was overwritten
    assert process.returncode != 0
    log = runtime.log()
    assert str(snapshot) in log, log[-2000:]
    assert "fleetrun local reset" in log
    assert {p.name: p.read_bytes() for p in state.iterdir()} == files_before
    assert not (runtime.data_dir / "endpoints.json").exists()  # it never served


def test_stopping_the_runtime_stops_demo_agents_and_their_steps_within_five_seconds(
        tmp_path: Path, processes: Processes) -> None:
    # GIVEN a runtime with a demo agent running a long step
    runtime = RuntimeProcess(tmp_path / "data", processes, {"FLEETRUN_DEMO_AGENTS": "1"})
    runtime.start()
    marker = f"{time.time_ns() % 10_000_000 + 30_000_000}"
    runtime.admin.post("/v1/tasks", {"type": "shell", "target_nodes": ["demo-1"],
                                     "parameters": {"command": ["sleep", marker]}})

    def sleeping() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if (entry / "cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", marker.encode()]:
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    steps = wait_for(sleeping, 30, "the demo step to start")
    token = (runtime.data_dir / "agents" / "demo-1" / "token").read_text().strip()
    agent_commands = [p.read_bytes() for p in Path("/proc").glob("[0-9]*/cmdline")
                      if _readable(p) and b"fleetrun" in p.read_bytes() and b"agent" in p.read_bytes()]
    assert agent_commands
    assert not any(token.encode() in command for command in agent_commands)
    assert stat.S_IMODE((runtime.data_dir / "agents" / "demo-1" / "token").stat().st_mode) == 0o600

    # WHEN it gets SIGTERM
    seconds = runtime.stop()

    # THEN everything stopped within 5 s, no step outlived it, and the URLs it had published
    # (it took free ports: FLEETRUN_PORT=0) are gone with it
    assert seconds <= 5.0, f"stopping took {seconds:.1f} s:\n{runtime.log()[-2000:]}"
    assert not [pid for pid in steps if process_alive(pid)]
    assert not (runtime.data_dir / "endpoints.json").exists()


def _readable(path: Path) -> bool:
    try:
        path.read_bytes()
    except OSError:
        return False
    return True

