"""The CLI answers the common mistakes with the form that works, and every read command takes --json."""

from __future__ import annotations

import json
from typing import Any

import click
import pytest

from fleetrun.cli import cli
from fleetrun.cli_hints import parameter_hints, working_form
from fleetrun.client import ApiError
from tests.unit.cli_answers import CannedApi, run


def refusal(*details: dict[str, str]) -> ApiError:
    body = {"error": {"code": "validation_error", "message": "the request is invalid", "details": list(details)}}
    return ApiError(400, "validation_error", "the request is invalid", body)


@pytest.mark.parametrize(("wanted", "given", "form"), [
    ("array", "uptime", '["uptime"]'),
    ("array", "uname -a", '["uname", "-a"]'),
    ("array", 3, "[3]"),
    ("string", 3, '"3"'),
    ("string", True, '"true"'),
    ("object", "user=root", '{"key": "value"}'),
    ("integer", "thirty", "30"),
    ("boolean", "yes", "true"),
])
def test_the_working_form_reads_as_the_type_the_schema_wants(wanted: str, given: Any, form: str) -> None:
    assert working_form(wanted, given) == form
    assert isinstance(json.loads(form), {"array": list, "string": str, "object": dict, "integer": int,
                                         "boolean": bool}[wanted])


def test_a_hint_names_each_mistyped_parameter_and_nothing_else() -> None:
    error = refusal({"path": "$.parameters.command", "message": "must be of type array"},
                    {"path": "$.parameters.partition", "message": "must be of type string"},
                    {"path": "$.parameters.timeout_seconds", "message": "must be >= 1"},
                    {"path": "$.target_nodes", "message": "must be of type array"})
    hints = parameter_hints(error, {"command": "uptime", "partition": 3, "timeout_seconds": 0})
    assert hints == ["hint: --param 'command=[\"uptime\"]' (a JSON array)",
                     "hint: --param 'partition=\"3\"' (a JSON string)"]


def test_a_schedule_task_parameter_gets_the_same_hint() -> None:
    error = refusal({"path": "$.task.parameters.command", "message": "must be of type array"})
    assert parameter_hints(error, {"command": "uptime"}) == ["hint: --param 'command=[\"uptime\"]' (a JSON array)"]


def test_submit_shows_the_form_that_works_under_the_apis_error() -> None:
    # GIVEN an API that refuses `command=uptime` as the shell type does
    api = CannedApi({}, {"/v1/tasks": refusal({"path": "$.parameters.command", "message": "must be of type array"})})
    # WHEN the user submits it
    printed = run(api, "submit", "shell", "-n", "edge-1", "--param", "command=uptime", width=None)
    # THEN the error, its path and the working form are on stderr, exit status 1
    assert printed.exit_code == 1
    assert printed.err.splitlines() == ["error: validation_error: the request is invalid",
                                        "  $.parameters.command: must be of type array",
                                        "  hint: --param 'command=[\"uptime\"]' (a JSON array)"]


#: every command that only reads; each must offer --json
READ_COMMANDS = [("tasks",), ("show",), ("runs",), ("events",), ("watch",), ("stats",), ("task-types",),
                 ("nodes",), ("node", "show"), ("node", "allocations"), ("types", "list"), ("types", "show"),
                 ("agent", "check"), ("schedules", "list"), ("schedules", "show"), ("subscriptions", "list"),
                 ("subscriptions", "show"), ("subscriptions", "deliveries"), ("images",), ("monitor", "snapshot"),
                 ("monitor", "gpu"), ("logs",), ("whoami",)]


@pytest.mark.parametrize("path", READ_COMMANDS, ids=" ".join)
def test_every_read_command_takes_json(path: tuple[str, ...]) -> None:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    assert "--json" in [option for param in command.params for option in param.opts]
