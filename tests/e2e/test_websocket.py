"""Real time through the local runtime: a real WebSocket client on the runtime's gateway, a
real agent process, and the `fleetrun` command following tasks live."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from chalicelib import clock
from tests.e2e.stack import JWT_SECRET, TASK_TERMINAL, Stack, fleetrun
from tests.processes import free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

#: a write reaches its subscribers within a second in local mode (API.md "Real time")
PUSH_SECONDS = 1.0


def _ws_url(stack: Stack) -> str:
    url = stack.admin.get("/v1/health")["websocket_url"]
    assert url.startswith("ws://127.0.0.1:")
    return str(url)


@contextmanager
def _subscribe(stack: Stack, topic: str, token: str | None = None) -> Iterator[ClientConnection]:
    with connect(f"{_ws_url(stack)}/?token={token or stack.admin_token}", open_timeout=10) as socket:
        socket.send(json.dumps({"action": "subscribe", "task_id": topic}))
        assert json.loads(socket.recv(timeout=10))["type"] == "subscribed"
        yield socket


def _about(message: dict[str, Any]) -> str | None:
    """The task a pushed message is about."""
    about = message.get("task_id") or message.get("task", {}).get("task_id")
    return str(about) if about else None


def _until_about(socket: ClientConnection, task_id: str, timeout: float = 30) -> list[dict[str, Any]]:
    """Every message received up to and including the first one about `task_id`."""
    received: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        received.append(json.loads(socket.recv(timeout=max(0.1, deadline - time.monotonic()))))
        if _about(received[-1]) == task_id:
            return received
    pytest.fail(f"no message about {task_id} within {timeout} s: {received}")


def _until_terminal(socket: ClientConnection, task_id: str, timeout: float = 60) -> list[tuple[float, dict[str, Any]]]:
    """(arrival time, message) of everything about `task_id` until its terminal task message."""
    received: list[tuple[float, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = json.loads(socket.recv(timeout=max(0.1, deadline - time.monotonic())))
        if _about(message) != task_id:
            continue
        received.append((time.time(), message))
        if message["type"] == "task" and message["task"]["status"] in TASK_TERMINAL:
            return received
    pytest.fail(f"no terminal task message for {task_id} within {timeout} s: {[m for _, m in received]}")


def _events_until(socket: ClientConnection, task_id: str, wanted: set[str], seen: set[str],
                  timeout: float = 10) -> list[tuple[float, dict[str, Any]]]:
    """(arrival time, message) of the event messages about `task_id` until every id of `wanted`
    has been seen (or the timeout passes: the caller's assertion then says what is missing)."""
    received: list[tuple[float, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    while not wanted <= seen and time.monotonic() < deadline:
        try:
            message = json.loads(socket.recv(timeout=max(0.1, deadline - time.monotonic())))
        except TimeoutError:
            break
        if _about(message) == task_id and message["type"] == "event":
            received.append((time.time(), message))
            seen.add(message["event"]["event_id"])
    return received


def test_a_bad_token_cannot_connect(stack: Stack) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{_ws_url(stack)}/?token=forged", open_timeout=10)
    assert refused.value.response.status_code == 401


def test_a_subscriber_hears_every_change_of_a_real_run_within_a_second_of_its_write(stack: Stack,
                                                                                   tmp_path: Path) -> None:
    # GIVEN an agent, and a subscriber to every task
    node = stack.node_id("ws")
    stack.start_agent(node, stack.register(node), tmp_path / node)
    with _subscribe(stack, "*") as socket:
        # WHEN a task runs on the agent, reporting progress on the way
        script = "echo ::progress 30 warming up; sleep 1.5; echo ::progress 80 nearly; sleep 1.5"
        task_id = stack.shell_task(node, ["sh", "-c", script])
        created_at = time.time()  # the API answers once the task is written
        received = _until_terminal(socket, task_id)
        # events are items of their own: the stream may bring the last ones after the task's end
        logged = stack.events(task_id)
        received += _events_until(socket, task_id, {e["event_id"] for e in logged},
                                  {m["event"]["event_id"] for _, m in received if m["type"] == "event"})
    # THEN the task messages walk through its statuses to completed, each status change within a
    # second of the write that made it (every status write sets updated_at), ending in the state
    # GET /v1/tasks/{id} shows
    tasks = [(at, m["task"]) for at, m in received if m["type"] == "task"]
    statuses = [t["status"] for _, t in tasks]
    assert statuses[0] == "pending"
    assert "running" in statuses
    assert statuses[-1] == "completed"
    # (a later write that changes nothing shown, such as the statistics' last count, moves only
    # the revision, and is not pushed)
    final = stack.task(task_id)
    assert {**tasks[-1][1], "revision": final["revision"]} == final
    assert tasks[-1][1]["revision"] <= final["revision"]
    progress = [t["progress"] for _, t in tasks]
    assert progress == sorted(progress)
    assert len(set(progress)) >= 3  # 0, something on the way, 100
    assert tasks[0][0] - created_at < PUSH_SECONDS
    for (_, before), (at, task) in itertools.pairwise(tasks):
        if task["status"] != before["status"]:  # a status write sets updated_at just before it writes
            lag = at - clock.parse_rfc3339(task["updated_at"])
            assert lag < PUSH_SECONDS, f"{task['status']} arrived {lag:.2f} s after its write"
    # AND every event of the log was pushed, in the log's representation (a replayed stream batch
    # may push one again: clients tell events apart by id)
    pushed = {m["event"]["event_id"]: m["event"] for _, m in received if m["type"] == "event"}
    assert sorted(pushed.values(), key=lambda e: e["event_id"]) == logged


def test_a_viewer_sees_only_own_tasks_on_star(stack: Stack) -> None:
    from chalicelib.auth import mint_token

    # GIVEN vera subscribed to every task as a viewer, and an admin too
    viewer = mint_token("vera", ["viewer"], JWT_SECRET)
    with _subscribe(stack, "*", viewer) as socket, _subscribe(stack, "*") as admin_socket:
        # WHEN the admin creates a task, and its push has gone out (the admin heard it) ...
        admins = stack.shell_task(stack.node_id("nobody"), ["true"])
        _until_about(admin_socket, admins)
        # ... and then vera creates one
        body = {"type": "shell", "target_nodes": [stack.node_id("nobody")], "parameters": {"command": ["true"]}}
        veras = stack.api(mint_token("vera", ["operator"], JWT_SECRET)).post("/v1/tasks", body)["task_id"]
        # THEN the first thing vera hears of is her own task: nothing about the admin's came before it
        assert [_about(message) for message in _until_about(socket, veras)] == [veras]


# --- the fleetrun command ---------------------------------------------------------------------
def _fleetrun(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return fleetrun(*args, env=env, timeout=60)


def test_submit_watch_follows_pushes_when_the_api_advertises_a_websocket(stack: Stack, env: dict[str, str],
                                                                         tmp_path: Path) -> None:
    node = stack.node_id("watch")
    stack.start_agent(node, stack.register(node), tmp_path / node)
    done = _fleetrun("submit", "shell", "-n", node, '--param=command=["sh","-c","sleep 1"]', "--watch", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"following live over {_ws_url(stack)}" in done.stderr
    task_id = done.stdout.splitlines()[0]
    assert f"task {task_id} completed 100% (pending 0, running 0, succeeded 1, failed 0)" in done.stdout
    assert "task.completed" in done.stdout
    assert done.stdout.rstrip().endswith(f"task {task_id} completed")


def test_watch_polls_when_the_websocket_is_unreachable(stack: Stack, env: dict[str, str], tmp_path: Path) -> None:
    node = stack.node_id("poll")
    stack.start_agent(node, stack.register(node), tmp_path / node)
    dead = f"ws://127.0.0.1:{free_port()}"
    done = _fleetrun("submit", "shell", "-n", node, '--param=command=["true"]', "--watch",
                     env={**env, "FLEETRUN_WS_URL": dead})
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"WebSocket {dead} unavailable" in done.stderr
    assert "polling every second" in done.stderr
    assert done.stdout.rstrip().endswith("completed")


def test_events_follow_prints_pushed_events_until_the_task_ends(stack: Stack, env: dict[str, str],
                                                                tmp_path: Path) -> None:
    # GIVEN a task that takes a few seconds, with events on the way
    node = stack.node_id("follow")
    script = "echo ::event info run one; sleep 1; echo ::event info run two; sleep 1"
    task_id = stack.shell_task(node, ["sh", "-c", script])
    # WHEN its log is followed from the start (the follower has subscribed before the task runs)
    stderr_path = tmp_path / "follow.stderr"
    with stderr_path.open("w") as stderr:
        follower = subprocess.Popen([sys.executable, "-m", "fleetrun", "events", task_id, "--follow", "--json"],
                                    env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        wait_for(lambda: "following live over" in stderr_path.read_text(), 30, "the follower to subscribe")
        stack.start_agent(node, stack.register(node), tmp_path / node)
        out, _ = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    # THEN it printed the whole log, each event once, and stopped when the task completed
    assert follower.returncode == 0, stderr_path.read_text()
    printed = [json.loads(line) for line in out.splitlines()]
    assert printed == stack.events(task_id)
    assert [e["message"] for e in printed if e["message"] in ("one", "two")] == ["one", "two"]
    assert printed[-1]["name"] == "task.completed"
