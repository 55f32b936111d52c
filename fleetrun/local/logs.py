"""One readable log stream for every part of the local runtime, each line tagged by part.

The app logs Powertools JSON; here a line becomes `HH:MM:SS [part] LEVEL message key=value`.
Its EMF metrics blobs (CloudWatch's input: a count per run, per task) are shown only when the app
logs at DEBUG (`POWERTOOLS_LOG_LEVEL=DEBUG`): to a reader of the stream they are no news.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from typing import Any, TextIO

_COLOURS = {"api": 36, "stream": 35, "notifier": 95, "dispatch": 33, "scheduler": 34, "moto": 90, "runtime": 32}
_SKIP = {"level", "message", "timestamp", "service", "location", "cold_start", "function_name",
         "function_memory_size", "function_arn", "function_request_id", "xray_trace_id", "sampling_rate"}
_part = threading.local()
#: the app's logger (chalicelib.observability's service name): its level decides what is shown
_APP_LOGGER = logging.getLogger("fleetrun")


def set_part(name: str) -> None:
    """Tag everything the current thread prints with `name`."""
    _part.name = name


def current_part() -> str:
    name: str | None = getattr(_part, "name", None)
    if name:
        return name
    thread = threading.current_thread().name
    return "api" if "process_request" in thread else thread


def shown(line: str) -> bool:
    """Whether a line written to the stream is printed: all but metrics blobs, unless at DEBUG."""
    is_metrics = line.startswith("{") and '"_aws":' in line
    return not is_metrics or _APP_LOGGER.isEnabledFor(logging.DEBUG)


def render(part: str, line: str, colour: bool) -> str:
    text = line.rstrip("\n")
    if text.startswith("{"):
        text = _compact(text)
    tag = f"[{part}]"
    if colour:
        tag = f"\033[{_COLOURS.get(part.split()[0], 37)}m{tag}\033[0m"
    return f"{tag} {text}\n"


def _compact(line: str) -> str:
    try:
        record: dict[str, Any] = json.loads(line)
    except ValueError:
        return line
    if "_aws" in record:  # an EMF metrics blob
        names = [m["Name"] for d in record["_aws"].get("CloudWatchMetrics", []) for m in d.get("Metrics", [])]
        return "metrics " + " ".join(f"{n}={record.get(n)}" for n in names)
    extra = " ".join(f"{k}={v}" for k, v in record.items() if k not in _SKIP and not isinstance(v, dict | list))
    level = record.get("level", "INFO")
    return f"{level:<7} {record.get('message', '')} {extra}".rstrip()


class TaggedStream(io.TextIOBase):
    """A stdout that prefixes each line with the part of the thread that wrote it."""

    def __init__(self, target: TextIO) -> None:
        self._target = target
        self._colour = target.isatty()
        self._lock = threading.Lock()
        self._buffers: dict[int, str] = {}

    def write(self, text: str) -> int:
        key = threading.get_ident()
        with self._lock:
            buffered = self._buffers.get(key, "") + text
            *lines, rest = buffered.split("\n")
            self._buffers[key] = rest
            for line in lines:
                if line.strip() and shown(line):
                    self._target.write(render(current_part(), line, self._colour))
            self._target.flush()
        return len(text)

    def emit(self, part: str, line: str) -> None:
        with self._lock:
            self._target.write(render(part, line, self._colour))
            self._target.flush()

    def flush(self) -> None:
        self._target.flush()

    def isatty(self) -> bool:
        return self._colour


def install() -> TaggedStream:
    stream = TaggedStream(sys.__stdout__ or sys.stdout)
    sys.stdout = stream
    sys.stderr = stream
    return stream
