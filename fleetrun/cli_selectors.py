"""Label targeting from the command line: `KEY=VALUE` label options, and `fleetrun dispatch`
(make sure nodes have a run in a task: listed ones, or whatever its selector picks now)."""

from __future__ import annotations

import time
from typing import Any

import click

from fleetrun.cli_session import EXIT_USAGE, Failure, Session, json_option, pass_session, print_json


def label_pairs(_ctx: click.Context, _param: click.Parameter, raw: tuple[str, ...]) -> dict[str, str]:
    """The labels of repeated `KEY=VALUE` options (split on the first '=')."""
    labels: dict[str, str] = {}
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE")
        labels[key.strip()] = value
    return labels


def label_query(labels: dict[str, str]) -> list[str]:
    """`GET /v1/nodes?label=` values: `key:value` each."""
    return [f"{key}:{value}" for key, value in sorted(labels.items())]


@click.command("dispatch")
@click.argument("task_id")
@click.option("-n", "--node", "nodes", multiple=True, metavar="NODE", help="A node to add (repeat for more).")
@click.option("--selector", is_flag=True, help="Re-resolve the task's target_selector: runs for new matches.")
@click.option("--wait", is_flag=True, help="When the service creates the runs in chunks (over 100 new nodes), "
                                           "wait until it is done and print the final counts.")
@json_option
@pass_session
def dispatch(session: Session, task_id: str, nodes: tuple[str, ...], selector: bool, wait: bool,
             as_json: bool) -> None:
    """Make sure nodes have a run in a pending or running task.

    Existing runs are skipped, missing ones created; a release reaches the nodes added to its
    pool since it was submitted. Over 100 new nodes, the service creates their runs in chunks
    after answering ("in progress"); `--wait` follows it to the end.

    \b
    Examples:
      fleetrun dispatch 01JD... --selector
      fleetrun dispatch 01JD... -n edge-14 -n edge-15
      fleetrun dispatch 01JD... --selector --wait
    """
    if bool(nodes) == selector:
        raise Failure("give either --node (one or more) or --selector", EXIT_USAGE)
    body = {"selector": True} if selector else {"target_nodes": list(nodes)}
    answer = session.api().post(f"/v1/tasks/{task_id}/dispatch", body)
    if as_json:
        print_json(answer)
        return
    done = answer["dispatch"]
    if done.get("state") != "in_progress":
        session.out.print(f"{task_id}: created {done['created_count']}, skipped {done['skipped_count']} "
                          f"of {done['target_node_count']} node(s)")
        return
    session.out.print(f"{task_id}: dispatch in progress: {done['target_node_count']} node(s) listed, "
                      f"{done['created_count']} created, {done['skipped_count']} skipped so far; "
                      "the service creates the rest in chunks")
    if not wait:
        session.out.print(f"  follow it with: fleetrun dispatch {task_id} ... --wait, or fleetrun show {task_id}")
        return
    final = wait_for_dispatch(session.api(), task_id)
    if final.get("state") == "in_progress":
        raise Failure(f"{task_id}: dispatch still in progress; see fleetrun show {task_id}")
    session.out.print(f"{task_id}: dispatch done: the task has {final.get('created_count', 0)} node run(s) created, "
                      f"{final.get('skipped_count', 0)} skipped, of {final.get('target_node_count', 0)} target(s)")


def wait_for_dispatch(api: Any, task_id: str, timeout: float = 600.0, every: float = 1.0) -> dict[str, Any]:
    """The task's `dispatch` once its state is no longer `in_progress` (or at `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        current: dict[str, Any] = api.get(f"/v1/tasks/{task_id}").get("dispatch") or {}
        if current.get("state") != "in_progress" or time.monotonic() >= deadline:
            return current
        time.sleep(every)


COMMANDS = (dispatch,)
