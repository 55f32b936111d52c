"""`fleetrun schedules`: tasks created on a schedule (`/v1/schedules`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import click
from rich.console import Console, RenderableType

from fleetrun.cli_hints import with_parameter_hints
from fleetrun.cli_render import day_time
from fleetrun.cli_session import Session, json_option, pass_session, print_json
from fleetrun.cli_submit import build_body, parse_max_errors, parse_param, read_nodes, read_params
from fleetrun.cli_table import Column, id_cells, render
from fleetrun.client import ApiError


@click.group("schedules")
def schedules_group() -> None:
    """Create, list and delete schedules: each firing creates one task.

    Expressions use EventBridge Scheduler's syntax, in UTC: rate(1 hour), rate(15 minutes),
    cron(0 2 * * ? *) (minutes hours day-of-month month day-of-week year; one of the two
    day fields is ?).
    """


@schedules_group.command("create")
@click.argument("schedule_name", metavar="NAME")
@click.argument("expression")
@click.argument("task_type", metavar="TYPE")
@click.option("-n", "--node", "nodes", multiple=True, metavar="NODE", help="A target node (repeat for more).")
@click.option("--nodes-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Target nodes, one per line (# comments allowed).")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter; VALUE is read as JSON when it parses, else as text.")
@click.option("--params-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A JSON object of parameters; --param values override it.")
@click.option("--task-name", "name", help="The name each created task gets.")
@click.option("--tag", "tags", multiple=True, help="A tag of each created task (repeat for more).")
@click.option("--priority", type=click.IntRange(1, 10), help="1-10, default 5.")
@click.option("--max-concurrency", type=click.IntRange(min=1), help="Node runs in flight at most.")
@click.option("--max-errors", callback=parse_max_errors, metavar="N|P%", help="Failed nodes tolerated.")
@click.option("--concurrency-key", help="Tasks with the same key run one at a time.")
@click.option("--runner-node", metavar="NODE", help="Run every node's work on this node's agent.")
@json_option
@pass_session
def create(session: Session, /, schedule_name: str, expression: str, task_type: str, nodes: tuple[str, ...],
           nodes_file: Path | None, params: tuple[str, ...], params_file: Path | None, as_json: bool,
           **options: Any) -> None:
    """Create schedule NAME firing a task of TYPE on EXPRESSION; print its id.

    \b
    Examples:
      fleetrun schedules create nightly-release 'cron(0 2 * * ? *)' config.release \\
          -n edge-1 -n edge-2 --param website_id=41
      fleetrun schedules create uptime 'rate(1 hour)' shell -n demo-1 --param 'command=["uptime"]'
    """
    parameters = read_params(params_file) if params_file else {}
    parameters.update(parse_param(raw) for raw in params)
    targets = list(nodes) + (read_nodes(nodes_file) if nodes_file else [])
    task = build_body(task_type, targets, parameters, options)
    try:
        created = session.api().post("/v1/schedules", {"name": schedule_name, "expression": expression, "task": task})
    except ApiError as error:
        raise with_parameter_hints(error, parameters) from None
    if as_json:
        print_json(created)
    else:
        click.echo(f"{created['schedule_id']} (next firing {created['next_fire_at'] or 'never'})")


@schedules_group.command("list")
@click.option("--owner", help="Only this user's schedules (admins; others always see their own).")
@click.option("--wide", is_flag=True, help="Every column and whole ids, however wide the terminal.")
@json_option
@pass_session
def list_command(session: Session, owner: str | None, wide: bool, as_json: bool) -> None:
    """List schedules, newest first."""
    items = session.api().pages("/v1/schedules", owner=owner)
    if as_json:
        print_json({"items": items, "next_cursor": None})
    elif not items:
        session.out.print("no schedules: fleetrun schedules create NAME EXPRESSION TYPE …", markup=False)
    else:
        session.out.print(schedules_table(items, session.out, wide=wide))


@schedules_group.command("show")
@click.argument("schedule_id")
@json_option
@pass_session
def show(session: Session, schedule_id: str, as_json: bool) -> None:
    """Show one schedule."""
    schedule = session.api().get(f"/v1/schedules/{schedule_id}")
    if as_json:
        print_json(schedule)
    else:
        session.out.print(schedules_table([schedule], session.out))


@schedules_group.command("delete")
@click.argument("schedule_id")
@json_option
@pass_session
def delete(session: Session, schedule_id: str, as_json: bool) -> None:
    """Delete a schedule (tasks it already created stay)."""
    _, deleted, _ = session.api().request("DELETE", f"/v1/schedules/{schedule_id}")
    if as_json:
        print_json(deleted)
    else:
        click.echo(f"deleted {deleted['schedule_id']} ({deleted['name']})")


SCHEDULE_COLUMNS: Final = (
    Column("id"), Column("type"), Column("expression", priority=1), Column("next firing", priority=2),
    Column("name", priority=3, min_width=10, overflow="ellipsis"), Column("targets", priority=4, justify="right"),
    Column("owner", priority=5, min_width=8, overflow="ellipsis"),
)


def schedules_table(items: list[dict[str, Any]], console: Console, *, wide: bool = False) -> RenderableType:
    """One row per schedule; on a terminal the ids by their unique ending (unless `wide`)."""
    shown_ids = id_cells((item["schedule_id"] for item in items), console, wide)
    rows = [(shown_ids[item["schedule_id"]], item["task"]["type"],
             item["expression"], day_time(item["next_fire_at"]) if item["next_fire_at"] else "never", item["name"],
             str(len(item["task"].get("target_nodes") or [])), item["owner"])
            for item in items]
    return render(SCHEDULE_COLUMNS, rows, console, wide=wide)
