"""The local runtime as a process a test starts, kills (`kill -9`) and starts again on one data directory.

Every process started here dies with the test run, even a killed one: the runtime and the agents
get SIGKILL from the kernel when the pytest process goes (PR_SET_PDEATHSIG), and `Processes.close`
kills their process groups at teardown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chalicelib.auth import mint_token
from fleetrun.client import Api
from tests.e2e.stack import JWT_SECRET, REPO, RUNTIME_COMMAND, wait_published
from tests.processes import clean_environment, die_with_parent, fidelity_environment

_STARTUP_SECONDS = 40.0


@dataclass
class Processes:
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, command: list[str], env: dict[str, str], log_path: Path,
              cwd: Path = REPO) -> subprocess.Popen[bytes]:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                       start_new_session=True, preexec_fn=die_with_parent)
        self.started.append(process)
        return process

    def close(self) -> None:
        for process in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class RuntimeProcess:
    """`fleetrun.local.runtime.up()` on one data directory: the first start takes free ports
    (port 0), a restart the same ones again (agents started before it find it there)."""

    data_dir: Path
    processes: Processes
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    moto_port: int = 0
    ws_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    admin_token: str = ""
    #: the checkout whose runtime runs (a bench compares against an older one)
    repo: Path = REPO

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}-runtime.log"

    @property
    def admin(self) -> Api:
        return Api(self.url, self.admin_token, timeout=20)

    def launch(self) -> subprocess.Popen[bytes]:
        env = clean_environment(**{
            "FLEETRUN_PORT": str(self.port), "FLEETRUN_MOTO_PORT": str(self.moto_port),
            "FLEETRUN_WS_PORT": str(self.ws_port), "FLEETRUN_DEMO_AGENTS": "0", "FLEETRUN_SWEEP_SECONDS": "1",
            "FLEETRUN_DATA_DIR": str(self.data_dir), "FLEETRUN_JWT_SECRET": JWT_SECRET,
            **fidelity_environment(), **self.extra_env,
        })
        self.process = self.processes.start(RUNTIME_COMMAND, env, self.log_path, cwd=self.repo)
        return self.process

    def start(self) -> float:
        """Start and wait until it serves; the seconds it took."""
        started = time.monotonic()
        endpoints = wait_published(self.data_dir, self.launch(), self.log_path, _STARTUP_SECONDS)
        self.port, self.ws_port, self.moto_port = (int(endpoints[name].rsplit(":", 1)[1])
                                                   for name in ("api", "ws", "moto"))
        self.admin_token = mint_token("admin", ["admin"], JWT_SECRET)
        return time.monotonic() - started

    def kill(self) -> None:
        """`kill -9` of the runtime's whole process group."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> float:
        """SIGTERM; the seconds until the process exited."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        return time.monotonic() - started

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start_agent(self, node: str, token: str, steps_dir: Path, work_dir: Path,
                    env_extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """An agent with its token in the environment (not on its command line)."""
        command = [sys.executable, "-m", "fleetrun.agent", "--api", self.url, "--node", node,
                   "--steps-dir", str(steps_dir), "--work-dir", str(work_dir), "--grace", "2",
                   "--idle-poll-max", "1"]
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        env = clean_environment(FLEETRUN_NODE_TOKEN=token, PATH=path, **(env_extra or {}))
        return self.processes.start(command, env, work_dir.parent / f"agent-{node}.log")


def clone_tasks(data: Path, tasks: int) -> None:
    """Add `tasks` copies of one of a stopped runtime's tasks (with its runs and events) straight
    into the stand-in's table, without stream records, and snapshot: history made cheaply."""
    from moto.backends import get_backend

    from fleetrun.local import durable, moto_fixes

    moto_fixes.apply()
    store = durable.Store(data / "state")
    store.open(moto_fixes.dispatcher())
    table = next(iter(get_backend("dynamodb")["123456789012"]["us-east-1"].tables.values()))
    template_key = next(k for k in table.items if str(k.value).startswith("TASK#"))
    template_id = str(template_key.value).removeprefix("TASK#")
    items = [item.to_json()["Attributes"] for item in table.items[template_key].values()]
    shard, table.stream_shard = table.stream_shard, None
    try:
        for n in range(tasks):
            task_id = template_id[:16] + _crockford(n, 10)
            for attributes in items:
                table.put_item(_replaced(attributes, template_id, task_id))
    finally:
        table.stream_shard = shard
    store.snapshot()  # the clones bypassed the journal: only a snapshot keeps them
    store.close()
    durable.forget()  # this process was only borrowing the state


def _crockford(number: int, width: int) -> str:
    digits = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    out = ""
    for _ in range(width):
        number, digit = divmod(number, 32)
        out = digits[digit] + out
    return out


def _replaced(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {k: _replaced(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replaced(v, old, new) for v in value]
    return value
