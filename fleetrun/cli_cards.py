"""How statistics, the task-type registry and the fleet's nodes look on a terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from fleetrun.cli_render import STATUS_STYLES, day_time

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


def task_types_table(types: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("type", "executor", "steps", "confirm", "concurrency", "attempts", "parameters", "description"):
        table.add_column(name, no_wrap=name in ("type", "executor"))
    for kind in types:
        steps = [*kind.get("steps", []), *kind.get("apply_steps", [])]
        table.add_row(
            kind["name"], kind.get("executor") or "-", " → ".join(steps),
            "yes" if kind.get("requires_confirmation") else "no", str(kind.get("default_max_concurrency", "-")),
            str(kind.get("max_attempts", "-")), parameters_summary(kind), kind.get("description") or "",
        )
    return table


def parameters_summary(kind: dict[str, Any]) -> str:
    """`ssh_user*, password (secret), partition`: * marks required parameters."""
    schema = kind.get("parameters_schema") or {}
    required, secret = set(schema.get("required") or []), set(kind.get("secret_parameters") or [])
    names = [name + ("*" if name in required else "") + (" (secret)" if name in secret else "")
             for name in schema.get("properties") or {}]
    return ", ".join(names) or "-"


def nodes_table(nodes: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("node", "status", "detail", "slots", "labels", "last seen", "registered"):
        table.add_column(name, no_wrap=name not in ("labels", "detail"))
    for node in nodes:
        status = node.get("status") or "-"
        labels = ", ".join(f"{k}={v}" for k, v in (node.get("labels") or {}).items())
        table.add_row(node["node_id"], Text(status, style=NODE_STATUS_STYLES.get(status, "")), _node_detail(node),
                      str(node.get("slots", 1)), labels or "-", day_time(node.get("last_seen_at")),
                      day_time(node.get("created_at")))
    return table


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

