"""Label targeting from the command line: `KEY=VALUE` label options, and `fleetrun dispatch`
(make sure nodes have a run in a task: listed ones, or whatever its selector picks now)."""

from __future__ import annotations

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
@json_option
@pass_session
def dispatch(session: Session, task_id: str, nodes: tuple[str, ...], selector: bool, as_json: bool) -> None:
    """Make sure nodes have a run in a pending or running task.

    Existing runs are skipped, missing ones created; a release reaches the nodes added to its
    pool since it was submitted.

    \b
    Examples:
      fleetrun dispatch 01JD... --selector
      fleetrun dispatch 01JD... -n edge-14 -n edge-15
    """
    if bool(nodes) == selector:
        raise Failure("give either --node (one or more) or --selector", EXIT_USAGE)
    body = {"selector": True} if selector else {"target_nodes": list(nodes)}
    answer = session.api().post(f"/v1/tasks/{task_id}/dispatch", body)
    if as_json:
        print_json(answer)
        return
    done = answer["dispatch"]
    session.out.print(f"{task_id}: created {done['created_count']}, skipped {done['skipped_count']} "
                      f"of {done['target_node_count']} node(s)")


COMMANDS = (dispatch,)
