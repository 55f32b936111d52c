"""What a task request may contain, as JSON Schemas (Draft 2020-12): the one definition that
`POST /v1/tasks`, schedules and the SQS intake queue accept.

The intake queue validates its messages against these (`chalicelib/validation.py`);
`chalicelib/api/schemas.py` publishes them, with the HTTP request schemas, in OpenAPI.
Request documents reject unknown fields (`additionalProperties: false`); `default` documents
what the service assumes for a missing field.
"""

from __future__ import annotations

from typing import Any, Final

from chalicelib.domain import claim_deadlines
from chalicelib.domain.selectors import MAX_LABELS

Schema = dict[str, Any]

#: node ids everywhere: target nodes, runners, agents
NODE_ID: Final[Schema] = {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}
MAX_TARGET_NODES: Final = 10_000
#: `max_errors`: a node count or a share of the targets (submit also holds a count to the target count)
MAX_ERRORS: Final[Schema] = {
    "description": 'an integer from 0 to the number of target nodes, or a percentage string from "0%" to "100%"',
    "anyOf": [
        {"type": "integer", "minimum": 0, "maximum": MAX_TARGET_NODES},
        {"type": "string", "pattern": "^(100|[1-9]?[0-9])%$"},
    ],
}
TARGET_NODES: Final[Schema] = {
    "type": "array",
    "items": NODE_ID,
    "minItems": 1,
    "maxItems": MAX_TARGET_NODES,
    "uniqueItems": True,
}
#: the `pattern` of names, ids, labels and tags: no control character (C0, DEL, C1). NUL and lone
#: surrogates are refused in every string at parse (chalicelib/validation.py)
NO_CONTROL_CHARACTERS: Final = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"


def plain_text(min_length: int, max_length: int, description: str = "") -> Schema:
    """A name, id, label or tag: a string of `min_length`-`max_length` characters, none a control character."""
    schema: Schema = {"type": "string", "minLength": min_length, "maxLength": max_length,
                      "pattern": NO_CONTROL_CHARACTERS}
    if description:
        schema["description"] = description
    return schema


def nullable(schema: Schema) -> Schema:
    """The same schema, also accepting `null` (OpenAPI 3.1 style: a type list, no `nullable`)."""
    return {**schema, "type": [schema["type"], "null"]}


def body(properties: dict[str, Schema], required: tuple[str, ...] = (), description: str = "") -> Schema:
    """A request document: only the listed fields, `required` ones present."""
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    if description:
        schema["description"] = description
    return schema


#: `target_selector`: label pairs every picked node holds (the rules of a node's labels)
TARGET_SELECTOR: Final[Schema] = body(
    {
        "labels": {
            "type": "object", "minProperties": 1, "maxProperties": MAX_LABELS,
            "propertyNames": plain_text(1, 128), "additionalProperties": plain_text(0, 256),
        },
    },
    required=("labels",),
    description=(
        "every registered node whose labels include all of these pairs, resolved from the label index; nodes "
        "in maintenance are left out; together with target_nodes: the union (given nodes first)"
    ),
)

#: a task request (the body of `POST /v1/tasks`); the api adds the parameter schemas to its description
TASK_REQUEST: Final[Schema] = body(
    {
        "type": plain_text(1, 128, "a name from GET /v1/task-types"),
        "name": plain_text(0, 256),
        "target_nodes": {
            **TARGET_NODES,
            "description": "required for agent-executed types; omitted for types the service runs itself",
        },
        "parameters": {"type": "object", "description": "validated against the JSON Schema of `type`"},
        "tags": {"type": "array", "items": plain_text(1, 64), "maxItems": 20},
        "priority": {"type": "integer", "minimum": 1, "maximum": 10, "default": 5},
        "max_concurrency": {
            "type": "integer",
            "minimum": 1,
            "maximum": 10_000,
            "description": "default: the type's default_max_concurrency",
        },
        "max_errors": {**MAX_ERRORS, "default": 0},
        "concurrency_key": nullable(plain_text(1, 256)),
        "runner_node": {**nullable(NODE_ID), "description": "a delegate that runs every node run of the task"},
        "target_selector": TARGET_SELECTOR,
        "claim_timeout_seconds": {
            "type": "integer", "minimum": claim_deadlines.MIN_SECONDS, "maximum": claim_deadlines.MAX_SECONDS,
            "default": claim_deadlines.DEFAULT_SECONDS,
            "description": "a node run nobody claims this long after it became claimable ends timed_out",
        },
    },
    required=("type",),
)

_OWNER: Final[Schema] = plain_text(1, 128)
#: also the `Idempotency-Key` header of POST /v1/tasks
IDEMPOTENCY_KEY: Final[Schema] = plain_text(1, 128)
_SCHEDULE_ID: Final[Schema] = {"type": "string", "pattern": "^[0-9A-HJKMNP-TV-Z]{26}$"}

INTAKE_MESSAGE: Final[Schema] = body(
    {
        **TASK_REQUEST["properties"],
        "owner": {**_OWNER, "description": "the task's owner: one of FLEETRUN_INTAKE_PRODUCERS"},
        "idempotency_key": {**IDEMPOTENCY_KEY, "description": "as the Idempotency-Key header of POST /v1/tasks"},
    },
    required=("type", "owner", "idempotency_key"),
    description=(
        "The body of a message on the SQS intake queue: a POST /v1/tasks body plus `owner` and "
        "`idempotency_key`. An invalid message goes to the intake dead-letter queue with the error as the "
        "message attributes `fleetrun-error-code` and `fleetrun-error`."
    ),
)

SCHEDULE_FIRING: Final[Schema] = body(
    {
        "schedule_id": _SCHEDULE_ID,
        "scheduled_time": {"type": "string", "minLength": 1, "maxLength": 64},
    },
    required=("schedule_id", "scheduled_time"),
    description=(
        "What EventBridge Scheduler (or the local scheduler) puts on the intake queue for each firing of a "
        "schedule; the task is idempotent on (schedule_id, scheduled_time)."
    ),
)
