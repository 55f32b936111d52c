"""Hints for the common mistakes: the form of `--param` that works, shown under the API's error.

`--param k=v` reads v as JSON when it parses, else as text; so `command=uptime` is the text
"uptime" where the type wants an array, and `partition=3` the number 3 where it wants text.
The API names the parameter and the type it wanted (`$.parameters.command: must be of type
array`); from that and what was given, the hint writes the value the way that works.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any, Final

from fleetrun.cli_session import EXIT_ERROR, Failure, api_details
from fleetrun.client import ApiError

#: `$.parameters.command` or `$.task.parameters.command` (a schedule's task): the parameter's name
_PARAMETER_PATH: Final = re.compile(r"\.parameters(?:\.([A-Za-z_][A-Za-z0-9_]*)|\[(\"(?:[^\"\\]|\\.)*\")\])$")
_WANTED_TYPE: Final = re.compile(r"^must be of type (\w+)")
_EXAMPLES: Final = {"object": '{"key": "value"}', "integer": "30", "number": "1.5", "boolean": "true"}


def with_parameter_hints(error: ApiError, parameters: dict[str, Any]) -> ApiError | Failure:
    """The error to report: the API's own, or with a hint line per mistyped parameter."""
    hints = parameter_hints(error, parameters)
    if not hints:
        return error
    return Failure(f"{error.code}: {error.message}", EXIT_ERROR, (*api_details(error), *hints))


def parameter_hints(error: ApiError, parameters: dict[str, Any]) -> list[str]:
    """`hint: --param 'command=["uptime"]'` for each parameter the API found of the wrong type."""
    if error.code != "validation_error":
        return []
    body = error.body.get("error") if isinstance(error.body.get("error"), dict) else {}
    hints = []
    for detail in (body or {}).get("details") or []:
        if not isinstance(detail, dict):
            continue
        name, wanted = _parameter_name(str(detail.get("path", ""))), _WANTED_TYPE.match(str(detail.get("message")))
        if name is not None and wanted is not None and name in parameters:
            hints.append(f"hint: --param {shlex.quote(f'{name}={working_form(wanted[1], parameters[name])}')}"
                         f" (a JSON {wanted[1]})")
    return hints


def _parameter_name(path: str) -> str | None:
    found = _PARAMETER_PATH.search(path)
    if found is None:
        return None
    return found[1] if found[1] is not None else str(json.loads(found[2]))


def working_form(wanted: str, given: Any) -> str:
    """How to write `given` so that it reads as the JSON type `wanted` (an example when it cannot)."""
    if wanted == "array":
        words = _words(given) if isinstance(given, str) else [given]
        return json.dumps(words, ensure_ascii=False)
    if wanted == "string":
        text = given if isinstance(given, str) else json.dumps(given, ensure_ascii=False)
        return json.dumps(text, ensure_ascii=False)
    return _EXAMPLES.get(wanted, json.dumps(given, ensure_ascii=False))


def _words(text: str) -> list[str]:
    """`uptime -a` → ["uptime", "-a"], as a shell would split it."""
    try:
        return shlex.split(text) or [text]
    except ValueError:  # an unbalanced quote: keep the text whole
        return [text]
