"""Commands on tasks: list, show, node runs, events, watch and the lifecycle actions."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from fleetrun.cli_live import follow_events
from fleetrun.cli_render import event_text, task_details, tasks_table
from fleetrun.cli_runs import runs_view
from fleetrun.cli_session import Session, json_option, json_task_option, pass_session, print_json
from fleetrun.cli_watch import EXIT_INTERRUPTED, last_event_id, watch
from fleetrun.client import Api

TASK_STATUSES = ("pending", "running", "apply_pending", "cancelling", "completed", "partial_failure", "failed",
                 "cancelled", "discarded")
#: filters the service applies to a bounded read per request (a page may come back short or empty
#: with a cursor: API.md, lists): the command follows the cursor to fill a screen
_SPARSE_FILTERS = ("status", "type", "tag")
#: seconds of following the cursor before the command says it is still searching
_PROGRESS_AFTER = 1.0
#: node runs `show` lists without --all (failed first, then running, then the rest)
_SHOWN_RUNS = 30
_wide_option = click.option("--wide", is_flag=True, help="Every column and whole ids, however wide the terminal.")


@click.command("tasks")
@click.option("--status", type=click.Choice(TASK_STATUSES), help="Only tasks in this status.")
@click.option("--type", "task_type", metavar="TYPE", help="Only tasks of this type.")
@click.option("--tag", help="Only tasks carrying this tag.")
@click.option("--owner", help="Only this user's tasks (admins).")
@click.option("--created-after", metavar="RFC3339", help="Only tasks created after, e.g. 2026-11-22T00:00:00Z.")
@click.option("--created-before", metavar="RFC3339", help="Only tasks created before.")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True, help="Tasks per page.")
@click.option("--cursor", help="Continue from the cursor a previous page printed.")
@click.option("--all-pages", is_flag=True, help="Follow the cursor to the last page.")
@_wide_option
@json_option
@pass_session
def tasks_command(session: Session, /, limit: int, cursor: str | None, all_pages: bool, wide: bool, as_json: bool,
                  **filters: Any) -> None:
    """List tasks, newest first.

    On a terminal, ids show as their shortest unique ending (…4XK9QZ) and columns that do not
    fit are left out; --wide shows everything; piped, every value is whole.
    """
    api = session.api()
    query = {"status": filters["status"], "type": filters["task_type"], "tag": filters["tag"],
             "owner": filters["owner"], "created_after": filters["created_after"],
             "created_before": filters["created_before"]}
    if all_pages:
        page: dict[str, Any] = {"items": api.pages("/v1/tasks", limit=limit, **query), "next_cursor": None}
    elif any(query[name] for name in _SPARSE_FILTERS):
        page = _filled_page(session, api, limit, cursor, query)
    else:
        page = api.get("/v1/tasks", limit=limit, cursor=cursor, **query)
    if as_json:
        print_json(page)
        return
    session.out.print(tasks_table(page["items"], session.out, wide=wide) if page["items"] else "no tasks")
    if page.get("next_cursor"):
        session.err.print(f"more: fleetrun tasks --cursor {page['next_cursor']} (or --all-pages)",
                          style="dim", markup=False)


def _filled_page(session: Session, api: Api, limit: int, cursor: str | None, query: dict[str, Any]) -> dict[str, Any]:
    """Up to `limit` matching tasks, following the cursor until they are found or the listing
    ends; the cursor after the last page read (None at the end). Says so on stderr when slow."""
    items: list[Any] = []
    started, reads, status = time.monotonic(), 0, None
    try:
        while True:
            page = api.get("/v1/tasks", limit=limit - len(items), cursor=cursor, **query)
            reads += 1
            items += page["items"]
            cursor = page.get("next_cursor")
            if len(items) >= limit or not cursor:
                return {"items": items, "next_cursor": cursor}
            if status is None and time.monotonic() - started > _PROGRESS_AFTER:
                status = session.err.status("searching older tasks…")
                status.start()
            if status is not None:
                status.update(f"searching older tasks… {len(items)} found in {reads} pages")
    finally:
        if status is not None:
            status.stop()


@click.command()
@click.argument("task_id")
@click.option("--all", "every_run", is_flag=True, help=f"Every node run, not only the first {_SHOWN_RUNS}.")
@_wide_option
@json_option
@pass_session
def show(session: Session, task_id: str, every_run: bool, wide: bool, as_json: bool) -> None:
    """Show a task: details, counts, dispatch, node runs.

    Node runs: a summary by status, then the failed ones, the running ones and the rest.
    """
    api = session.api()
    task = api.get(f"/v1/tasks/{task_id}")
    if as_json:
        print_json(task)
        return
    runs = api.pages(f"/v1/tasks/{task_id}/nodes")
    session.out.print(task_details(task))
    session.out.print()
    limit = None if every_run else _SHOWN_RUNS
    session.out.print(runs_view(task_id, runs, session.out, limit=limit, wide=wide) if runs else "no node runs yet")


@click.command()
@click.argument("task_id")
@_wide_option
@json_option
@pass_session
def runs(session: Session, task_id: str, wide: bool, as_json: bool) -> None:
    """List every node run of a task: failed first, then running, then the rest."""
    items = session.api().pages(f"/v1/tasks/{task_id}/nodes")
    if as_json:
        print_json({"items": items, "next_cursor": None})
    else:
        session.out.print(runs_view(task_id, items, session.out, wide=wide) if items else "no node runs yet")


@click.command()
@click.argument("task_id")
@click.option("-f", "--follow", is_flag=True,
              help="Keep printing new events until the task is terminal (pushed over the WebSocket API when the "
                   "service offers one, else polled every second).")
@click.option("--after", metavar="EVENT_ID", help="Only events after this one.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (JSON Lines).")
@pass_session
def events(session: Session, task_id: str, follow: bool, after: str | None, as_json: bool) -> None:
    """Print a task's event log, oldest first."""
    api = session.api()

    def emit(items: list[dict[str, Any]]) -> None:
        for event in items:
            if as_json:
                click.echo(json.dumps(event, ensure_ascii=False))
            else:
                session.out.print(event_text(event), soft_wrap=True)
        sys.stdout.flush()

    if not follow:
        emit(api.pages(f"/v1/tasks/{task_id}/events", after=after))
        return
    try:
        _follow_events(api, task_id, after, emit)
    except KeyboardInterrupt:
        raise SystemExit(EXIT_INTERRUPTED) from None


def _follow_events(api: Api, task_id: str, after: str | None, emit: Callable[[list[dict[str, Any]]], None]) -> None:
    for items in follow_events(api, task_id, after):  # pushed over the WebSocket API, else polled
        if items:
            emit(items)


@click.command("watch")
@click.argument("task_id")
@click.option("--all", "every_node", is_flag=True, help="A bar for every node, not only those that fit.")
@click.option("--json", "as_json", is_flag=True, help="Progress to stderr; the final task as JSON on stdout.")
@pass_session
def watch_command(session: Session, task_id: str, every_node: bool, as_json: bool) -> None:
    """Follow a task live until it ends.

    Updates are pushed over the WebSocket API that `GET /v1/health` advertises (or
    FLEETRUN_WS_URL; `FLEETRUN_WS_URL=off` polls); without one the task is polled every second.

    Exit status: 0 completed; 1 failed, partial_failure, cancelled or discarded; 3 waiting for
    confirmation (apply_pending); 130 interrupted (the task goes on).
    """
    api = session.api()
    status = watch(api, task_id, session.err if as_json else session.out, every_node=every_node)
    if as_json:
        print_json(api.get(f"/v1/tasks/{task_id}"))
    raise SystemExit(status)


def _act(session: Session, task_id: str, action: str, body: dict[str, Any] | None, follow: bool,
         as_json: bool) -> None:
    api = session.api()
    after = last_event_id(api, task_id) if follow else None
    task = api.post(f"/v1/tasks/{task_id}/{action}", body)
    if as_json and not follow:
        print_json(task)
    elif not as_json:
        attempt = f" (attempt {task['attempt']})" if action == "retry" else ""
        click.echo(f"task {task['task_id']} {task['status']}{attempt}")
    if follow:
        status = watch(api, task_id, session.err if as_json else session.out, after=after)
        if as_json:
            print_json(api.get(f"/v1/tasks/{task_id}"))
        raise SystemExit(status)


_watch_flag = click.option("-w", "--watch", "follow", is_flag=True, help="Then follow the task (like `watch`).")


@click.command()
@click.argument("task_id")
@json_task_option
@pass_session
def cancel(session: Session, task_id: str, as_json: bool) -> None:
    """Cancel a task; running nodes are told to stop."""
    _act(session, task_id, "cancel", None, False, as_json)


@click.command()
@click.argument("task_id")
@click.option("--all", "everything", is_flag=True, help="Run every node again, not only the unsuccessful ones.")
@_watch_flag
@json_task_option
@pass_session
def retry(session: Session, task_id: str, everything: bool, follow: bool, as_json: bool) -> None:
    """Retry a task's unsuccessful nodes (or --all).

    Allowed when the task is failed, partial_failure or cancelled; prints the new status.
    """
    _act(session, task_id, "retry", {"scope": "all" if everything else "failed"}, follow, as_json)


@click.command()
@click.argument("task_id")
@_watch_flag
@json_task_option
@pass_session
def confirm(session: Session, task_id: str, follow: bool, as_json: bool) -> None:
    """Confirm a planned two-phase task: apply it.

    The apply runs on the runner that holds the plan.
    """
    _act(session, task_id, "confirm", None, follow, as_json)


@click.command()
@click.argument("task_id")
@json_task_option
@pass_session
def discard(session: Session, task_id: str, as_json: bool) -> None:
    """Discard a planned two-phase task."""
    _act(session, task_id, "discard", None, False, as_json)


COMMANDS = (tasks_command, show, runs, events, watch_command, cancel, retry, confirm, discard)
