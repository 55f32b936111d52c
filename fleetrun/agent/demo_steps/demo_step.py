"""What every demo step shares: its context (FLEETRUN_*), the sandbox, the failure switch.

Demo steps do real, harmless work inside `$FLEETRUN_SANDBOX` (a directory standing in for
the machine) and never touch anything outside it. Standard library only, so any
`python3` runs them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

FAIL_NODES_VARIABLE = "FLEETRUN_DEMO_FAIL_NODES"
FAIL_NODES_FILE = "fail-nodes"
STEP_SECONDS_VARIABLE = "FLEETRUN_DEMO_STEP_SECONDS"


class DemoStep:
    def __init__(self, parameters: dict[str, Any], environ: dict[str, str]) -> None:
        self.parameters = parameters
        self.target = environ.get("FLEETRUN_TARGET_NODE", "")
        self.step = environ.get("FLEETRUN_STEP", "")
        self.task_id = environ.get("FLEETRUN_TASK_ID", "")
        self.attempt = environ.get("FLEETRUN_ATTEMPT", "1")
        self.sandbox = Path(environ.get("FLEETRUN_SANDBOX") or "sandbox").resolve()
        self.work_dir = Path(environ.get("FLEETRUN_WORK_DIR") or ".").resolve()
        self._environ = environ

    def failure_requested(self) -> bool:
        """Whether this node was asked to fail: by the environment or by `<sandbox>/fail-nodes`."""
        listed = {n.strip() for n in self._environ.get(FAIL_NODES_VARIABLE, "").split(",")}
        path = self.sandbox / FAIL_NODES_FILE
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    listed.add(line.strip())
        return self.target in listed

    def progress(self, percent: int, message: str) -> None:
        print(f"::progress {percent} {message}", flush=True)

    def event(self, type_: str, message: str) -> None:
        print(f"::event {type_} {self.step} {message}", flush=True)

    def say(self, message: str) -> None:
        print(message, flush=True)

    def pause(self) -> None:
        """Stand-in for the slow part of the real work: FLEETRUN_DEMO_STEP_SECONDS (default 1)."""
        try:
            seconds = float(self._environ.get(STEP_SECONDS_VARIABLE) or 1)
        except ValueError:
            seconds = 1.0
        time.sleep(max(0.0, seconds))

    def place(self, *parts: str) -> Path:
        """A path inside the sandbox; refuses any part that could step outside it."""
        for part in parts:
            if part in ("", ".", "..") or "/" in part or "\0" in part:
                fail(f"refusing unsafe name {part!r}", code=2)
        return self.sandbox.joinpath(*parts)


def start() -> DemoStep:
    """Read the step's context; exit 1 at once when a demo failure is requested for its node."""
    raw = sys.stdin.read() if not sys.stdin.isatty() else ""
    parameters = json.loads(raw) if raw.strip() else {}
    step = DemoStep(parameters, dict(os.environ))
    step.sandbox.mkdir(parents=True, exist_ok=True)
    if step.failure_requested():
        fail(f"demo failure requested for {step.target}")
    return step


def fail(message: str, code: int = 1) -> NoReturn:
    print(message, flush=True)
    raise SystemExit(code)


def write_text(path: Path, text: str) -> None:
    """Write atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temporary, path)


def write_json(path: Path, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def append_line(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as stream:
        stream.write(line.rstrip("\n") + "\n")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside `path`, for read-modify-write by concurrent runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
