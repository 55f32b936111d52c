"""`fleetrun monitor`: the fleet snapshot and the GPU trend from Prometheus."""

from __future__ import annotations

from typing import Any

import click
from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from fleetrun.cli_cards import NODE_STATUS_STYLES, card
from fleetrun.cli_render import day_time
from fleetrun.cli_session import Session, json_option, pass_session, print_json

_SPARK = "▁▂▃▄▅▆▇█"
_METRIC_NAMES = {"DCGM_FI_DEV_GPU_UTIL": "GPU util", "DCGM_FI_DEV_FB_USED": "memory used"}


@click.group("monitor")
def monitor() -> None:
    """The fleet at a glance and GPU trends.

    \b
    Examples:
      fleetrun monitor snapshot
      fleetrun monitor gpu --range 6h
      fleetrun monitor gpu --range 1d --step 900 --host gpu-host-1 --json
    """


@monitor.command("snapshot")
@json_option
@pass_session
def snapshot_command(session: Session, as_json: bool) -> None:
    """Nodes by status, running tasks and node runs in flight (at most 10 s old)."""
    body = session.api().get("/v1/monitoring/snapshot")
    if as_json:
        print_json(body)
    else:
        session.out.print(snapshot_cards(body))


@monitor.command("gpu")
@click.option("--range", "range_", default="6h", show_default=True, metavar="DURATION",
              help="How far back: 30m, 6h, 1d, 2w (at most 31d).")
@click.option("--step", type=click.IntRange(min=1, max=86_400), default=300, show_default=True,
              help="Seconds between points (range/step + 1 at most 11,000).")
@click.option("--host", metavar="HOST", help="Only this host (its Hostname label).")
@json_option
@pass_session
def gpu_command(session: Session, range_: str, step: int, host: str | None, as_json: bool) -> None:
    """GPU utilisation and memory per host over time, from Prometheus.

    Each line: the host, the metric, a sparkline of the window, and its last, min, avg and max.
    Exit status 1 with the reason when the service has no Prometheus or cannot reach it.
    """
    body = session.api().get("/v1/monitoring/gpu-trend", range=range_, step=step, host=host)
    if as_json:
        print_json(body)
    elif not body["series"]:
        session.out.print(f"no GPU series in the last {range_}" + (f" for host {host}" if host else ""))
    else:
        session.out.print(trend_table(body))


def snapshot_cards(body: dict[str, Any]) -> RenderableType:
    nodes = card("nodes", [(status, Text(str(count), style=NODE_STATUS_STYLES.get(status, "")))
                            for status, count in body["nodes"].items()] + [("total", str(body["total_nodes"]))])
    tasks = card("tasks", [(status.replace("_", " "), str(count)) for status, count in body["active_tasks"].items()])
    runs = card("node runs", [(status.replace("_", " "), str(count)) for status, count in body["node_runs"].items()]
                + [("in flight", str(body["node_runs_in_flight"])),
                   ("waiting", str(body.get("node_runs_waiting", body["node_runs"].get("pending", 0))))])
    return Group(Columns([nodes, tasks, runs]), Text(f"as of {day_time(body.get('as_of'))} UTC", style="dim"))


def trend_table(body: dict[str, Any]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("host", "metric", "trend", "last", "min", "avg", "max"):
        table.add_column(name, justify="right" if name in ("last", "min", "avg", "max") else "left")
    for series in body["series"]:
        values = [float(value) for _, value in series["points"]]
        unit = "%" if series.get("unit") == "percent" else f" {series.get('unit') or ''}".rstrip()
        figures = [_number(v, unit) for v in (values[-1], min(values), sum(values) / len(values), max(values))] \
            if values else ["-"] * 4
        table.add_row(series["host"], _METRIC_NAMES.get(series["metric"], series["metric"]),
                      sparkline(values), *figures)
    return table


def sparkline(values: list[float], width: int = 40) -> str:
    """The values squeezed into `width` block characters (each the mean of its bucket)."""
    if not values:
        return ""
    buckets = [values[i * len(values) // width:(i + 1) * len(values) // width] for i in range(width)]
    means = [sum(b) / len(b) for b in buckets if b]
    low, high = min(means), max(means)
    span = (high - low) or 1.0
    return "".join(_SPARK[min(len(_SPARK) - 1, int((m - low) / span * len(_SPARK)))] for m in means)


def _number(value: float, unit: str) -> str:
    return f"{value:,.1f}{unit}" if value % 1 else f"{value:,.0f}{unit}"


