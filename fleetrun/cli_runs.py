"""How a task's node runs look: the `show`/`runs` table and the live area of `--watch`.

Large tasks read from the top: a status summary first, then the failed nodes, then the running
ones, then the rest, each group in natural order (`ghost-2` before `ghost-10`), cut to a limit
with a line that says how to see them all.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from fleetrun.cli_render import STATUS_STYLES, clock_time, status_text
from fleetrun.cli_table import Column, natural_key, render

#: which runs come first: what broke, then what moves, then what waits, what is done last
_RANK: Final = {"failed": 0, "timed_out": 0, "running": 1, "apply_pending": 1, "cancelling": 1, "pending": 2,
                "cancelled": 3, "succeeded": 4}
#: node bars in the live area at most (on a terminal with fewer lines, fewer)
MAX_NODE_BARS: Final = 30
#: lines of the live area that are not node bars: task line, bar, summary, header, "… more"
_LIVE_CHROME: Final = 8

RUN_COLUMNS: Final = (
    Column("node"), Column("status"), Column("progress", priority=1, justify="right"),
    Column("attempt", priority=5, justify="right"), Column("step", priority=3, min_width=10, overflow="ellipsis"),
    Column("error", priority=2, min_width=24, overflow="ellipsis"), Column("started", priority=4),
    Column("completed", priority=6), Column("runner", priority=7, min_width=6, overflow="ellipsis"),
)
_BAR_COLUMNS: Final = (
    Column("node"), Column("status"), Column("bar", priority=2, min_width=10, overflow="ellipsis", width=30),
    Column("%", priority=1, justify="right"), Column("note", priority=3, min_width=30, overflow="ellipsis"),
)


def ranked(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failed first, then running, then the rest; nodes in natural order within each."""
    return sorted(runs, key=lambda run: (_RANK.get(run["status"], 2), natural_key(run["node"])))


def runs_summary(runs: list[dict[str, Any]]) -> str:
    """`200 nodes: 3 failed, 12 running, 185 pending`"""
    counts = Counter(run["status"] for run in runs)
    shown = sorted(counts.items(), key=lambda item: (_RANK.get(item[0], 2), item[0]))
    return f"{len(runs)} node{'s' if len(runs) != 1 else ''}: " + ", ".join(f"{n} {s}" for s, n in shown)


def more_line(hidden: int, task_id: str) -> Text:
    return Text(f"… and {hidden} more (fleetrun show {task_id} --all lists them)", style="dim")


def runs_view(task_id: str, runs: list[dict[str, Any]], console: Console, *, limit: int | None = None,
              wide: bool = False) -> RenderableType:
    """The summary line and the runs table (the first `limit` runs by rank)."""
    ordered = ranked(runs)
    shown = ordered if limit is None else ordered[:limit]
    rows = [(run["node"], status_text(run["status"]), f"{run.get('progress', 0)}%", str(run.get("attempt", 1)),
             run.get("step") or "-", Text(_one_line(run.get("error_message")), style="red"),
             clock_time(run.get("started_at")), clock_time(run.get("completed_at")), run.get("runner") or "")
            for run in shown]
    parts: list[RenderableType] = [Text(runs_summary(runs), style="bold"), render(RUN_COLUMNS, rows, console,
                                                                                   wide=wide)]
    if len(ordered) > len(shown):
        parts.append(more_line(len(ordered) - len(shown), task_id))
    return Group(*parts)


def watch_view(task: dict[str, Any], runs: list[dict[str, Any]], console: Console, *,
               every_node: bool = False) -> RenderableType:
    """The live area: the task line, its bar, the node summary, one bar per node (failed first)."""
    status, progress = task["status"], task.get("progress", 0)
    head = Text.assemble((f"task {task['task_id']}", "bold"), " ", task["type"], " ", status_text(status), " ",
                         task.get("stage") or "")
    head.truncate(console.width, overflow="ellipsis")
    overall = Table.grid(padding=(0, 1))
    overall.add_column(width=max(10, min(40, console.width - 6)))
    overall.add_column(no_wrap=True, justify="right")
    overall.add_row(_bar(progress, status), f"{progress:>3}%")
    parts: list[RenderableType] = [head, overall]
    if runs:
        parts.append(Text(runs_summary(runs), style="bold"))
        parts.extend(_node_bars(runs, console, task["task_id"], every_node))
    return Group(*parts)


def _node_bars(runs: list[dict[str, Any]], console: Console, task_id: str, every_node: bool) -> list[RenderableType]:
    ordered = ranked(runs)
    limit = len(ordered) if every_node else max(5, min(MAX_NODE_BARS, console.height - _LIVE_CHROME))
    shown = ordered[:limit]
    rows = [(run["node"], status_text(run["status"]), _bar(run.get("progress", 0), run["status"]),
             f"{run.get('progress', 0)}%", _run_note(run)) for run in shown]
    parts: list[RenderableType] = [render(_BAR_COLUMNS, rows, console, header=False)]
    if len(ordered) > len(shown):
        parts.append(more_line(len(ordered) - len(shown), task_id))
    return parts


def _bar(progress: int, status: str) -> ProgressBar:
    style = STATUS_STYLES.get(status, "cyan")
    # no width: the bar fills the width its column is given
    return ProgressBar(total=100, completed=progress or 0, complete_style=style, finished_style=style)


def _run_note(run: dict[str, Any]) -> Text:
    if run.get("error_message"):
        return Text(_one_line(f"{run.get('step') or ''} {run['error_message']}".strip()), style="red")
    runner = f" via {run['runner']}" if run.get("runner") and run["runner"] != run["node"] else ""
    return Text(f"{run.get('step') or ''}{runner}", style="dim")


def _one_line(message: str | None) -> str:
    """An error as one line: a cell cut to its width must not grow the row to many lines."""
    return " ".join((message or "").split())
