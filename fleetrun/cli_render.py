"""How tasks and events look on a terminal (rich) and in a pipe (plain lines); node runs are in
cli_runs."""

from __future__ import annotations

from typing import Any, Final

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from fleetrun.cli_table import Column, id_cells, render

#: colour of every task and node-run status
STATUS_STYLES: Final = {
    "pending": "yellow", "running": "cyan", "apply_pending": "magenta", "cancelling": "yellow",
    "completed": "green", "succeeded": "green", "partial_failure": "dark_orange", "failed": "red",
    "timed_out": "red", "cancelled": "bright_black", "discarded": "bright_black",
}
EVENT_STYLES: Final = {"info": "", "success": "green", "warning": "yellow", "error": "red"}
#: node counts always shown in a task line; the others only when not zero
_MAIN_COUNTS: Final = ("pending", "running", "succeeded", "failed")


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


TASK_COLUMNS: Final = (
    Column("id"), Column("type"), Column("status"), Column("progress", priority=1, justify="right"),
    Column("nodes", priority=2, justify="right"), Column("created", priority=3),
    Column("name", priority=4, min_width=8, overflow="ellipsis"),
)


def tasks_table(items: list[dict[str, Any]], console: Console, *, wide: bool = False) -> RenderableType:
    """One row per task; on a terminal the ids by their unique suffix (unless `wide`)."""
    shown_ids = id_cells((task["task_id"] for task in items), console, wide)
    rows = []
    for task in items:
        counts = task.get("node_counts") or {}
        total = task.get("dispatch", {}).get("target_node_count") or len(task.get("target_nodes") or [])
        rows.append((shown_ids[task["task_id"]], task["type"], status_text(task["status"]),
                     f"{task.get('progress', 0)}%", f"{counts.get('succeeded', 0)}/{total}",
                     day_time(task.get("created_at")), task.get("name") or ""))
    return render(TASK_COLUMNS, rows, console, wide=wide)


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
                     f"skipped {dispatch.get('skipped_count', 0)}"
                     + (", in progress" if dispatch.get("state") == "in_progress" else "")),
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
