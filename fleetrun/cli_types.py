"""`fleetrun types`: define, version, show and retire task types; `fleetrun agent check`: can
this node's steps directory run them?

A definition file is YAML or JSON (JSON is read as JSON, anything else as YAML): the body of
`POST /v1/task-types`. The list fits the terminal (see cli_table); the `agent check` report fits
80 columns.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import yaml

from fleetrun.cli_session import EXIT_ERROR, EXIT_USAGE, Failure, Session, json_option, pass_session, print_json
from fleetrun.cli_table import Column, render
from fleetrun.client import Api

WIDTH = 80


@click.group("types", invoke_without_command=True)
@click.pass_context
def types_group(ctx: click.Context) -> None:
    """Task types: list them, define your own from a file, make new versions, retire them.

    \b
    Examples:
      fleetrun types
      fleetrun types create -f cdn-purge.yaml
      fleetrun types update -f cdn-purge.yaml
      fleetrun types show cdn.purge
      fleetrun types retire cdn.purge
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_types)


TYPE_COLUMNS = (
    Column("name"), Column("description", priority=1, min_width=24, overflow="wrap"),
    Column("steps", priority=2, min_width=10, overflow="wrap"), Column("version", priority=3, justify="right"),
    Column("kind", priority=4),
)


@types_group.command("list")
@click.option("--wide", is_flag=True, help="Every column, however wide the terminal.")
@json_option
@pass_session
def list_types(session: Session, wide: bool, as_json: bool) -> None:
    """List the built-in and defined task types (latest versions)."""
    items = session.api().pages("/v1/task-types")
    if as_json:
        print_json({"items": items, "next_cursor": None})
        return
    rows = [(t["name"], t.get("description") or "", " ".join([*t.get("steps", []), *t.get("apply_steps", [])]),
             str(t.get("version", 1)), "built-in" if t.get("builtin", True) else "defined")
            for t in items]
    session.out.print(render(TYPE_COLUMNS, rows, session.out, wide=wide))


@types_group.command("show")
@click.argument("name")
@json_option
@pass_session
def show_type(session: Session, name: str, as_json: bool) -> None:
    """Show one task type as YAML (a file `types update -f` takes, once the derived fields go)."""
    found = session.api().get(f"/v1/task-types/{name}")
    if as_json:
        print_json(found)
    else:
        click.echo(yaml.safe_dump(found, sort_keys=False, allow_unicode=True).rstrip())


@types_group.command("create")
@click.option("-f", "--file", "path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The definition: YAML or JSON (the body of POST /v1/task-types).")
@json_option
@pass_session
def create_type(session: Session, path: Path, as_json: bool) -> None:
    """Define a task type from a file (admin); a retired name comes back as its next version."""
    created = session.api().post("/v1/task-types", read_definition(path))
    _report(created, "defined", as_json)


@types_group.command("update")
@click.option("-f", "--file", "path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The new definition: YAML or JSON, `name` naming the type.")
@json_option
@pass_session
def update_type(session: Session, path: Path, as_json: bool) -> None:
    """Make the next version of a task type from a file (admin); tasks already created keep theirs."""
    definition = read_definition(path)
    name = definition.get("name")
    if not isinstance(name, str) or not name:
        raise Failure(f"{path}: the definition needs a `name` (the type to update)", EXIT_USAGE)
    updated = session.api().request("PUT", f"/v1/task-types/{name}", definition)[1]
    _report(updated, "updated to", as_json)


@types_group.command("retire")
@click.argument("name")
@json_option
@pass_session
def retire_type(session: Session, name: str, as_json: bool) -> None:
    """Retire a task type (admin): new tasks of it are refused, existing ones run on."""
    retired = session.api().request("DELETE", f"/v1/task-types/{name}")[1]
    if as_json:
        print_json(retired)
    else:
        click.echo(f"retired {retired['name']} (version {retired['version']}); existing tasks run on")


def _report(task_type: dict[str, Any], verb: str, as_json: bool) -> None:
    if as_json:
        print_json(task_type)
    else:
        click.echo(f"{task_type['name']} {verb} version {task_type['version']}: steps "
                   + " → ".join([*task_type["steps"], *task_type.get("apply_steps", [])]))


def read_definition(path: Path) -> dict[str, Any]:
    """The definition in a YAML or JSON file. Raises Failure (usage) when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
        document = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except OSError as error:
        raise Failure(f"cannot read {path}: {error.strerror or error}", EXIT_USAGE) from None
    except (ValueError, yaml.YAMLError) as error:
        raise Failure(f"{path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {error}",
                      EXIT_USAGE) from None
    if not isinstance(document, dict):
        raise Failure(f"{path}: a definition is a mapping (name, steps, parameters_schema, ...)", EXIT_USAGE)
    return document


# --- fleetrun agent check ---------------------------------------------------------------------


@click.command("check")
@click.option("--steps-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The agent's steps directory: <dir>/<type>/<step>.")
@click.option("--api", "api_url", metavar="URL", help="The fleetrun API  [default: the configured URL]")
@click.option("--token", envvar="FLEETRUN_NODE_TOKEN", metavar="TOKEN",
              help="A node token ($FLEETRUN_NODE_TOKEN); without one, the `fleetrun login` user's token.")
@click.option("--json", "as_json", is_flag=True, help="Every type and step with its state, as JSON.")
@pass_session
def agent_check(session: Session, steps_dir: Path, api_url: str | None, token: str | None, as_json: bool) -> None:
    """List every task type and step the agent may be given, and whether STEPS_DIR can run it.

    Exit status 0 when every step is runnable, 1 when one is missing or not executable.
    A node token may read the registry, so this works on a node with only its agent's token.
    """
    api = _check_api(session, api_url, token)
    types = [t for t in api.pages("/v1/task-types") if t.get("executor", "agent") == "agent"]
    rows, missing = [], 0
    for task_type in types:
        for step in [*task_type.get("steps", []), *task_type.get("apply_steps", [])]:
            state = step_state(steps_dir, task_type["name"], step)
            missing += state != "ok"
            rows.append((task_type["name"], step, state))
    steps = len(rows)
    if as_json:
        print_json({"steps": [{"type": t, "step": s, "status": state} for t, s, state in rows], "missing": missing})
        raise SystemExit(EXIT_ERROR if missing else 0)
    click.echo(table(("TYPE", "STEP", "STATUS"), rows))
    if missing:
        click.echo(f"{missing} of {steps} steps cannot run from --steps-dir")
        raise SystemExit(EXIT_ERROR)
    click.echo(f"all {steps} steps of {len(types)} types can run from --steps-dir")


def _check_api(session: Session, api_url: str | None, token: str | None) -> Api:
    if token:
        url = api_url or session.connection().url
        if not url:
            raise Failure("no API URL: pass --api URL (or run `fleetrun login`)", EXIT_USAGE)
        return Api(url, token)
    api = session.api()
    return Api(api_url, api.token) if api_url else api


def step_state(steps_dir: Path, task_type: str, step: str) -> str:
    """`ok`, `missing` or `not executable`: what the agent would find at <dir>/<type>/<step>."""
    path = steps_dir / task_type / step
    if not path.is_file():
        return "missing"
    return "ok" if os.access(path, os.X_OK) else "not executable"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain columns within 80 characters: every column as wide as it needs, the widest cut with …"""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    while sum(widths) + 2 * (len(widths) - 1) > WIDTH:
        widest = widths.index(max(widths))
        widths[widest] -= 1
    lines = [headers, *rows]
    return "\n".join("  ".join(_cell(value, width) for value, width in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def _cell(value: str, width: int) -> str:
    return value.ljust(width) if len(value) <= width else value[:width - 1] + "…"
