"""Commands about the node inventory: update, rotate-token, deregister, allocate, release, reclaim,
a node's allocations."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import click
import requests

from fleetrun.cli_fleet import node_group
from fleetrun.cli_render import day_time
from fleetrun.cli_selectors import label_pairs
from fleetrun.cli_session import EXIT_ERROR, EXIT_USAGE, Failure, Session, json_option, pass_session, print_json
from fleetrun.cli_table import Column, id_cells, render
from fleetrun.cli_watch import watch


def _said(session: Session, node: dict[str, Any], what: str) -> None:
    session.out.print(f"node {node['node_id']} is {node['status']}: {what}", markup=False)


@node_group.command("allocate")
@click.argument("node_id")
@click.option("-u", "--user", required=True, help="The user (login name on the machine) who gets the node.")
@json_option
@pass_session
def allocate(session: Session, node_id: str, user: str, as_json: bool) -> None:
    """Allocate an idle node to a user (admin); the allocation is recorded for usage reports.

    \b
    Example:
      fleetrun node allocate gpu-7 --user alice
    """
    answer = session.api().post(f"/v1/nodes/{node_id}/allocate", {"user": user})
    if as_json:
        print_json(answer)
        return
    allocation = answer["allocation"]
    _said(session, answer["node"], f"allocation {allocation['allocation_id']} to {allocation['user']} "
                                   f"since {allocation['started_at']}")


@node_group.command("release")
@click.argument("node_id")
@json_option
@pass_session
def release(session: Session, node_id: str, as_json: bool) -> None:
    """End the node's allocation (admin); the node is idle again."""
    answer = session.api().post(f"/v1/nodes/{node_id}/release")
    if as_json:
        print_json(answer)
        return
    allocation = answer["allocation"]
    _said(session, answer["node"], f"allocation {allocation['allocation_id']} of {allocation['user']} ended "
                                   f"after {allocation['hours']} h")


@node_group.command("reclaim")
@click.argument("node_id")
@click.option("-u", "--user", help="Whose account to clean  [default: the user of the open allocation]")
@click.option("-w", "--watch", "follow", is_flag=True, help="Follow the reclaim task; exit 0 only if it completes.")
@json_option
@pass_session
def reclaim(session: Session, node_id: str, user: str | None, follow: bool, as_json: bool) -> None:
    """Reclaim a node (admin): maintenance, then stop the user's processes, clean the home,
    remove containers, reset authorized_keys. Success makes the node idle; failure keeps it
    in maintenance (reclaim again, or retry the task).

    \b
    Example:
      fleetrun node reclaim gpu-7 --watch
    """
    api = session.api()
    task = api.post(f"/v1/nodes/{node_id}/reclaim", {"user": user} if user else None)
    if as_json and not follow:
        print_json(task)
        return
    if not as_json:
        session.out.print(f"node {node_id} is in maintenance; reclaim task {task['task_id']}", markup=False)
    if follow:
        status = watch(api, task["task_id"], session.err if as_json else session.out)
        node = _after_reclaim(api, node_id, task["task_id"])
        if as_json:
            print_json(node)
        else:
            _said(session, node, "reclaimed" if node["status"] == "idle" else "the reclaim did not succeed")
        raise SystemExit(status)


def _after_reclaim(api: Any, node_id: str, task_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The node once it has followed its reclaim task: the service moves it when the task's end
    reaches the stream, a moment after the task itself ends (at most `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        node: dict[str, Any] = api.get(f"/v1/nodes/{node_id}")
        reclaim = node.get("reclaim") or {}
        if reclaim.get("task_id") != task_id or reclaim.get("outcome") != "running" or time.monotonic() >= deadline:
            return node
        time.sleep(0.2)


@node_group.command("update")
@click.argument("node_id")
@click.option("-l", "--label", "labels", multiple=True, metavar="KEY=VALUE", callback=label_pairs,
              help="A label (repeat for more); together they replace all of the node's labels.")
@click.option("--clear-labels", is_flag=True, help="Remove every label.")
@click.option("--slots", type=click.IntRange(min=1, max=1024), help="Runs its agent may run at once.")
@json_option
@pass_session
def update(session: Session, node_id: str, labels: dict[str, str], clear_labels: bool, slots: int | None,
           as_json: bool) -> None:
    """Replace a node's labels and/or slots (admin); what you leave out stays.

    Selectors (target_selector) see the new labels at their next resolution.

    \b
    Example:
      fleetrun node update edge-12 --label pool=cdn --label region=eu
      fleetrun node update edge-12 --slots 4
    """
    if labels and clear_labels:
        raise Failure("--label and --clear-labels exclude each other", EXIT_USAGE)
    change: dict[str, Any] = {"labels": {}} if clear_labels else {"labels": labels} if labels else {}
    if slots is not None:
        change["slots"] = slots
    if not change:
        raise Failure("nothing to change: give --label, --clear-labels or --slots", EXIT_USAGE)
    node = session.api().request("PATCH", f"/v1/nodes/{node_id}", change)[1]
    if as_json:
        print_json(node)
        return
    shown = ", ".join(f"{k}={v}" for k, v in sorted(node["labels"].items())) or "none"
    _said(session, node, f"labels {shown}; {node['slots']} slot(s)")


@node_group.command("rotate-token")
@click.argument("node_id")
@json_option
@pass_session
def rotate_token(session: Session, node_id: str, as_json: bool) -> None:
    """Issue a node a new agent token (admin); print it once.

    The old token is refused from this moment: an agent still using it exits with a
    message. Restart the agent with the new token.
    """
    api = session.api()
    answer = api.post(f"/v1/nodes/{node_id}/token")
    if as_json:
        print_json(answer)
        return
    session.out.print(f"new agent token of node {node_id} (shown once, keep it secret);", markup=False)
    session.out.print("the old token no longer works:", markup=False)
    click.echo(f"  {answer['token']}")
    session.out.print("restart its agent with:", markup=False)
    click.echo(f"  fleetrun agent --api {api.base_url} --node {node_id} --token {answer['token']}")


@node_group.command("deregister")
@click.argument("node_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_session
def deregister(session: Session, node_id: str, yes: bool, as_json: bool) -> None:
    """Remove a node from the fleet (admin).

    Its token is refused at once; runs waiting for it fail ("node deregistered") and
    the runs it is running are asked to cancel. The id may be registered again later.
    """
    if not yes:
        click.confirm(f"Deregister node {node_id}? Its waiting runs fail and its agent stops", abort=True)
    answer = session.api().request("DELETE", f"/v1/nodes/{node_id}")[1]
    if as_json:
        print_json(answer)
        return
    session.out.print(f"node {node_id} deregistered: its runs in {answer['tasks_to_check']} active task(s) end "
                      "in the background (waiting ones fail, running ones are asked to cancel)", markup=False)


ALLOCATION_COLUMNS: Final = (
    Column("allocation"), Column("user"), Column("started", priority=1), Column("ended", priority=2),
    Column("hours", priority=3, justify="right"), Column("by", priority=4, min_width=6, overflow="ellipsis"),
)


@node_group.command("allocations")
@click.argument("node_id")
@click.option("--wide", is_flag=True, help="Every column and whole ids, however wide the terminal.")
@json_option
@pass_session
def allocations(session: Session, node_id: str, wide: bool, as_json: bool) -> None:
    """List a node's allocations, newest first (admin)."""
    items = session.api().pages(f"/v1/nodes/{node_id}/allocations")
    if as_json:
        print_json({"items": items, "next_cursor": None})
        return
    if not items:
        session.out.print(f"node {node_id} was never allocated", markup=False)
        return
    shown_ids = id_cells((item["allocation_id"] for item in items), session.out, wide)
    rows = [(shown_ids[item["allocation_id"]], item["user"],
             day_time(item["started_at"]), day_time(item["ended_at"]) if item["ended_at"] else "open",
             f"{item['hours']:.2f}", item["ended_by"] or "-")
            for item in items]
    session.out.print(render(ALLOCATION_COLUMNS, rows, session.out, wide=wide))




@click.group("report")
def report_group() -> None:
    """Usage reports (admin)."""


@report_group.command("usage")
@click.option("--month", metavar="YYYY-MM", help="The month  [default: last month]")
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx"]), default="csv", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the file  [default: fleetrun-usage-<month>.<format>]")
@json_option
@pass_session
def usage(session: Session, month: str | None, fmt: str, output: Path | None, as_json: bool) -> None:
    """Download a month's usage report: allocation hours per user and node, tasks per user.

    A finished month's report is built once (by the monthly job or on first request) and
    reused; the current month's is built as of now.

    \b
    Example:
      fleetrun report usage --month 2026-11 --format xlsx -o november.xlsx
    """
    month = month or _last_month()
    _, link, _ = session.api().request("GET", "/v1/reports/usage", params={"month": month, "format": fmt},
                                       follow_redirects=False)
    target = output or Path(link["filename"])
    try:
        response = requests.get(link["url"], timeout=60)  # presigned: no fleetrun credentials go to S3
        response.raise_for_status()
    except requests.RequestException as error:
        raise Failure(f"could not download the report: {error}", EXIT_ERROR) from None
    target.write_bytes(response.content)
    if as_json:
        print_json({**link, "path": str(target), "bytes": len(response.content)})
    else:
        state = "final" if link["complete"] else f"as of {link['as_of']}"
        session.out.print(f"usage report {link['month']} ({state}) written to {target}", markup=False)


def _last_month() -> str:
    today = datetime.now(UTC)
    return f"{today.year - (today.month == 1):04d}-{12 if today.month == 1 else today.month - 1:02d}"


#: top-level commands of this module (its node subcommands are on `node`)
COMMANDS: tuple[click.Command, ...] = (report_group,)
