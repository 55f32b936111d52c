"""The agent's log: one line per thing that happened, to stdout. Never parameters, never output,
and never a secret value a step echoed into an event or a progress line: a run's lines are
masked with its secret values (API.md: secrets never reach a log line)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TextIO

MASK = "***"


def run_tag(task_id: str, node: str) -> str:
    """A short name for a run: the random tail of the task's ULID and the target node."""
    return f"{task_id[-6:]}.{node}"


class Journal:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()
        #: run tag -> its secret values, longest first (a secret holding another is masked whole)
        self._secrets: dict[str, tuple[str, ...]] = {}

    def hide(self, tag: str, secret_values: Iterable[str]) -> None:
        """Mask `secret_values` in every line of run `tag` until `forget(tag)`."""
        values = tuple(sorted({value for value in secret_values if value}, key=len, reverse=True))
        with self._lock:
            self._secrets[tag] = values

    def forget(self, tag: str) -> None:
        with self._lock:
            self._secrets.pop(tag, None)

    def agent(self, message: str) -> None:
        self._write("agent", "-", message)

    def run(self, tag: str, step: str, message: str) -> None:
        with self._lock:
            secrets = self._secrets.get(tag, ())
        for value in secrets:
            step, message = step.replace(value, MASK), message.replace(value, MASK)
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
