"""One step as a process: `<steps-dir>/<type>/<step>` in its own process group.

The parameters go to the step as JSON on stdin and as `FLEETRUN_PARAM_*` variables; its
stdout and stderr are merged and read line by line on a reader thread, so the agent can
heartbeat, parse progress and notice cancellation while the step runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fleetrun.agent.settings import KILL_GRACE_SECONDS

#: a line longer than this reaches the agent in pieces (bounded memory for any output)
_READ_CHUNK = 64 * 1024
#: the agent's own credentials are none of a step's business
_HIDDEN_VARIABLES = ("FLEETRUN_NODE_TOKEN", "FLEETRUN_AGENT_TOKEN", "FLEETRUN_TOKEN")


class StepNotRunnable(Exception):
    """The step's executable is missing, not executable or cannot be started."""


class StepMissing(StepNotRunnable):
    """This agent's steps directory has no executable for the step: no retry can change that."""


def parameter_variable(name: str) -> str:
    return "FLEETRUN_PARAM_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def step_environment(parameters: Mapping[str, Any], context: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment, the parameters as FLEETRUN_PARAM_*, and the run's FLEETRUN_* context."""
    env = {k: v for k, v in os.environ.items() if k not in _HIDDEN_VARIABLES}
    for name, value in parameters.items():
        env[parameter_variable(name)] = value if isinstance(value, str) else json.dumps(value)
    env.update(context)
    return env


def step_executable(steps_dir: Path, task_type: str, step: str) -> Path:
    """`<steps_dir>/<type>/<step>`. Raises StepNotRunnable when it is missing or not executable."""
    if step in ("", ".", "..") or "/" in step or "/" in task_type or task_type in (".", ".."):
        raise StepNotRunnable(f"step {step!r} of type {task_type!r} is not a valid step name")
    path = steps_dir / task_type / step
    if not path.is_file():
        raise StepMissing(f"no executable for step {step} at {path}")
    if not os.access(path, os.X_OK):
        raise StepNotRunnable(f"{path} is not executable")
    return path


@dataclass(frozen=True)
class StepLaunch:
    executable: Path
    stdin: bytes
    env: dict[str, str]
    cwd: Path


class StepProcess:
    """A running step. `lines()` returns what it printed since the last call."""

    def __init__(self, launch: StepLaunch) -> None:
        try:
            self._process = subprocess.Popen(
                [str(launch.executable)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=launch.env, cwd=launch.cwd, start_new_session=True,
            )
        except OSError as error:
            raise StepNotRunnable(f"{launch.executable} could not start: {error.strerror or error}") from error
        self.pid = self._process.pid
        self._lines: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._writer = _thread(_feed, self._process.stdin, launch.stdin)
        self._reader = _thread(_read, self._process.stdout, self._lines)

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if the step is still running after `timeout` seconds."""
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def lines(self) -> list[bytes]:
        found: list[bytes] = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return found
            if line is not None:
                found.append(line)

    def finish(self, timeout: float = 2.0) -> list[bytes]:
        """After exit: the last lines (a background child that keeps the pipe open is not waited for)."""
        self._reader.join(timeout)
        return self.lines()

    def stop(self, grace: float = KILL_GRACE_SECONDS) -> int:
        """SIGTERM the whole process group; SIGKILL what is left once the step exits or `grace` passes."""
        if self._process.poll() is None:
            _signal_group(self.pid, signal.SIGTERM)
        try:
            code = self._process.wait(grace)
        except subprocess.TimeoutExpired:
            _signal_group(self.pid, signal.SIGKILL)
            code = self._process.wait()
        _signal_group(self.pid, signal.SIGKILL)  # children that outlived the step's own process
        return code


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _thread(target: Any, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def _feed(pipe: IO[bytes], data: bytes) -> None:
    try:
        pipe.write(data)
    except (BrokenPipeError, OSError):  # a step need not read its stdin
        pass
    finally:
        with contextlib.suppress(OSError):
            pipe.close()


def _read(pipe: IO[bytes], lines: queue.SimpleQueue[bytes | None]) -> None:
    try:
        for chunk in iter(lambda: pipe.readline(_READ_CHUNK), b""):
            lines.put(chunk)
    except (OSError, ValueError):
        pass
    finally:
        lines.put(None)
