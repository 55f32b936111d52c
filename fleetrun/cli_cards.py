"""How statistics, the task-type registry and the fleet's nodes look on a terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from fleetrun.cli_render import STATUS_STYLES, day_time
from fleetrun.cli_table import Column, natural_key, render

NODE_STATUS_STYLES = {"idle": "green", "allocated": "cyan", "maintenance": "yellow", "offline": "bright_black"}


def card(title: str, rows: Sequence[tuple[str, str | Text]]) -> Panel:
    """A titled panel of label / right-aligned value rows."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column()
    grid.add_column(justify="right")
    for label, value in rows:
        grid.add_row(label, value)
    return Panel(grid, title=title, title_align="left", expand=False)


def _figure(value: Any, suffix: str = "") -> str:
    return "-" if value is None else f"{value}{suffix}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, rest = divmod(float(seconds), 60)
    return f"{int(minutes)}m {rest:04.1f}s" if minutes else f"{rest:.1f}s"


def stats_cards(stats: dict[str, Any]) -> RenderableType:
    totals = card("tasks", [
        ("total", str(stats.get("total_tasks", 0))), ("running", str(stats.get("running_tasks", 0))),
        ("completed", str(stats.get("completed_tasks", 0))), ("failed", str(stats.get("failed_tasks", 0))),
    ])
    rate = stats.get("success_rate")
    outcome = card("outcome", [
        ("success rate", Text(_figure(rate, "%"), style="bold green" if rate is not None and rate >= 90 else "bold")),
        ("avg duration", duration(stats.get("avg_duration_seconds"))),
    ])
    by_status = card("by status", [
        (status, Text(str(count), style=STATUS_STYLES.get(status, "")))
        for status, count in (stats.get("by_status") or {}).items()
    ])
    node_runs = card("node runs", [
        (status, Text(str(count), style=STATUS_STYLES.get(status, "")))
        for status, count in (stats.get("node_runs") or {}).items()
    ])
    types = card("by type", [(name, str(count)) for name, count in (stats.get("type_stats") or {}).items()]
                  or [("-", "0")])
    footer = Text(f"as of {day_time(stats.get('as_of'))} UTC", style="dim")
    return Group(Columns([totals, outcome, by_status, node_runs, types]), footer)


TYPE_COLUMNS: Final = (
    Column("type"), Column("parameters", priority=1, min_width=20, overflow="wrap"),
    Column("description", priority=2, min_width=30, overflow="wrap"),
    Column("steps", priority=3, min_width=12, overflow="wrap"), Column("executor", priority=4),
    Column("confirm", priority=5), Column("attempts", priority=6, justify="right"),
    Column("concurrency", priority=7, justify="right"),
)
NODE_COLUMNS: Final = (
    Column("node"), Column("status"), Column("last seen", priority=1), Column("labels", priority=2, min_width=16,
                                                                               overflow="wrap"),
    Column("detail", priority=3, min_width=12, overflow="ellipsis"), Column("slots", priority=4, justify="right"),
    Column("registered", priority=5),
)


def task_types_table(types: list[dict[str, Any]], console: Console, *, wide: bool = False) -> RenderableType:
    rows = [(kind["name"], parameters_summary(kind), kind.get("description") or "",
             " → ".join([*kind.get("steps", []), *kind.get("apply_steps", [])]), kind.get("executor") or "-",
             "yes" if kind.get("requires_confirmation") else "no", str(kind.get("max_attempts", "-")),
             str(kind.get("default_max_concurrency", "-")))
            for kind in types]
    return render(TYPE_COLUMNS, rows, console, wide=wide)


def parameters_summary(kind: dict[str, Any]) -> str:
    """`ssh_user*, password (secret), partition`: * marks required parameters."""
    schema = kind.get("parameters_schema") or {}
    required, secret = set(schema.get("required") or []), set(kind.get("secret_parameters") or [])
    names = [name + ("*" if name in required else "") + (" (secret)" if name in secret else "")
             for name in schema.get("properties") or {}]
    return ", ".join(names) or "-"


def nodes_table(nodes: list[dict[str, Any]], console: Console, *, wide: bool = False) -> RenderableType:
    """One row per node, in natural order (`edge-2` before `edge-10`)."""
    rows = []
    for node in sorted(nodes, key=lambda found: natural_key(found["node_id"])):
        status = node.get("status") or "-"
        labels = ", ".join(f"{k}={v}" for k, v in (node.get("labels") or {}).items())
        rows.append((node["node_id"], Text(status, style=NODE_STATUS_STYLES.get(status, "")),
                     day_time(node.get("last_seen_at")), labels or "-", _node_detail(node), str(node.get("slots", 1)),
                     day_time(node.get("created_at"))))
    return render(NODE_COLUMNS, rows, console, wide=wide)


def _node_detail(node: dict[str, Any]) -> str:
    """Who has it, what reclaims it, what it returns to."""
    parts = []
    if node.get("allocation"):
        parts.append(f"allocated to {node['allocation']['user']}")
    if node.get("reclaim"):
        reclaim = node["reclaim"]
        parts.append(f"reclaim {reclaim['outcome']} ({reclaim['task_id']})")
    if node.get("offline_from"):
        parts.append(f"returns {node['offline_from']}")
    return "; ".join(parts) or "-"

