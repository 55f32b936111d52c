"""No credential on a command line or in the stack's log: the local runtime as `make run` starts it
(its output to a file, as under nohup or a CI job), with one demo agent."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2e.runtime_process import Processes, RuntimeProcess
from tests.e2e.stack import TASK_TERMINAL
from tests.waiting import wait_for

#: a JWT-shaped token nobody issued
FORGED = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.Zm9yZ2VkLXNpZ25hdHVyZQ"


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    processes = Processes()
    started = RuntimeProcess(tmp_path_factory.mktemp("hygiene") / "data", processes, {"FLEETRUN_DEMO_AGENTS": "1"})
    started.start()
    yield started
    started.stop()
    processes.close()


def _admin_token(runtime: RuntimeProcess) -> str:
    """The runtime's own dev admin token (the one its banner is about), from its 0600 file."""
    path = runtime.data_dir / "admin.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return path.read_text().strip()


def _agent_command_lines(work_dir: Path) -> list[bytes]:
    """The command lines of the running agents whose work directory is `work_dir`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes()
        except OSError:  # ended meanwhile
            continue
        if b"agent" in command and str(work_dir).encode() + b"\0" in command:
            found.append(command)
    return found


def test_a_demo_agent_gets_its_token_without_it_on_its_command_line(runtime: RuntimeProcess) -> None:
    # GIVEN the demo agent the runtime started, and its token file
    work_dir = runtime.data_dir / "agents" / "demo-1"
    [command] = wait_for(lambda: _agent_command_lines(work_dir), 30, "the demo agent's process")
    token_file = work_dir / "token"
    # WHEN its command line is read, as `ps` shows it to every user
    # THEN the token is not on it, though the agent holds it: it claims work with it
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text().strip().encode() not in command
    task = runtime.admin.post("/v1/tasks", {"type": "shell", "target_nodes": ["demo-1"],
                                            "parameters": {"command": ["true"]}})
    done = wait_for(lambda: (t := runtime.admin.get(f"/v1/tasks/{task['task_id']}"))["status"] in TASK_TERMINAL
                    and t, 30, "the demo agent to run the task")
    assert done["status"] == "completed"


def test_the_stack_log_holds_no_token_even_from_requests_that_failed_over_one(runtime: RuntimeProcess) -> None:
    # GIVEN the runtime's own admin token, a node registered with its token, a forged token
    admin = _admin_token(runtime)
    node_token = runtime.admin.post("/v1/nodes", {"node_id": "hygiene-1", "labels": {}})["token"]
    demo_token = (runtime.data_dir / "agents" / "demo-1" / "token").read_text().strip()
    # WHEN requests fail over each of them: an unknown route, a forged token, a node token on a
    # user route, another node's route, a WebSocket with a forged token
    answers = []
    for path, token in (("/v1/no-such-route", admin), ("/v1/tasks", FORGED), ("/v1/tasks", node_token),
                        ("/v1/agents/demo-1/claim", node_token), (f"/v1/nodes/{demo_token}", admin)):
        answer = requests.post(f"{runtime.url}{path}", json={"max": 1}, timeout=10,
                               headers={"Authorization": f"Bearer {token}"})
        answers.append(answer)
        assert answer.status_code in (401, 403, 404, 405), (path, answer.status_code, answer.text)
        assert json.loads(answer.text)["error"]["code"]
    with pytest.raises(InvalidStatus), connect(f"ws://127.0.0.1:{runtime.ws_port}/?token={FORGED}", open_timeout=10):
        pass
    with connect(f"ws://127.0.0.1:{runtime.ws_port}/?token={admin}", open_timeout=10) as socket:
        socket.send(json.dumps({"action": "subscribe", "task_id": "*"}))
    # THEN the unknown route with a bearer token is a contract 404, not API Gateway's 403 echo
    assert (answers[0].status_code, answers[0].json()["error"]["code"]) == (404, "not_found")
    # AND no answer and no line of the stack's log carries any of the tokens
    log = runtime.log()
    assert "fleetrun is up" in log
    assert f"also in {runtime.data_dir / 'admin.token'}" in log  # where the banner's token is
    secrets = {"admin": admin, "node": node_token, "demo node": demo_token, "forged": FORGED}
    for answer in answers:
        assert not [name for name, secret in secrets.items() if secret in answer.text + str(answer.headers)]
    assert not [name for name, secret in secrets.items() if secret in log]
    assert "eyJ" not in log


def test_a_secret_an_agent_echoes_back_is_neither_in_the_stack_log_nor_in_any_answer(
        runtime: RuntimeProcess) -> None:
    # GIVEN a task whose password is secret, claimed by a node that echoes it every way it can
    secret = "S3cr3t-XYZZY-46"
    node_token = runtime.admin.post("/v1/nodes", {"node_id": "hygiene-echo", "labels": {}})["token"]
    task = runtime.admin.post("/v1/tasks", {
        "type": "slurm.scale_up", "target_nodes": ["hygiene-echo"],
        "parameters": {"ssh_user": "root", "salt_master": "salt-1", "partition": "gpu", "password": secret},
    })

    def agent(route: str, body: dict[str, Any]) -> Any:
        answer = requests.post(f"{runtime.url}{route}", json=body, timeout=10,
                               headers={"Authorization": f"Bearer {node_token}"})
        assert answer.status_code < 300, (route, answer.status_code, answer.text)
        return answer.json()

    [run] = wait_for(lambda: agent("/v1/agents/hygiene-echo/claim", {"max": 1})["runs"], 30, "the run to be claimable")
    assert secret in json.dumps(run["parameters"])  # the claim is the one answer that carries it
    attempt = {"attempt": run["attempt"]}
    route = f"/v1/runs/{run['run_id']}"
    # WHEN it sends the secret back in a step, an event's message, data key and nested value,
    # a failure message and the output
    agent(f"{route}/heartbeat", {**attempt, "progress": 10, "step": f"login with {secret}"})
    agent(f"{route}/events", {**attempt, "events": [{"type": "error", "step": "deploy-minion",
                                                     "message": f"sshpass -p {secret} refused",
                                                     "data": {secret: [{"cmd": f"-p{secret}"}]}}]})
    agent(f"{route}/complete", {**attempt, "status": "failed", "error_message": f"exit 255 ({secret})",
                                "output": f"+ sshpass -p {secret} ssh root@hygiene-echo\n"})
    done = wait_for(lambda: (t := runtime.admin.get(f"/v1/tasks/{task['task_id']}"))["status"] in TASK_TERMINAL
                    and t, 30, "the task to end")
    # THEN the task failed, and neither its answers nor the stack's log hold the secret
    assert done["status"] == "failed"
    answers = [runtime.admin.get(path) for path in (
        f"/v1/tasks/{task['task_id']}", f"/v1/tasks/{task['task_id']}/nodes", f"/v1/tasks/{task['task_id']}/events",
        "/v1/nodes/hygiene-echo", "/v1/tasks")]
    assert "***" in json.dumps(answers)
    assert secret not in json.dumps(answers)
    assert secret not in runtime.log()
