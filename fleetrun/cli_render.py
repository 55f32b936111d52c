"""How tasks, node runs and events look on a terminal (rich) and in a pipe (plain lines)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, Final

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

#: colour of every task and node-run status
STATUS_STYLES: Final = {
    "pending": "yellow", "running": "cyan", "apply_pending": "magenta", "cancelling": "yellow",
    "completed": "green", "succeeded": "green", "partial_failure": "dark_orange", "failed": "red",
    "timed_out": "red", "cancelled": "bright_black", "discarded": "bright_black",
}
EVENT_STYLES: Final = {"info": "", "success": "green", "warning": "yellow", "error": "red"}
#: node counts always shown in a task line; the others only when not zero
_MAIN_COUNTS: Final = ("pending", "running", "succeeded", "failed")
#: order of interest when not every node fits: what moves or broke first, what is done last
_INTEREST: Final = {"running": 0, "failed": 1, "timed_out": 1, "apply_pending": 2, "pending": 3, "cancelled": 4,
                    "succeeded": 5}
MAX_NODE_BARS: Final = 30


def status_text(status: str | None) -> Text:
    return Text(status or "-", style=STATUS_STYLES.get(status or "", ""))


def clock_time(stamp: str | None) -> str:
    """`HH:MM:SS` (UTC) of an RFC 3339 timestamp."""
    return stamp[11:19] if stamp and len(stamp) >= 19 else "--:--:--"


def day_time(stamp: str | None) -> str:
    return stamp[:19].replace("T", " ") if stamp else "-"


def counts_summary(counts: dict[str, Any]) -> str:
    shown = [f"{name} {int(counts.get(name) or 0)}" for name in _MAIN_COUNTS]
    shown += [f"{name} {value}" for name, value in counts.items() if name not in _MAIN_COUNTS and value]
    return ", ".join(shown)


def task_line(task: dict[str, Any]) -> str:
    """`task 01J… running 40% (pending 1, running 2, succeeded 0, failed 0)`"""
    return (f"task {task['task_id']} {task['status']} {task.get('progress', 0)}% "
            f"({counts_summary(task.get('node_counts') or {})})")


def event_line(event: dict[str, Any]) -> str:
    """One event as a plain line: time, node, type, step, message."""
    return (f"{clock_time(event.get('at'))} {event.get('node') or '-':<14} {event.get('type') or 'info':<7} "
            f"{event.get('step') or '-':<14} {event.get('message') or ''}").rstrip()


def event_text(event: dict[str, Any]) -> Text:
    text = Text(event_line(event))
    text.stylize(EVENT_STYLES.get(event.get("type") or "info", ""))
    text.stylize("dim", 0, 8)
    return text


def tasks_table(items: Iterable[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("id", "type", "name", "status", "progress", "nodes", "created"):
        table.add_column(name, no_wrap=name in ("id", "status", "created"),
                         justify="right" if name in ("progress", "nodes") else "left")
    for task in items:
        counts = task.get("node_counts") or {}
        total = task.get("dispatch", {}).get("target_node_count") or len(task.get("target_nodes") or [])
        table.add_row(task["task_id"], task["type"], task.get("name") or "", status_text(task["status"]),
                      f"{task.get('progress', 0)}%", f"{counts.get('succeeded', 0)}/{total}",
                      day_time(task.get("created_at")))
    return table


def task_details(task: dict[str, Any]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    dispatch = task.get("dispatch") or {}
    rows: list[tuple[str, str | Text]] = [
        ("task", task["task_id"]), ("type", task["type"]), ("name", task.get("name") or "-"),
        ("owner", task.get("owner") or "-"), ("status", status_text(task["status"])),
        ("stage", task.get("stage") or "-"), ("progress", f"{task.get('progress', 0)}%"),
        ("attempt", str(task.get("attempt", 1))),
        ("nodes", counts_summary(task.get("node_counts") or {})),
        ("dispatch", f"triggered {str(dispatch.get('triggered', False)).lower()}, "
                     f"targets {dispatch.get('target_node_count', 0)}, created {dispatch.get('created_count', 0)}, "
                     f"skipped {dispatch.get('skipped_count', 0)}"),
        ("limits", f"priority {task.get('priority')}, max_concurrency {task.get('max_concurrency')}, "
                   f"max_errors {task.get('max_errors')}"),
        ("tags", ", ".join(task.get("tags") or []) or "-"),
        ("runner", task.get("runner_node") or "each target"),
        ("concurrency key", task.get("concurrency_key") or "-"),
        ("parameters", ", ".join(f"{k}={v}" for k, v in (task.get("parameters") or {}).items()) or "-"),
        ("created", day_time(task.get("created_at"))), ("started", day_time(task.get("started_at"))),
        ("completed", day_time(task.get("completed_at"))),
    ]
    if task.get("error_message"):
        rows.append(("error", Text(task["error_message"], style="red")))
    for label, value in rows:
        grid.add_row(label, value)
    return grid


def runs_table(runs: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("node", "runner", "status", "attempt", "progress", "step", "started", "completed", "error"):
        table.add_column(name, no_wrap=name != "error")
    for run in runs:
        table.add_row(run["node"], run.get("runner") or "", status_text(run["status"]), str(run.get("attempt", 1)),
                      f"{run.get('progress', 0)}%", run.get("step") or "-", clock_time(run.get("started_at")),
                      clock_time(run.get("completed_at")), Text(run.get("error_message") or "", style="red"))
    return table


def most_interesting(runs: list[dict[str, Any]], limit: int = MAX_NODE_BARS) -> list[dict[str, Any]]:
    ranked = sorted(runs, key=lambda run: (_INTEREST.get(run["status"], 3), run["node"]))
    return ranked[:limit]


def watch_view(task: dict[str, Any], runs: list[dict[str, Any]]) -> RenderableType:
    """The live area: the task's bar, one bar per node (the 30 most interesting), a summary."""
    status = task["status"]
    head = Table.grid(padding=(0, 1))
    for _ in range(4):
        head.add_column(no_wrap=True)
    head.add_row(Text(f"task {task['task_id']}", style="bold"), Text(task["type"]), status_text(status),
                 Text(task.get("stage") or ""))
    overall = Table.grid(padding=(0, 1))
    overall.add_column(width=40)
    overall.add_column(no_wrap=True)
    overall.add_row(_bar(task.get("progress", 0), status, 40),
                    f"{task.get('progress', 0):>3}%  {counts_summary(task.get('node_counts') or {})}")
    parts: list[RenderableType] = [head, overall]
    shown = most_interesting(runs)
    if shown:
        nodes = Table(box=None, show_header=False, pad_edge=False, padding=(0, 1))
        for options in ({"no_wrap": True}, {"no_wrap": True}, {"width": 30}, {"justify": "right"}, {"no_wrap": True}):
            nodes.add_column(**options)
        for run in shown:
            nodes.add_row(run["node"], status_text(run["status"]), _bar(run.get("progress", 0), run["status"], 30),
                          f"{run.get('progress', 0)}%", _run_note(run))
        parts.append(nodes)
    if len(runs) > len(shown):
        visible = {run["node"] for run in shown}
        hidden = Counter(run["status"] for run in runs if run["node"] not in visible)
        parts.append(Text(f"… and {len(runs) - len(shown)} more nodes (" +
                          ", ".join(f"{s} {n}" for s, n in sorted(hidden.items())) + ")", style="dim"))
    return Group(*parts)


def _bar(progress: int, status: str, width: int) -> ProgressBar:
    style = STATUS_STYLES.get(status, "cyan")
    return ProgressBar(total=100, completed=progress or 0, width=width, complete_style=style, finished_style=style)


def _run_note(run: dict[str, Any]) -> Text:
    if run.get("error_message"):
        return Text(f"{run.get('step') or ''} {run['error_message']}".strip(), style="red")
    runner = f" via {run['runner']}" if run.get("runner") and run["runner"] != run["node"] else ""
    return Text(f"{run.get('step') or ''}{runner}", style="dim")
