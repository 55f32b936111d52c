"""`--watch`: follow one task until it ends (or waits for confirmation).

The data comes from a *source*: a function `(api, task_id, after) -> Iterator[Snapshot]`.
`poll` reads the REST API about once a second; `cli_live.follow` (the default) is driven by
the WebSocket API's pushes and polls when there is none.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from rich.console import Console
from rich.live import Live
from rich.text import Text

from fleetrun.cli_render import STATUS_STYLES, event_line, event_text, task_line
from fleetrun.cli_runs import watch_view
from fleetrun.client import Api

#: statuses after which nothing changes unless someone acts (retry)
TERMINAL: Final = frozenset({"completed", "partial_failure", "failed", "cancelled", "discarded"})
#: a two-phase task that planned and waits for `confirm` or `discard`
WAITING: Final = "apply_pending"
_RUN_FAILURES: Final = frozenset({"failed", "timed_out"})
EXIT_COMPLETED: Final = 0
EXIT_UNSUCCESSFUL: Final = 1
EXIT_WAITING: Final = 3
EXIT_INTERRUPTED: Final = 130


@dataclass(frozen=True)
class Snapshot:
    """The task and its node runs as of one moment, and the events that arrived since the last one."""

    task: dict[str, Any]
    runs: list[dict[str, Any]]
    events: list[dict[str, Any]] = field(default_factory=list)


Source = Callable[[Api, str, "str | None"], Iterator[Snapshot]]


def poll(api: Api, task_id: str, after: str | None = None, interval: float = 1.0) -> Iterator[Snapshot]:
    """Snapshots about every `interval` seconds. Events are read last, so the one that records a
    status change (written with it) is never behind the task that shows it."""
    while True:
        started = time.monotonic()
        task = api.get(f"/v1/tasks/{task_id}")
        runs = api.pages(f"/v1/tasks/{task_id}/nodes")
        events = api.pages(f"/v1/tasks/{task_id}/events", after=after)
        if events:
            after = events[-1]["event_id"]
        yield Snapshot(task, runs, events)
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def last_event_id(api: Api, task_id: str) -> str | None:
    """Where a watch that starts now should begin its event log (after an action such as retry)."""
    events = api.pages(f"/v1/tasks/{task_id}/events")
    return events[-1]["event_id"] if events else None


def is_done(task: dict[str, Any]) -> bool:
    return task["status"] in TERMINAL or task["status"] == WAITING


def exit_code(status: str) -> int:
    if status == "completed":
        return EXIT_COMPLETED
    return EXIT_WAITING if status == WAITING else EXIT_UNSUCCESSFUL


class Reporter(Protocol):
    def show(self, snapshot: Snapshot) -> None: ...
    def close(self) -> None: ...


class PlainReporter:
    """Not a terminal: one line per new event, one line per change of the task's status or counts."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._last: tuple[str, str] | None = None
        self._failed: set[tuple[str, int]] = set()

    def show(self, snapshot: Snapshot) -> None:
        for event in snapshot.events:
            self._line(event_line(event))
        for run in snapshot.runs:  # a failure's reason is on the node run, not always in an event
            key = (run["node"], int(run.get("attempt") or 1))
            if run["status"] in _RUN_FAILURES and key not in self._failed:
                self._failed.add(key)
                self._line(f"node {run['node']} {run['status']} (attempt {key[1]}): {run.get('error_message') or '-'}")
        counts = (snapshot.task["status"], repr(snapshot.task.get("node_counts")))
        if counts != self._last:
            self._last = counts
            self._line(task_line(snapshot.task))

    def _line(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        return None


class LiveReporter:
    """A terminal: bars redrawn in place, events printed above them as they arrive."""

    def __init__(self, console: Console, every_node: bool = False) -> None:
        self.live = Live(console=console, refresh_per_second=4, transient=False)
        self.every_node = every_node
        self.live.start()

    def show(self, snapshot: Snapshot) -> None:
        for event in snapshot.events:
            self.live.console.print(event_text(event), soft_wrap=True)
        self.live.update(watch_view(snapshot.task, snapshot.runs, self.live.console, every_node=self.every_node),
                         refresh=True)

    def close(self) -> None:
        self.live.stop()


def watch(api: Api, task_id: str, console: Console, *, after: str | None = None, source: Source | None = None,
          every_node: bool = False) -> int:
    """Follow the task until it is terminal or waits for confirmation; the exit status of `--watch`.
    On a terminal the live area shows the most telling node bars, or `every_node`."""
    if source is None:
        from fleetrun.cli_live import follow  # cli_live builds on this module

        source = follow
    reporter: Reporter = LiveReporter(console, every_node) if console.is_terminal else PlainReporter(console)
    task: dict[str, Any] | None = None
    try:
        try:
            for snapshot in source(api, task_id, after):
                task = snapshot.task
                reporter.show(snapshot)
                if is_done(task):
                    break
        finally:
            reporter.close()
    except KeyboardInterrupt:
        console.print(f"stopped watching; the task goes on: fleetrun watch {task_id}", style="yellow")
        return EXIT_INTERRUPTED
    assert task is not None  # a source yields until the task is done
    _conclude(console, task)
    return exit_code(task["status"])


def _conclude(console: Console, task: dict[str, Any]) -> None:
    task_id, status = task["task_id"], task["status"]
    style = STATUS_STYLES.get(status, "")
    if status == WAITING:
        console.print(Text(f"task {task_id} waits for confirmation: fleetrun confirm {task_id} "
                           f"(or fleetrun discard {task_id})", style=style))
        return
    message = f"task {task_id} {status}"
    if task.get("error_message"):
        message += f": {task['error_message']}"
    console.print(Text(message, style=f"bold {style}"))
    if status in ("failed", "partial_failure", "cancelled"):
        console.print(Text(f"retry the failed nodes: fleetrun retry {task_id} --watch", style="dim"))
