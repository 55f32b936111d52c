"""Validation of JSON documents against the contract's JSON Schemas (Draft 2020-12).

Every problem is reported at once, each with the JSON path of the offending value
(`$.target_nodes[3]`). Messages never quote the rejected value: it may be a secret. The HTTP
edge (`chalicelib/api/validation.py`) and the services that read documents of their own (the
intake queue, task parameters, list filters) all validate here.

Text no store can hold is refused at parse, wherever it sits in a document (keys too): a lone
UTF-16 surrogate (`"\\ud800"` is valid JSON but not encodable as UTF-8, so DynamoDB and S3
writes would fail) and NUL (no argv, environment or C string can carry it). Names, ids, labels
and tags also refuse every other control character (the schemas' `NO_CONTROL_CHARACTERS`);
free text such as parameter values keeps `\\n` and `\\t`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from chalicelib.domain.task_requests import NO_CONTROL_CHARACTERS
from chalicelib.domain.task_types import TaskType
from chalicelib.errors import PayloadTooLarge, ValidationFailed

if TYPE_CHECKING:  # jsonschema (and its metaschema registry) loads with the first validator: a cold
    # start of a function that validates nothing skips ~50-80 ms (bench/coldstart.py)
    from jsonschema import ValidationError
    from jsonschema.protocols import Validator

MAX_BODY_BYTES: Final = 256 * 1024
MAX_PARAMETERS_BYTES: Final = 64 * 1024
#: the years a date may name, anywhere a date is accepted (API.md: "outside years 1970-9999")
FIRST_YEAR: Final = 1970
LAST_YEAR: Final = 9999
_END_OF_LAST_YEAR: Final = datetime(LAST_YEAR, 12, 31, 23, 59, 59, 999999, UTC).timestamp()
#: a timestamp filter after its year (`-11-22T18:07:19.384Z`, any offset), as a JSON Schema pattern fragment
RFC3339_AFTER_YEAR: Final = (
    r"-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_RFC3339: Final = re.compile("[0-9]{4}" + RFC3339_AFTER_YEAR)

Schema = Mapping[str, Any]
Detail = dict[str, str]


def parse_document(schema: Schema, raw_body: bytes | str | None, *, nul_allowed: bool = False) -> dict[str, Any]:
    """The JSON object of a request body or message, valid against `schema`, holding no lone
    surrogate and (unless `nul_allowed`: an agent relaying what a process printed) no NUL.

    An empty body reads as `{}`. Raises PayloadTooLarge over 256 KiB, ValidationFailed otherwise.
    """
    raw = raw_body.encode(errors="surrogatepass") if isinstance(raw_body, str) else (raw_body or b"")
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES}")
    document = _load_object(raw)
    unsafe = unsafe_text(document, "$", nul_allowed=nul_allowed)
    _raise_if_invalid(validator(schema), document, "$", "request body is invalid", unsafe)
    return document


def unsafe_text(document: Any, root: str, *, nul_allowed: bool = False) -> list[Detail]:
    """A problem for every key and string of `document` that holds a lone surrogate or a NUL."""
    refused = _SURROGATE if nul_allowed else _SURROGATE_OR_NUL
    found: list[Detail] = []
    pending: list[tuple[list[int | str], Any]] = [([], document)]
    while pending:  # a loop, not recursion: a body nested as deep as json.loads allows stays safe
        path, value = pending.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if refused.search(key):
                    found.append({"path": _json_path(root, [*path, key]), "message": _unsafe_message(key, "name")})
                pending.append(([*path, key], item))
        elif isinstance(value, list):
            pending.extend(([*path, index], item) for index, item in enumerate(value))
        elif isinstance(value, str) and refused.search(value):
            found.append({"path": _json_path(root, path), "message": _unsafe_message(value, "value")})
    return sorted(found, key=lambda detail: detail["path"])


def _unsafe_message(text: str, what: str) -> str:
    if _SURROGATE.search(text):
        return f"{what} contains a lone UTF-16 surrogate (not encodable as UTF-8)"
    return f"{what} contains a NUL character"


def validate_parameters(task_type: TaskType, parameters: dict[str, Any]) -> None:
    """Check `parameters` against the type's schema; paths start at `$.parameters`.

    Raises PayloadTooLarge over 64 KiB of JSON, ValidationFailed when invalid.
    """
    size = len(json.dumps(parameters, separators=(",", ":"), default=str).encode())
    if size > MAX_PARAMETERS_BYTES:
        raise PayloadTooLarge(f"parameters are {size} bytes of JSON; the limit is {MAX_PARAMETERS_BYTES}")
    validator = _parameters_validator(task_type)
    try:
        _raise_if_invalid(validator, parameters, "$.parameters", f"parameters are invalid for type {task_type.name!r}")
    except RecursionError:  # a defined type's `$ref` cycle that these parameters keep following
        raise ValidationFailed(
            f"parameters cannot be checked against type {task_type.name!r}: its schema refers to itself without end",
            [{"path": "$.parameters", "message": "the type's schema loops on this value"}],
        ) from None


def query_timestamp(name: str, value: str) -> float:
    """The epoch of an RFC 3339 timestamp filter (`2026-11-22T18:07:19Z`, any offset) in the years
    1970-9999 (API.md). Raises ValidationFailed (path `$query.<name>`) for anything else."""
    if _RFC3339.fullmatch(value) is None:
        raise ValidationFailed(f"{name} must be an RFC 3339 timestamp like 2026-11-22T18:07:19Z",
                               [{"path": f"$query.{name}", "message": "not an RFC 3339 timestamp"}])
    try:
        epoch: float | None = datetime.fromisoformat(value.upper().replace("Z", "+00:00")).timestamp()
    except ValueError:  # year 0, February 30th, hour 24, offset +24:00
        epoch = None
    if epoch is None or not 0 <= epoch <= _END_OF_LAST_YEAR:  # an offset can move 1970 or 9999 across the edge
        span = f"{FIRST_YEAR}-{LAST_YEAR}"
        raise ValidationFailed(f"{name} must be a valid time in the years {span} (UTC)",
                               [{"path": f"$query.{name}", "message": f"not a valid time of the years {span} (UTC)"}])
    return epoch


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


# a surrogate code point left in a decoded str is a lone one: json.loads joins valid pairs
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_SURROGATE_OR_NUL: Final = re.compile("[\x00\ud800-\udfff]")


@functools.cache
def _ecma_regex(pattern: str) -> re.Pattern[str]:
    # JSON Schema patterns are ECMA-262: `$` ends the input. Python's `$` also matches before a
    # trailing newline, which would let "edge-12\n" pass as a node id.
    return re.compile(re.sub(r"(?<!\\)\$$", r"\\Z", pattern))


def _pattern(validator: Validator, pattern: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    from jsonschema import ValidationError

    if isinstance(instance, str) and not _ecma_regex(pattern).search(instance):
        yield ValidationError(f"does not match {pattern!r}")


@functools.cache
def _strict_validator() -> Any:
    """Draft 2020-12 with ECMA-262 `pattern`s, built on first use."""
    from jsonschema import Draft202012Validator
    from jsonschema.validators import extend

    return extend(Draft202012Validator, {"pattern": _pattern})


_validators: dict[int, tuple[Schema, Validator]] = {}


def validator(schema: Schema) -> Validator:
    """The validator of `schema`, built once per schema object."""
    cached = _validators.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = _validators[id(schema)] = (schema, _strict_validator()(schema))
    return cached[1]


def _parameters_validator(task_type: TaskType) -> Validator:
    return validator(task_type.parameters_schema)


def _raise_if_invalid(validator: Validator, instance: Any, root: str, message: str,
                      found: list[Detail] | None = None) -> None:
    found = found or []
    known = {detail["path"] for detail in found}  # a NUL in a name also breaks its pattern: say it once
    details = [*found, *(d for d in _details(validator.iter_errors(instance), root) if d["path"] not in known)]
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
    """(path, message) pairs of one error; `required`, unknown fields and bad field names point at
    the field itself."""
    path = list(error.absolute_path)
    instance, schema, value = error.instance, error.schema, error.validator_value
    if list(error.absolute_schema_path)[-2:-1] == ["propertyNames"] and isinstance(instance, str):
        yield [*path, instance], _message(error)  # jsonschema reports a field name at its object
    elif error.validator == "required" and isinstance(instance, dict):
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
    if keyword == "pattern" and value == NO_CONTROL_CHARACTERS:
        return "must not contain control characters"
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
