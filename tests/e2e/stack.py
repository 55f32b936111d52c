"""The local runtime as a real process, for the end-to-end tests.

`running_stack` starts `fleetrun.local.runtime.up()` on free ports (no demo agents, 4 s leases,
a sweep every second, its data in a given directory) and yields a `Stack`: an admin API client,
node registration, agent processes (`python -m fleetrun.agent` with the demo steps) and waits.
Agents and the runtime are stopped when it ends. `fleetrun` runs the command as a user does.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fleetrun.client import Api
from tests.processes import clean_environment, die_with_parent, fidelity_environment, reap, stop
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
DEMO_STEPS = REPO / "fleetrun" / "agent" / "demo_steps"
LEASE_SECONDS = 4
SWEEP_SECONDS = 1
JWT_SECRET = "local-dev-secret"
TASK_TERMINAL = frozenset({"completed", "partial_failure", "failed", "cancelled", "discarded"})
_STARTUP_SECONDS = 30.0
#: the local runtime as the tests start it (`fleetrun local up` without the CLI around it)
RUNTIME_COMMAND = [sys.executable, "-c", "from fleetrun.local.runtime import up; raise SystemExit(up())"]


def fleetrun(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`python -m fleetrun <args>` in `env` (see `Stack.user_environment`), as a user runs it."""
    return subprocess.run([sys.executable, "-m", "fleetrun", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=REPO)


#: the first line of a record of the runtime's log (`[part] ...`; a traceback's lines follow it)
_RECORD_START = re.compile(r"^\[[\w.-]+\] ")
#: the faults the fidelity layer injects (fleetrun/local/fidelity), which the code retries
_INJECTED = ("ProvisionedThroughputExceeded", "ThrottlingException", "TransactionConflict")

#: werkzeug's access log line, as the runtime prefixes it
_ACCESS_LINE = re.compile(r'\[api\] \S+ - - \[[^]]+\] "')


@dataclass
class Stack:
    url: str
    admin_token: str
    data_dir: Path
    agents: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _counter: Iterator[int] = field(default_factory=itertools.count)

    def user_environment(self, config_dir: Path) -> dict[str, str]:
        """A user's environment for `fleetrun`: this stack's URL and the admin token, a config
        file of its own in `config_dir`."""
        return clean_environment(FLEETRUN_URL=self.url, FLEETRUN_TOKEN=self.admin_token,
                                 FLEETRUN_CONFIG=str(config_dir / "config.json"))

    # --- API ------------------------------------------------------------------------------
    def api(self, token: str | None = None) -> Api:
        return Api(self.url, token or self.admin_token, timeout=10)

    @property
    def admin(self) -> Api:
        return self.api(self.admin_token)

    def node_id(self, prefix: str = "node") -> str:
        """A node id no other test of the session uses."""
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    def register(self, node: str, labels: dict[str, str] | None = None, slots: int = 1) -> str:
        """Register `node`; returns its agent token."""
        answer = self.admin.post("/v1/nodes", {"node_id": node, "labels": labels or {}, "slots": slots})
        token: str = answer["token"]
        return token

    def create_task(self, body: dict[str, Any]) -> dict[str, Any]:
        task: dict[str, Any] = self.admin.post("/v1/tasks", body)
        return task

    def shell_task(self, node: str, command: list[str], **extra: Any) -> str:
        """Create a `shell` task running `command` on `node`; returns its id."""
        body = {"type": "shell", "target_nodes": [node], "parameters": {"command": command}, **extra}
        return str(self.create_task(body)["task_id"])

    def task(self, task_id: str) -> dict[str, Any]:
        task: dict[str, Any] = self.admin.get(f"/v1/tasks/{task_id}")
        return task

    def runs(self, task_id: str) -> dict[str, dict[str, Any]]:
        """The task's node runs by node."""
        return {run["node"]: run for run in self.admin.pages(f"/v1/tasks/{task_id}/nodes")}

    def events(self, task_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.admin.pages(f"/v1/tasks/{task_id}/events")
        return items

    def wait_task(self, task_id: str, statuses: Sequence[str] | frozenset[str] = TASK_TERMINAL,
                  timeout: float = 30.0) -> dict[str, Any]:
        """The task once its status is one of `statuses`."""
        last: dict[str, Any] = {}

        def probe() -> dict[str, Any] | None:
            last.update(self.task(task_id))
            return dict(last) if last["status"] in statuses else None

        try:
            return wait_for(probe, timeout, f"task {task_id} to reach {sorted(statuses)}", interval=0.2)
        except pytest.fail.Exception as failure:
            runs = [(r["node"], r["status"], r["attempt"], r["error_message"]) for r in self.runs(task_id).values()]
            raise pytest.fail.Exception(
                f"{failure.msg}; it is {last.get('status')} with node_counts {last.get('node_counts')}, runs {runs}"
            ) from None

    def wait_run(self, task_id: str, node: str, statuses: Sequence[str], timeout: float = 30.0,
                 attempt: int | None = None) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            run = self.runs(task_id).get(node)
            if run is None or run["status"] not in statuses:
                return None
            return run if attempt is None or run["attempt"] == attempt else None

        return wait_for(probe, timeout, f"run of {node} in {task_id} to reach {list(statuses)}", interval=0.2)

    # --- agents ---------------------------------------------------------------------------
    def start_agent(self, node: str, token: str, work_dir: Path, env_extra: dict[str, str] | None = None, *,
                    steps_dir: Path = DEMO_STEPS, slots: int = 1, grace: float = 2.0,
                    api_url: str | None = None) -> subprocess.Popen[bytes]:
        """`python -m fleetrun.agent` for `node` with the demo steps (1 slot, 0.2 s per demo step).
        Its log goes to `<data_dir>/logs/`; see `agent_log`."""
        command = [
            sys.executable, "-m", "fleetrun.agent", "--api", api_url or self.url, "--node", node,
            "--steps-dir", str(steps_dir), "--work-dir", str(work_dir),
            "--slots", str(slots), "--grace", str(grace), "--idle-poll-max", "1",
        ]
        # `#!/usr/bin/env python3` steps find this interpreter first (no pyenv shim: fast, same version)
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        # the token by environment, as a user should pass it: never in `ps` (API.md, Errors)
        env = clean_environment(**{"FLEETRUN_DEMO_STEP_SECONDS": "0.2", "PATH": path, "FLEETRUN_NODE_TOKEN": token,
                                   **(env_extra or {})})
        log_path = self.data_dir / "logs" / f"agent-{node}-{next(self._counter)}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                       start_new_session=True, preexec_fn=die_with_parent)
        process.log_path = log_path  # type: ignore[attr-defined]
        self.agents.append(process)
        return process

    def logged(self, message: str) -> list[dict[str, str]]:
        """The `key=value` fields of every line with `message` the runtime has logged so far (its
        handlers log what changes nothing in the table, such as a dispatch that waits). The
        runtime writes each service log record as `[part] LEVEL message key=value ...`."""
        line_of = re.compile(rf"^\[[^\]]+\] [A-Z]+ +{re.escape(message)}(?: (?P<fields>.*))?$")
        found = []
        for line in (self.data_dir / "runtime.log").read_text(errors="replace").splitlines():
            if (matched := line_of.match(line)) is not None:
                tokens = (matched.group("fields") or "").split()
                found.append(dict(token.split("=", 1) for token in tokens if "=" in token))
        return found

    @staticmethod
    def agent_log(process: subprocess.Popen[bytes]) -> str:
        path: Path = process.log_path  # type: ignore[attr-defined]
        return path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        """What a failed test shows of the runtime: its fidelity seed (to replay its injections)
        and the last `lines` lines of its log that are not HTTP access lines (a test's polling
        would fill them), each cut to 300 characters."""
        logged = (self.data_dir / "runtime.log").read_text(errors="replace").splitlines()
        told = [line[:300] for line in logged if not _ACCESS_LINE.match(line)][-lines:]
        seed = [line for line in logged[:40] if "] fidelity:" in line and line not in told]
        return "\n".join([*seed, "...", *told] if seed else told)

    def unexplained_errors(self) -> list[str]:
        """The first line of every ERROR record in the runtime's log that no fault the fidelity
        layer injects explains (a throttle, a conflict: retried by design). A consumer that
        raises on a replayed record, a push that fails on a valid item, a batch given up: none
        of those fail a test's own assertions, and each hides a bug."""
        records: list[list[str]] = []
        for line in (self.data_dir / "runtime.log").read_text(errors="replace").splitlines():
            if _RECORD_START.match(line) or not records:
                records.append([line])
            else:
                records[-1].append(line)
        return [record[0][:300] for record in records
                if "] ERROR " in record[0] and not any(fault in line for line in record for fault in _INJECTED)]

    def stop_agents(self) -> None:
        """SIGTERM every agent started so far (SIGKILL its process group after 10 s)."""
        for process in self.agents:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.agents:
            reap(process, timeout=10)
        self.agents.clear()


@contextlib.contextmanager
def running_stack(data_dir: Path, stack_env: dict[str, str]) -> Iterator[Stack]:
    """The local runtime on free ports with its data in `data_dir` and `stack_env` on top;
    its agents and the runtime are stopped on the way out."""
    from chalicelib.auth import mint_token

    env = clean_environment(
        FLEETRUN_PORT="0", FLEETRUN_MOTO_PORT="0", FLEETRUN_WS_PORT="0",
        FLEETRUN_DEMO_AGENTS="0", FLEETRUN_LEASE_SECONDS=str(LEASE_SECONDS),
        FLEETRUN_SWEEP_SECONDS=str(SWEEP_SECONDS), FLEETRUN_DATA_DIR=str(data_dir),
        FLEETRUN_JWT_SECRET=JWT_SECRET, **{**fidelity_environment(), **stack_env},
    )
    log_path = data_dir / "runtime.log"
    with log_path.open("wb") as log:
        runtime = subprocess.Popen(RUNTIME_COMMAND, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                   start_new_session=True, preexec_fn=die_with_parent)
    try:
        endpoints = wait_published(data_dir, runtime, log_path, _STARTUP_SECONDS)
        result = Stack(url=endpoints["api"], admin_token=mint_token("admin", ["admin"], JWT_SECRET),
                       data_dir=data_dir)
        yield result
        result.stop_agents()
    finally:
        stop(runtime, timeout=20)


def wait_published(data_dir: Path, runtime: subprocess.Popen[bytes], log_path: Path,
                   timeout: float) -> dict[str, str]:
    """The URLs `runtime` took, from the `endpoints.json` it writes into `data_dir` once its API
    answers (it is started with port 0: no port is chosen here that another process could take
    first)."""
    published = data_dir / "endpoints.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if runtime.poll() is not None:
            pytest.fail(f"the local runtime exited with {runtime.returncode}:\n{_tail(log_path)}")
        with contextlib.suppress(FileNotFoundError, ValueError):
            endpoints: dict[str, Any] = json.loads(published.read_text())
            if endpoints.get("pid") == runtime.pid:
                return {name: str(value) for name, value in endpoints.items()}
        time.sleep(0.1)
    pytest.fail(f"the local runtime was not serving within {timeout:g} s:\n{_tail(log_path)}")


def _tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-3000:] if log_path.exists() else "(no log)"
