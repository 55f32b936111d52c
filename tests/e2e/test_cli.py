"""The `fleetrun` command as a user runs it: a subprocess against the local runtime.

The runtime is the shared `stack` of conftest.py; node runs are executed by real agent
processes (`python -m fleetrun.agent`, demo steps: `shell/run` runs the command for real).
"""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.stack import Stack, fleetrun
from tests.processes import clean_environment, free_port

pytestmark = pytest.mark.e2e

OK_COMMAND = '--param=command=["sh","-c","echo hello from $FLEETRUN_NODE"]'
FAIL_COMMAND = '--param=command=["sh","-c","echo giving up; exit 3"]'


def fleetrun_all(commands: list[list[str]], env: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    """Independent commands at once (each is a process of its own anyway)."""
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        return list(pool.map(lambda args: fleetrun(*args, env=env), commands))


def agents(stack: Stack, tmp_path: Path, count: int) -> list[str]:
    """`count` fresh nodes, each with a running agent (stopped after the test by conftest)."""
    nodes = [stack.node_id("cli") for _ in range(count)]
    for node in nodes:
        stack.start_agent(node, stack.register(node), tmp_path / node)
    return nodes


# --- help and configuration ------------------------------------------------------------------
def test_group_help_lists_every_command_and_an_example(tmp_path: Path) -> None:
    done = fleetrun("--help", env=clean_environment(FLEETRUN_CONFIG=str(tmp_path / "none.json")))
    assert done.returncode == 0, done.stderr
    for command in ("login", "submit", "tasks", "show", "events", "watch", "cancel", "retry", "confirm",
                    "discard", "stats", "task-types", "nodes", "node", "agent", "local"):
        assert f"\n  {command} " in done.stdout
    assert "fleetrun submit slurm.scale_up -n demo-1 -n demo-2 --param ssh_user=root" in done.stdout


def test_submit_help_documents_its_options(tmp_path: Path) -> None:
    done = fleetrun("submit", "--help", env=clean_environment())
    assert done.returncode == 0, done.stderr
    for option in ("--node", "--nodes-file", "--param", "--params-file", "--idempotency-key", "--max-errors",
                   "--runner-node", "--watch", "--json"):
        assert option in done.stdout


def test_missing_configuration_says_how_to_log_in(tmp_path: Path) -> None:
    done = fleetrun("tasks", env=clean_environment(FLEETRUN_CONFIG=str(tmp_path / "none.json")))
    assert done.returncode == 2
    assert "fleetrun login --url URL --token TOKEN" in done.stderr


def test_unreachable_api_is_reported(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = fleetrun("tasks", env=clean_environment(FLEETRUN_URL=url, FLEETRUN_TOKEN="t",
                                                   FLEETRUN_CONFIG=str(tmp_path / "none.json")))
    assert done.returncode == 2
    assert f"cannot reach {url}" in done.stderr


def test_login_saves_the_config_and_refuses_a_wrong_token(stack: Stack, tmp_path: Path) -> None:
    # GIVEN no URL or token in the environment, only a config path
    config = tmp_path / "fleetrun" / "config.json"
    bare = clean_environment(FLEETRUN_CONFIG=str(config))
    # WHEN a wrong token logs in THEN nothing is saved
    wrong = fleetrun("login", "--url", stack.url, "--token", "not.a.token", env=bare)
    assert wrong.returncode == 1
    assert "unauthenticated" in wrong.stderr
    assert not config.exists()
    # WHEN the admin token logs in THEN the file holds both, readable by the owner only
    done = fleetrun("login", "--url", stack.url, "--token", stack.admin_token, env=bare)
    assert done.returncode == 0, done.stderr
    assert "as admin (roles: admin)" in done.stdout
    assert json.loads(config.read_text()) == {"url": stack.url, "token": stack.admin_token}
    assert config.stat().st_mode & 0o777 == 0o600
    # AND later commands use it
    listed = fleetrun("task-types", "--json", env=bare)
    assert listed.returncode == 0, listed.stderr
    assert "shell" in {t["name"] for t in json.loads(listed.stdout)["items"]}


# --- submit and watch ------------------------------------------------------------------------
def test_submit_json_prints_the_task_and_cancel_prints_the_new_status(stack: Stack, env: dict[str, str]) -> None:
    # GIVEN a node without an agent: the task stays in flight until it is cancelled
    node = stack.node_id("idle")
    done = fleetrun("submit", "shell", "-n", node, OK_COMMAND, "--tag", "e2e", "--max-errors", "50%",
                    "--priority", "7", "--json", env=env)
    assert done.returncode == 0, done.stderr
    task = json.loads(done.stdout)
    assert task["type"] == "shell"
    assert task["target_nodes"] == [node]
    assert task["tags"] == ["e2e"]
    assert task["max_errors"] == "50%"
    assert task["priority"] == 7
    assert task["parameters"] == {"command": ["sh", "-c", "echo hello from $FLEETRUN_NODE"]}
    cancelled = fleetrun("cancel", task["task_id"], env=env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() in (f"task {task['task_id']} cancelling", f"task {task['task_id']} cancelled")


def test_submit_watch_of_a_completing_task_exits_0(stack: Stack, env: dict[str, str], tmp_path: Path) -> None:
    nodes = agents(stack, tmp_path, 2)
    nodes_file = tmp_path / "nodes.txt"
    nodes_file.write_text(f"{nodes[0]}\n# a comment\n{nodes[1]}\n")
    done = fleetrun("submit", "shell", "--nodes-file", str(nodes_file), OK_COMMAND, "--name", "hello", "--watch",
                    env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    task_id = done.stdout.splitlines()[0]
    assert f"task {task_id} completed 100% (pending 0, running 0, succeeded 2, failed 0)" in done.stdout
    assert "task.created" in done.stdout
    assert "task.completed" in done.stdout
    assert done.stdout.rstrip().endswith(f"task {task_id} completed")
    # AND the event log of the finished task can be followed to its end, as JSON lines
    followed = fleetrun("events", task_id, "--follow", "--json", env=env)
    assert followed.returncode == 0, followed.stderr
    names = [json.loads(line).get("name") for line in followed.stdout.splitlines()]
    assert names[0] == "task.created"
    assert names[-1] == "task.completed"


def test_watch_of_a_failing_task_exits_1_and_retry_prints_pending(stack: Stack, env: dict[str, str],
                                                                   tmp_path: Path) -> None:
    [node] = agents(stack, tmp_path, 1)
    done = fleetrun("submit", "shell", "-n", node, FAIL_COMMAND, "--watch", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    task_id = done.stdout.splitlines()[0]
    assert f"task {task_id} failed" in done.stdout
    assert f"node {node} failed (attempt 1): " in done.stdout
    assert f"fleetrun retry {task_id}" in done.stdout
    retried = fleetrun("retry", task_id, env=env)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip() == f"task {task_id} pending (attempt 2)"
    # AND watching the retry ends the same way (the agent still runs: the command fails again)
    again = fleetrun("watch", task_id, env=env)
    assert again.returncode == 1, again.stdout + again.stderr
    assert f"node {node} failed (attempt 2): " in again.stdout


# --- reading ---------------------------------------------------------------------------------
def test_every_read_command_prints_json(stack: Stack, env: dict[str, str], tmp_path: Path) -> None:
    [node] = agents(stack, tmp_path, 1)
    tag = f"read-{time.time_ns()}"
    task_id = fleetrun("submit", "shell", "-n", node, OK_COMMAND, "--tag", tag, env=env).stdout.split()[0]
    stack.wait_task(task_id)
    commands = [["tasks", "--tag", tag], ["tasks", "--all-pages", "--limit", "2", "--type", "shell"],
                ["show", task_id], ["runs", task_id], ["stats"], ["stats", "--type", "shell"], ["task-types"],
                ["nodes"], ["node", "show", node], ["watch", task_id], ["events", task_id]]
    answers = fleetrun_all([[*args, "--json"] for args in commands], env)
    for args, done in zip(commands[:-1], answers[:-1], strict=True):
        assert done.returncode == 0, (args, done.stderr)
        assert isinstance(json.loads(done.stdout), dict), args
    assert [t["task_id"] for t in json.loads(answers[0].stdout)["items"]] == [task_id]
    events = [json.loads(line) for line in answers[-1].stdout.splitlines()]  # JSON Lines
    assert "task.completed" in [event.get("name") for event in events]


def test_tables_name_what_they_show(stack: Stack, env: dict[str, str]) -> None:
    node = stack.node_id("table")
    registered = fleetrun("node", "register", node, "--label", "pool=cli", env=env)
    assert registered.returncode == 0, registered.stderr
    assert f"fleetrun agent --api {stack.url} --node {node} --token frn." in registered.stdout
    task_id = fleetrun("submit", "shell", "-n", node, OK_COMMAND, "--name", "table", env=env).stdout.split()[0]
    tasks, show, stats, types, nodes = fleetrun_all(
        [["tasks"], ["show", task_id], ["stats"], ["task-types"], ["nodes"]], env)
    assert task_id in tasks.stdout
    assert "dispatch" in show.stdout
    assert "success rate" in stats.stdout
    assert "slurm.scale_up" in types.stdout
    assert "pool=cli" in nodes.stdout
    assert fleetrun("cancel", task_id, env=env).returncode == 0


def test_unknown_task_is_not_found(env: dict[str, str]) -> None:
    done = fleetrun("show", "01NOSUCHTASK0000000000000", env=env)
    assert done.returncode == 1
    assert done.stderr.startswith("error: not_found: ")


def test_a_wrong_transition_and_invalid_parameters_are_explained(env: dict[str, str]) -> None:
    done = fleetrun("submit", "shell", "-n", "nowhere", "--param", "command=uptime", env=env)
    assert done.returncode == 1
    assert "error: validation_error" in done.stderr
    assert "$.parameters.command: " in done.stderr
    unknown = fleetrun("submit", "no.such.type", "-n", "nowhere", env=env)
    assert unknown.returncode == 1
    assert "known types: " in unknown.stderr
    assert "slurm.scale_up" in unknown.stderr


def test_a_replayed_submit_prints_the_same_task_marked_replayed(stack: Stack, env: dict[str, str]) -> None:
    key, node = f"cli-{time.time_ns()}", stack.node_id("idle")
    first = fleetrun("submit", "shell", "-n", node, OK_COMMAND, "--idempotency-key", key, env=env)
    assert first.returncode == 0, first.stderr
    again = fleetrun("submit", "shell", "-n", node, OK_COMMAND, "--idempotency-key", key, env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"{first.stdout.strip()} (replayed)"
    assert fleetrun("cancel", first.stdout.strip(), env=env).returncode == 0
