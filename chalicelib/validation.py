"""Validation of JSON documents against the contract's JSON Schemas (Draft 2020-12).

Every problem is reported at once, each with the JSON path of the offending value
(`$.target_nodes[3]`). Messages never quote the rejected value: it may be a secret. The HTTP
edge (`chalicelib/api/validation.py`) and the services that read documents of their own (the
intake queue, task parameters, list filters) all validate here.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from jsonschema import Draft202012Validator, ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import extend

from chalicelib.domain.task_types import TaskType
from chalicelib.errors import PayloadTooLarge, ValidationFailed

MAX_BODY_BYTES: Final = 256 * 1024
MAX_PARAMETERS_BYTES: Final = 64 * 1024

Schema = Mapping[str, Any]
Detail = dict[str, str]


def parse_document(schema: Schema, raw_body: bytes | str | None) -> dict[str, Any]:
    """The JSON object of a request body or message, valid against `schema`.

    An empty body reads as `{}`. Raises PayloadTooLarge over 256 KiB, ValidationFailed otherwise.
    """
    raw = raw_body.encode() if isinstance(raw_body, str) else (raw_body or b"")
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES}")
    document = _load_object(raw)
    _raise_if_invalid(validator(schema), document, "$", "request body is invalid")
    return document


def validate_parameters(task_type: TaskType, parameters: dict[str, Any]) -> None:
    """Check `parameters` against the type's schema; paths start at `$.parameters`.

    Raises PayloadTooLarge over 64 KiB of JSON, ValidationFailed when invalid.
    """
    size = len(json.dumps(parameters, separators=(",", ":"), default=str).encode())
    if size > MAX_PARAMETERS_BYTES:
        raise PayloadTooLarge(f"parameters are {size} bytes of JSON; the limit is {MAX_PARAMETERS_BYTES}")
    validator = _parameters_validator(task_type)
    _raise_if_invalid(validator, parameters, "$.parameters", f"parameters are invalid for type {task_type.name!r}")


def query_enum(name: str, value: str | None, allowed: Iterable[str]) -> None:
    """Raises ValidationFailed (path `$query.<name>`) when a filter value is not one of `allowed`."""
    options = sorted(allowed)
    if value is not None and value not in options:
        raise ValidationFailed(
            f"{name} must be one of {', '.join(options)}",
            [{"path": f"$query.{name}", "message": f"must be one of {', '.join(options)}"}],
        )


# --- bodies ---------------------------------------------------------------------------------


def _load_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        document = json.loads(raw, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity
        raise ValidationFailed(
            "request body is not valid JSON", [{"path": "$", "message": f"malformed JSON: {_json_problem(exc)}"}]
        ) from None
    except RecursionError:
        raise ValidationFailed(
            "request body is nested too deeply", [{"path": "$", "message": "JSON nested too deeply"}]
        ) from None
    if not isinstance(document, dict):
        raise ValidationFailed(
            "request body must be a JSON object", [{"path": "$", "message": "must be a JSON object"}]
        )
    return document


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_problem(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8"
    return str(exc)


# --- schema validation ----------------------------------------------------------------------


@functools.cache
def _ecma_regex(pattern: str) -> re.Pattern[str]:
    # JSON Schema patterns are ECMA-262: `$` ends the input. Python's `$` also matches before a
    # trailing newline, which would let "edge-12\n" pass as a node id.
    return re.compile(re.sub(r"(?<!\\)\$$", r"\\Z", pattern))


def _pattern(validator: Validator, pattern: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if isinstance(instance, str) and not _ecma_regex(pattern).search(instance):
        yield ValidationError(f"does not match {pattern!r}")


_StrictValidator = extend(Draft202012Validator, {"pattern": _pattern})


_validators: dict[int, tuple[Schema, Validator]] = {}


def validator(schema: Schema) -> Validator:
    """The validator of `schema`, built once per schema object."""
    cached = _validators.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = _validators[id(schema)] = (schema, _StrictValidator(schema))
    return cached[1]


def _parameters_validator(task_type: TaskType) -> Validator:
    return validator(task_type.parameters_schema)


def _raise_if_invalid(validator: Validator, instance: Any, root: str, message: str) -> None:
    details = _details(validator.iter_errors(instance), root)
    if details:
        first = f"{details[0]['path']} {details[0]['message']}"
        more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
        raise ValidationFailed(f"{message}: {first}{more}", details)


def _details(errors: Iterable[ValidationError], root: str) -> list[Detail]:
    found: dict[tuple[tuple[tuple[int, int | str], ...], str], Detail] = {}
    for error in errors:
        for path, text in _problems(error):
            key = tuple((1, part) if isinstance(part, str) else (0, part) for part in path)
            found.setdefault((key, text), {"path": _json_path(root, path), "message": text})
    return [found[key] for key in sorted(found)]


def _problems(error: ValidationError) -> Iterator[tuple[list[int | str], str]]:
    """(path, message) pairs of one error; `required` and unknown fields point at the field itself."""
    path = list(error.absolute_path)
    instance, schema, value = error.instance, error.schema, error.validator_value
    if error.validator == "required" and isinstance(instance, dict):
        for name in value:
            if name not in instance:
                yield [*path, name], "is required"
    elif error.validator == "additionalProperties" and value is False and isinstance(instance, dict):
        known = schema.get("properties", {})
        patterns = [_ecma_regex(p) for p in schema.get("patternProperties", {})]
        for name in instance:
            if name not in known and not any(p.search(name) for p in patterns):
                yield [*path, name], "is not an allowed field"
    elif error.validator == "uniqueItems" and (duplicate := _first_duplicate(instance)) is not None:
        yield [*path, duplicate], "repeats an earlier item"
    else:
        yield path, _message(error)


def _first_duplicate(items: Any) -> int | None:
    seen: set[str] = set()
    for index, item in enumerate(items):
        key = json.dumps(item, sort_keys=True, default=str)
        if key in seen:
            return index
        seen.add(key)
    return None  # JSON-equal but spelled differently, like 1 and 1.0


_MESSAGES: Final = {
    "const": "must be {value}",
    "minLength": "must be at least {value} characters long",
    "maxLength": "must be at most {value} characters long",
    "minItems": "must have at least {value} items",
    "maxItems": "must have at most {value} items",
    "uniqueItems": "must not contain duplicates",
    "minProperties": "must have at least {value} fields",
    "maxProperties": "must have at most {value} fields",
    "minimum": "must be >= {value}",
    "maximum": "must be <= {value}",
    "exclusiveMinimum": "must be > {value}",
    "exclusiveMaximum": "must be < {value}",
    "pattern": "must match {value}",
}


def _message(error: ValidationError) -> str:
    keyword, value = str(error.validator), error.validator_value
    if keyword == "type":
        return "must be of type " + (" or ".join(value) if isinstance(value, list) else str(value))
    if keyword == "enum":
        return "must be one of: " + ", ".join(json.dumps(choice) for choice in value)
    if keyword in ("anyOf", "oneOf"):
        return "must be " + str(error.schema.get("description", "one of the allowed forms"))
    if keyword in _MESSAGES:
        return _MESSAGES[keyword].format(value=json.dumps(value) if keyword == "const" else value)
    return f"fails the {keyword} rule"


def _json_path(root: str, path: Iterable[int | str]) -> str:
    parts = [root]
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            parts.append(f".{part}")
        else:
            parts.append(f"[{json.dumps(part)}]")
    return "".join(parts)
