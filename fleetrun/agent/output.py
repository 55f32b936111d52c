"""What a step prints: control lines (`::progress`, `::event`), and the output kept for the API.

A step reports progress with `::progress <pct> <message>` (the run's progress, 0 to 100) and
events with `::event <info|success|warning|error> <step> <message>`. Every other line is
output. The agent keeps the last 64 KiB of a run's output and the last lines of each step
(for the `error_message` of a failed step).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass

from fleetrun.agent.settings import OUTPUT_CAP_BYTES

EVENT_TYPES = frozenset({"info", "success", "warning", "error"})
#: API.md: event messages and error messages are at most 4096 characters
MAX_MESSAGE_CHARS = 4096
MAX_STEP_CHARS = 128
#: the error message carries this much of the failed step's output
ERROR_TAIL_LINES = 10
ERROR_TAIL_CHARS = 2000
#: the encoded output must leave room in the 256 KiB body for the rest of the completion
_OUTPUT_JSON_BUDGET = 160 * 1024


@dataclass(frozen=True)
class Progress:
    percent: int
    message: str


@dataclass(frozen=True)
class StepEvent:
    type: str
    step: str
    message: str


def parse_line(line: str) -> Progress | StepEvent | None:
    """The control line `line` stands for, or None when it is plain output."""
    if not line.startswith("::"):
        return None
    if line.startswith("::progress "):
        head, _, message = line[len("::progress "):].strip().partition(" ")
        try:
            percent = round(float(head))
        except ValueError:
            return None
        return Progress(max(0, min(100, percent)), message.strip()[:MAX_MESSAGE_CHARS])
    if line.startswith("::event "):
        parts = line[len("::event "):].strip().split(" ", 2)
        if len(parts) < 2 or parts[0] not in EVENT_TYPES:
            return None
        message = parts[2].strip() if len(parts) == 3 else ""
        return StepEvent(parts[0], parts[1][:MAX_STEP_CHARS], message[:MAX_MESSAGE_CHARS])
    return None


class OutputTail:
    """The last `cap` bytes of a run's output, and how many bytes came before them."""

    def __init__(self, cap: int = OUTPUT_CAP_BYTES) -> None:
        self.cap = cap
        self.total = 0
        self._kept = bytearray()

    def append(self, data: bytes) -> None:
        self.total += len(data)
        self._kept += data
        if len(self._kept) > 2 * self.cap:
            del self._kept[: len(self._kept) - self.cap]

    def render(self) -> str | None:
        """At most `cap` bytes of text: the tail, after a line saying how much was left out."""
        if not self.total:
            return None
        room = self.cap
        while True:
            text = self._render(room)
            if len(json.dumps(text)) <= _OUTPUT_JSON_BUDGET:  # control characters encode as 6 bytes each
                return text
            room //= 2

    def _render(self, room: int) -> str:
        if self.total <= room:
            return _decode(bytes(self._kept))
        prefix_room = len(_omitted_line(self.total).encode())
        kept = bytes(self._kept[-(room - prefix_room):])
        return _omitted_line(self.total - len(kept)) + _decode(kept)


def _omitted_line(count: int) -> str:
    return f"[… {count} bytes omitted …]\n"


def _decode(data: bytes) -> str:
    start = 0
    while start < min(3, len(data)) and 0x80 <= data[start] <= 0xBF:  # a character cut in half by the cap
        start += 1
    return data[start:].decode("utf-8", errors="replace")


class StepLines:
    """The last non-empty output lines of one step."""

    def __init__(self, keep: int = ERROR_TAIL_LINES) -> None:
        self._lines: deque[str] = deque(maxlen=keep)

    def add(self, line: str) -> None:
        if line.strip():
            self._lines.append(line.rstrip())

    def tail(self, limit: int = ERROR_TAIL_CHARS) -> str:
        text = "\n".join(self._lines)
        return text if len(text) <= limit else "…" + text[-(limit - 1):]
