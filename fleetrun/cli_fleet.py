"""Commands about the service and the fleet: statistics, task types, nodes, the agent, the local stack."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import click

from fleetrun.cli_cards import nodes_table, stats_cards, task_types_table
from fleetrun.cli_selectors import label_pairs, label_query
from fleetrun.cli_session import EXIT_USAGE, Failure, Session, json_option, pass_session, print_json
from fleetrun.cli_submit import parse_param
from fleetrun.cli_types import agent_check

DEMO_STEPS = Path(__file__).resolve().parent / "agent" / "demo_steps"


@click.command()
@click.option("--type", "task_type", metavar="TYPE", help="Only tasks of this type.")
@click.option("--owner", help="Only this user's tasks (admins; others always see their own).")
@json_option
@pass_session
def stats(session: Session, task_type: str | None, owner: str | None, as_json: bool) -> None:
    """Show statistics: totals, success rate, durations.

    Cards: totals, by status, success rate, average duration, node runs, tasks per type.
    """
    figures = session.api().get("/v1/statistics", type=task_type, owner=owner)
    if as_json:
        print_json(figures)
    else:
        session.out.print(stats_cards(figures))


_wide_option = click.option("--wide", is_flag=True, help="Every column, however wide the terminal.")


@click.command("task-types")
@_wide_option
@json_option
@pass_session
def task_types(session: Session, wide: bool, as_json: bool) -> None:
    """List the task types and their parameters.

    Parameters marked * are required; secret ones never come back from the API. Columns that
    do not fit the terminal are left out (--wide shows them).
    """
    items = session.api().pages("/v1/task-types")
    if as_json:
        print_json({"items": items, "next_cursor": None})
    else:
        session.out.print(task_types_table(items, session.out, wide=wide))


@click.command("nodes")
@click.option("-l", "--label", "labels", multiple=True, metavar="KEY=VALUE", callback=label_pairs,
              help="Only nodes carrying this label (repeat: all must hold).")
@_wide_option
@json_option
@pass_session
def nodes_command(session: Session, labels: dict[str, str], wide: bool, as_json: bool) -> None:
    """List the fleet's nodes, in natural order (edge-2 before edge-10)."""
    items = session.api().pages("/v1/nodes", label=label_query(labels))
    if as_json:
        print_json({"items": items, "next_cursor": None})
    elif items:
        session.out.print(nodes_table(items, session.out, wide=wide))
    else:
        session.out.print("no nodes registered: fleetrun node register NODE_ID")


@click.group("node")
def node_group() -> None:
    """Register, inspect and administer one node."""


@node_group.command("register")
@click.argument("node_id")
@click.option("-l", "--label", "labels", multiple=True, metavar="KEY=VALUE", help="A label (repeat for more).")
@click.option("--slots", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs the agent may run at once.")
@json_option
@pass_session
def register(session: Session, node_id: str, labels: tuple[str, ...], slots: int, as_json: bool) -> None:
    """Register a node (admin); print its agent token.

    The token is shown only once.

    \b
    Example:
      fleetrun node register edge-12 --label pool=cdn --slots 2
    """
    api = session.api()
    label_map = {key: str(value) if not isinstance(value, str) else value
                 for key, value in (parse_param(raw) for raw in labels)}
    answer = api.post("/v1/nodes", {"node_id": node_id, "labels": label_map, "slots": slots})
    if as_json:
        print_json(answer)
        return
    token = answer["token"]
    session.out.print(f"registered node {answer['node_id']}; its agent token (shown once, keep it secret):")
    click.echo(f"  {token}")
    session.out.print("start its agent on the node with:", markup=False)
    click.echo(f"  fleetrun agent --api {api.base_url} --node {answer['node_id']} --token {token}")


@node_group.command("show")
@click.argument("node_id")
@json_option
@pass_session
def show_node(session: Session, node_id: str, as_json: bool) -> None:
    """Show one node."""
    node = session.api().get(f"/v1/nodes/{node_id}")
    if as_json:
        print_json(node)
    else:
        session.out.print(nodes_table([node], session.out))


# a group so that `fleetrun agent check` sits beside it; without a subcommand it runs the agent
@click.group(context_settings={"show_default": True}, invoke_without_command=True)
@click.option("--api", "api_url", metavar="URL", help="The fleetrun API  [default: the configured URL]")
@click.option("--node", metavar="ID", help="The node this agent works for (required to run it).")
@click.option("--token", envvar="FLEETRUN_NODE_TOKEN", metavar="TOKEN",
              help="The node's token from `fleetrun node register` (or $FLEETRUN_NODE_TOKEN; required to run it).")
@click.option("--steps-dir", type=click.Path(file_okay=False, path_type=Path), default=DEMO_STEPS,
              show_default="the packaged demo steps", help="Executables per task type and step: <dir>/<type>/<step>.")
@click.option("--slots", type=click.IntRange(min=1), default=1, help="Runs executed at once.")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Working directories of the runs (kept for plan contexts).  [default: .fleetrun/agents/<node>]")
@click.option("--grace", type=click.FloatRange(min=0), default=20.0,
              help="Seconds a step may take to stop after a cancel or SIGTERM before it is killed.")
@click.option("--idle-poll-max", type=click.FloatRange(min=1), default=30.0, envvar="FLEETRUN_AGENT_IDLE_POLL_MAX",
              help="Longest pause between claims while idle (seconds): 1 s after work, doubling while nothing "
                   "comes. Shorter picks up new work sooner; each idle poll is an API request.")
@click.pass_context
def agent(ctx: click.Context, api_url: str | None, node: str | None, token: str | None, steps_dir: Path, slots: int,
          work_dir: Path | None, grace: float, idle_poll_max: float) -> None:
    """Run the node agent of one node (`fleetrun agent check`: can its steps directory run every type?).

    The agent claims the node's runs, executes their steps from --steps-dir and reports back.
    """
    if ctx.invoked_subcommand is not None:
        return
    if not node or not token:
        raise click.UsageError("--node and --token (or $FLEETRUN_NODE_TOKEN) are required to run the agent")
    session = ctx.ensure_object(Session)
    url = api_url or session.connection().url
    if not url:
        raise Failure("no API URL: pass --api URL (or run `fleetrun login`)", EXIT_USAGE)
    try:
        module: Any = importlib.import_module("fleetrun.agent")
    except ImportError as error:
        raise Failure(f"the node agent is not available in this installation ({error})", EXIT_USAGE) from None
    status = module.run(url, node, token, steps_dir, slots=slots, work_dir=work_dir, grace=grace,
                        idle_poll_max=idle_poll_max)
    raise SystemExit(status if isinstance(status, int) else 0)


@click.group("local")
def local_group() -> None:
    """Run the whole service on this machine."""


@local_group.command("up")
def local_up() -> None:
    """Start the local stack (what `make run` runs).

    The API, the event pumps, the scheduler and demo agents; Ctrl-C stops them.

    Settings come from the environment: FLEETRUN_PORT, FLEETRUN_DEMO_AGENTS,
    FLEETRUN_LEASE_SECONDS, FLEETRUN_SWEEP_SECONDS, FLEETRUN_DATA_DIR, …
    """
    try:
        runtime: Any = importlib.import_module("fleetrun.local.runtime")
    except ImportError as error:
        raise Failure(f"the local runtime needs the `local` extra: pip install -e '.[local]' ({error})",
                      EXIT_USAGE) from None
    raise SystemExit(runtime.up())


def _data_dir() -> Path:
    return Path(os.environ.get("FLEETRUN_DATA_DIR") or ".fleetrun")


@local_group.command("reset")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def local_reset(yes: bool) -> None:
    """Delete the local runtime's state (FLEETRUN_DATA_DIR, default .fleetrun/): every task, node,
    token, secret and schedule. The runtime must be stopped."""
    from fleetrun.local import durable

    data_dir = _data_dir()
    if not yes:
        click.confirm(f"Delete everything the local runtime keeps in {data_dir.resolve()}?", abort=True)
    try:
        removed = durable.reset(data_dir)
    except durable.StateInUse as error:
        raise Failure(str(error), EXIT_USAGE) from None
    click.echo(f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} from {data_dir}")


@local_group.command("snapshot")
@click.argument("target", required=False, type=click.Path(path_type=Path))
def local_snapshot(target: Path | None) -> None:
    """Back up the stopped local runtime's state to TARGET (default: <data dir>-backup-<time>).
    Restore by stopping the runtime and putting the copy in place of FLEETRUN_DATA_DIR."""
    import time as _time

    from fleetrun.local import durable

    data_dir = _data_dir()
    target = target or data_dir.with_name(f"{data_dir.name}-backup-{_time.strftime('%Y%m%d-%H%M%S')}")
    if not (data_dir / "state").exists():
        raise Failure(f"no local state in {data_dir}", EXIT_USAGE)
    try:
        durable.backup(data_dir, target)
    except durable.StateInUse as error:
        raise Failure(str(error), EXIT_USAGE) from None
    click.echo(f"copied {data_dir} to {target}")


agent.add_command(agent_check)
COMMANDS = (stats, task_types, nodes_command, node_group, agent, local_group)
