"""The agent's log: one line per thing that happened, to stdout. Never parameters, never output."""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime
from typing import TextIO


def run_tag(task_id: str, node: str) -> str:
    """A short name for a run: the random tail of the task's ULID and the target node."""
    return f"{task_id[-6:]}.{node}"


class Journal:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()

    def agent(self, message: str) -> None:
        self._write("agent", "-", message)

    def run(self, tag: str, step: str, message: str) -> None:
        self._write(tag, step, message)

    def _write(self, tag: str, step: str, message: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        line = f"{stamp} [{tag}] {step}: {message}\n"
        with self._lock:
            try:
                self._stream.write(line)
                self._stream.flush()
            except (OSError, ValueError):  # a closed stdout must not kill a run
                pass
