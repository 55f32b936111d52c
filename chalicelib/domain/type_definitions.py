"""What an admin's task type definition may be (API.md "Task types you define").

`DEFINITION` is the body's JSON Schema (the HTTP edge checks field types with it); `check`
adds the rules a schema cannot say: the parameter schema is valid Draft 2020-12 with only
local references, at most 64 KiB; the steps are at most 50 path segments, none repeated;
each secret path names a property the schema declares; a two-phase type has apply steps.
Every problem comes back at once, each with its JSON path (`$.parameters_schema.properties.x.$ref`).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from typing import Any, Final

from chalicelib.domain.task_requests import Schema, body, plain_text
from chalicelib.domain.task_types import TaskType
from chalicelib.errors import ValidationFailed

NAME_PATTERN: Final = "^[a-z][a-z0-9_.-]{1,63}$"
STEP_PATTERN: Final = "^[A-Za-z0-9_.-]{1,64}$"
MAX_STEPS: Final = 50
MAX_SCHEMA_BYTES: Final = 64 * 1024
MAX_ATTEMPTS: Final = 10
MAX_RUN_TIMEOUT_SECONDS: Final = 86_400
DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
_REFERENCES: Final = ("$ref", "$dynamicRef")
#: keywords whose values are data, not schemas: a `$ref` inside an `enum` value is a string like any other
_DATA: Final = frozenset({"enum", "const", "default", "examples"})

Detail = dict[str, str]


@functools.cache
def _meta_validator() -> Any:
    """The Draft 2020-12 meta-schema, formats checked too (a `pattern` that is no regex fails here,
    not at submit); jsonschema loads with the first type definition checked, not with every
    function that imports this module (bench/coldstart.py)."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator(Draft202012Validator.META_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)


_STEP: Final[Schema] = {"type": "string", "pattern": STEP_PATTERN, "not": {"enum": [".", ".."]},
                        "description": "one path segment, not . or .."}
_FIELDS: Final[dict[str, Schema]] = {
    "name": {"type": "string", "pattern": NAME_PATTERN, "description": "may not be the name of a built-in type"},
    "description": plain_text(0, 1024),
    "steps": {"type": "array", "items": _STEP, "minItems": 1, "maxItems": MAX_STEPS, "uniqueItems": True,
              "description": "run in order by the agent as <steps-dir>/<name>/<step>; with apply_steps at most 50"},
    "apply_steps": {"type": "array", "items": _STEP, "maxItems": MAX_STEPS - 1, "uniqueItems": True, "default": [],
                    "description": "the steps after confirm; required by, and only for, requires_confirmation"},
    "parameters_schema": {"type": "object", "required": ["type"], "properties": {"type": {"const": "object"}},
                          "description": "JSON Schema (Draft 2020-12) of an object; local $ref only; at most 64 KiB"},
    "secret_parameters": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 1024},
                          "maxItems": 100, "uniqueItems": True, "default": [],
                          "description": "dotted paths of properties the schema declares (`credentials.password`)"},
    "requires_confirmation": {"type": "boolean", "default": False},
    "default_max_concurrency": {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 50},
    "max_attempts": {"type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS, "default": 3},
    "run_timeout_seconds": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_RUN_TIMEOUT_SECONDS,
                            "default": None,
                            "description": "how long the agent lets a run's steps take in all (null: its default)"},
}
#: the body of `POST /v1/task-types`
DEFINITION: Final[Schema] = body(_FIELDS, required=("name", "steps", "parameters_schema"),
                                 description="A task type: its steps and the JSON Schema of its parameters.")
#: the body of `PUT /v1/task-types/{name}`: the same, the name optional (it must be the path's)
NEW_VERSION: Final[Schema] = body(_FIELDS, required=("steps", "parameters_schema"),
                                  description="The next version of a task type; `name`, if given, is the path's.")


def task_type(definition: dict[str, Any], version: int) -> TaskType:
    """The agent-executed TaskType a checked definition describes, as version `version`."""
    return TaskType(
        name=definition["name"], description=definition.get("description", ""),
        steps=tuple(definition["steps"]), apply_steps=tuple(definition.get("apply_steps", ())),
        parameters_schema=definition["parameters_schema"],
        secret_parameters=frozenset(definition.get("secret_parameters", ())),
        requires_confirmation=definition.get("requires_confirmation", False),
        default_max_concurrency=definition.get("default_max_concurrency", 50),
        max_attempts=definition.get("max_attempts", 3),
        run_timeout_seconds=definition.get("run_timeout_seconds"),
        version=version, builtin=False,
    )


def check(definition: dict[str, Any]) -> None:
    """Raises ValidationFailed listing every rule of a schema-valid definition it breaks."""
    problems = [*_step_problems(definition), *_schema_problems(definition.get("parameters_schema", {}))]
    if not problems:  # secret paths are read through the schema, so only once it is sound
        problems.extend(_secret_problems(definition))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValidationFailed(f"the task type is invalid: {problems[0]['path']} {problems[0]['message']}{more}",
                               problems)


# --- steps ----------------------------------------------------------------------------------


def _step_problems(definition: dict[str, Any]) -> Iterator[Detail]:
    steps, apply_steps = definition.get("steps", []), definition.get("apply_steps", [])
    named = [("steps", i, s) for i, s in enumerate(steps)] + [("apply_steps", i, s) for i, s in enumerate(apply_steps)]
    seen: set[str] = set()
    for position, (field, index, step) in enumerate(named):
        path = f"$.{field}[{index}]"
        if position == MAX_STEPS:
            yield {"path": path, "message": f"one step too many: a type has at most {MAX_STEPS} steps in all"}
        if step in (".", ".."):
            yield {"path": path, "message": "must be one path segment, not . or .."}
        elif step in seen:
            yield {"path": path, "message": "repeats an earlier step (each step is its own executable)"}
        seen.add(step)
    if definition.get("requires_confirmation") and not apply_steps:
        yield {"path": "$.apply_steps", "message": "required when requires_confirmation is true (steps after confirm)"}
    if apply_steps and not definition.get("requires_confirmation"):
        yield {"path": "$.apply_steps", "message": "only for types with requires_confirmation true"}


# --- the parameter schema -------------------------------------------------------------------


def _schema_problems(schema: dict[str, Any]) -> list[Detail]:
    root = "$.parameters_schema"
    size = len(json.dumps(schema, separators=(",", ":")).encode())
    if size > MAX_SCHEMA_BYTES:
        return [{"path": root, "message": f"is {size} bytes of JSON; the limit is {MAX_SCHEMA_BYTES}"}]
    if schema.get("$schema", DIALECT) != DIALECT:
        return [{"path": f"{root}.$schema", "message": f"must be {DIALECT} (or left out)"}]
    problems = [{"path": _path(root, error.absolute_path), "message": f"is not valid JSON Schema: {error.message}"}
                for error in _meta_validator().iter_errors(schema)]
    if problems:
        return sorted(problems, key=lambda p: p["path"])
    if schema.get("type") != "object":
        problems.append({"path": f"{root}.type", "message": 'must be "object": parameters are a JSON object'})
    anchors = {value for _, key, value in _keywords(schema, []) if key in ("$anchor", "$dynamicAnchor")}
    for where, key, value in _keywords(schema, []):
        if key == "$id":
            problems.append({"path": _path(root, [*where, key]),
                             "message": "not allowed: the schema has no base URI, so references stay local"})
        elif key in _REFERENCES and isinstance(value, str) and not _resolves(schema, value, anchors):
            problems.append({"path": _path(root, [*where, key]), "message": _reference_problem(value)})
    if not problems and _loops(schema):
        problems.append({"path": root, "message": "refers to itself without end (a $ref cycle that reads no value)"})
    return problems


def _loops(schema: dict[str, Any]) -> bool:
    """Whether validating even `{}` never ends (`{"$ref": "#"}`): it would fail every submit."""
    from jsonschema import Draft202012Validator

    try:
        Draft202012Validator(schema).is_valid({})
    except RecursionError:
        return True
    except Exception:  # an unresolvable reference: reported with its path below
        return False
    return False


def _reference_problem(reference: str) -> str:
    if not reference.startswith("#"):
        return "must be a local reference (starting with #): remote references are never fetched"
    return "does not point at any part of this schema"


def _resolves(schema: dict[str, Any], reference: str, anchors: set[Any]) -> bool:
    if not reference.startswith("#"):
        return False
    fragment = reference[1:]
    if not fragment.startswith("/"):
        return fragment == "" or fragment in anchors
    return _pointer(schema, fragment) is not None


def _pointer(schema: Any, pointer: str) -> Any:
    """The part of `schema` a JSON Pointer (`/$defs/cred`) names, or None."""
    current = schema
    for raw in pointer.split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list) and token.isdigit() and int(token) < len(current):
            current = current[int(token)]
        else:
            return None
    return current


def _keywords(value: Any, path: list[int | str]) -> Iterator[tuple[list[int | str], str, Any]]:
    """(where, key, value) of every key of every object inside a schema, the names of
    `properties` (data, not keywords) left out."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield path, key, item
            if key in _DATA:
                continue
            if key in ("properties", "patternProperties", "$defs", "dependentSchemas") and isinstance(item, dict):
                for name, sub in item.items():
                    yield from _keywords(sub, [*path, key, name])
            else:
                yield from _keywords(item, [*path, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _keywords(item, [*path, index])


# --- secret paths ---------------------------------------------------------------------------


def _secret_problems(definition: dict[str, Any]) -> Iterator[Detail]:
    schema = definition["parameters_schema"]
    for index, secret in enumerate(definition.get("secret_parameters", [])):
        undeclared = _undeclared(schema, secret)
        if undeclared is not None:
            yield {"path": f"$.secret_parameters[{index}]", "message": undeclared}


def _undeclared(schema: dict[str, Any], dotted: str) -> str | None:
    """Why the schema does not declare the property at `dotted`, or None when it does."""
    current: Any = schema
    walked: list[str] = []
    for name in dotted.split("."):
        current = _dereferenced(schema, current)
        properties = current.get("properties") if isinstance(current, dict) else None
        if not isinstance(properties, dict) or name not in properties:
            where = ".".join(walked) or "the top level"
            return f"the schema declares no property {name!r} at {where} (through `properties`)"
        current, walked = properties[name], [*walked, name]
    return None


def _dereferenced(schema: dict[str, Any], part: Any) -> Any:
    """`part`, or what its local `$ref` points at when it is only a reference."""
    for _ in range(8):  # a chain of references, bounded: a cycle declares nothing
        if not (isinstance(part, dict) and "properties" not in part and isinstance(part.get("$ref"), str)):
            return part
        reference = part["$ref"]
        part = _pointer(schema, reference[1:]) if reference.startswith("#/") else None
    return part


def _path(root: str, parts: Any) -> str:
    path = root
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", part):
            path += f".{part}"
        else:
            path += f"[{json.dumps(part)}]"
    return path
