"""`fleetrun submit`: build a `POST /v1/tasks` body from the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from fleetrun.cli_hints import with_parameter_hints
from fleetrun.cli_selectors import label_pairs
from fleetrun.cli_session import Failure, Session, header, pass_session, print_json
from fleetrun.cli_watch import watch
from fleetrun.client import ApiError

_PERCENT = re.compile(r"^\d{1,3}%$")


def parse_param(raw: str) -> tuple[str, Any]:
    """`k=v`: the value as JSON when it parses (numbers, booleans, lists, null), else the text."""
    key, sep, value = raw.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"{raw!r} is not KEY=VALUE", param_hint="--param")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


def parse_max_errors(_ctx: click.Context, _param: click.Parameter, raw: str | None) -> int | str | None:
    if raw is None:
        return None
    if raw.isdigit():
        return int(raw)
    if _PERCENT.match(raw):
        return raw
    raise click.BadParameter(f"{raw!r} is neither a count (3) nor a share of the nodes (10%)")


def read_nodes(path: Path) -> list[str]:
    """One node id per line; blank lines and `#` comments are skipped."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def read_params(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise Failure(f"{path} is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise Failure(f"{path} must hold a JSON object of parameters")
    return value


def build_body(task_type: str, nodes: list[str], parameters: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"type": task_type}
    if nodes:
        body["target_nodes"] = nodes
    if options.get("selector"):
        body["target_selector"] = {"labels": options["selector"]}
    if parameters:
        body["parameters"] = parameters
    if options.get("tags"):
        body["tags"] = list(options["tags"])
    for name in ("name", "priority", "max_concurrency", "max_errors", "concurrency_key", "runner_node",
                 "claim_timeout_seconds"):
        if options.get(name) is not None:  # `schedules create` takes fewer options than `submit`
            body[name] = options[name]
    return body


@click.command()
@click.argument("task_type", metavar="TYPE")
@click.option("-n", "--node", "nodes", multiple=True, metavar="NODE", help="A target node (repeat for more).")
@click.option("--nodes-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Target nodes, one per line (# comments allowed).")
@click.option("-s", "--selector", multiple=True, metavar="KEY=VALUE", callback=label_pairs,
              help="Also every node carrying this label (repeat: all must hold), outside maintenance.")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter; VALUE is read as JSON when it parses (3, true, [\"a\"]), else as text.")
@click.option("--params-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A JSON object of parameters; --param values override it.")
@click.option("--name", help="A human name for the task.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeat for more).")
@click.option("--priority", type=click.IntRange(1, 10), help="1-10, default 5.")
@click.option("--max-concurrency", type=click.IntRange(min=1), help="Node runs in flight at most.")
@click.option("--max-errors", callback=parse_max_errors, metavar="N|P%",
              help="Failed nodes tolerated before nothing more starts: a count or a share like 10%.")
@click.option("--concurrency-key", help="Tasks with the same key run one at a time, in creation order.")
@click.option("--runner-node", metavar="NODE", help="Run every node's work on this node's agent (e.g. a Salt master).")
@click.option("--claim-timeout", "claim_timeout_seconds", type=click.IntRange(30, 86_400), metavar="SECONDS",
              help="A node run nobody claims this long ends timed_out with the reason (default 600).")
@click.option("--idempotency-key", metavar="KEY", help="Submitting again with the same key returns the same task.")
@click.option("-w", "--watch", "follow", is_flag=True, help="Follow the task; exit 0 only if it completes.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the created task as JSON (with --watch: the final task; progress goes to stderr).")
@pass_session
def submit(session: Session, /, task_type: str, nodes: tuple[str, ...], nodes_file: Path | None,
           params: tuple[str, ...], params_file: Path | None, idempotency_key: str | None, follow: bool,
           as_json: bool, **options: Any) -> None:
    """Submit a task of TYPE to nodes; print its id.

    \b
    Examples:
      fleetrun submit shell -n edge-1 -n edge-2 --param 'command=["uptime"]' --watch
      fleetrun submit config.release --nodes-file edges.txt --param website_id=41 \\
          --param origin_set_id=14 --max-errors 10% --idempotency-key release-41
      fleetrun submit iac.plan_apply -n tf-runner --params-file plan.json --watch
      fleetrun submit shell --selector pool=cdn --param 'command=["uptime"]'
    """
    targets = list(nodes) + (read_nodes(nodes_file) if nodes_file else [])
    parameters = read_params(params_file) if params_file else {}
    parameters.update(parse_param(raw) for raw in params)
    body = build_body(task_type, targets, parameters, options)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    api = session.api()
    try:
        _, task, answer_headers = api.request("POST", "/v1/tasks", body, headers=headers)
    except ApiError as error:
        raise with_parameter_hints(error, parameters) from None
    replayed = (header(answer_headers, "Idempotent-Replayed") or "").lower() == "true"
    for warning in task.get("warnings") or []:  # e.g. runners that are not registered nodes
        click.echo(f"warning: {warning['message']}", err=True)
    if not as_json:
        click.echo(task["task_id"] + (" (replayed)" if replayed else ""))
    elif not follow:
        print_json(task)
    if follow:
        # with --json, stdout carries only the final task; the progress goes to stderr
        status = watch(api, task["task_id"], session.err if as_json else session.out)
        if as_json:
            print_json(api.get(f"/v1/tasks/{task['task_id']}"))
        raise SystemExit(status)
