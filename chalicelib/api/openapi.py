"""The OpenAPI 3.1 document served at `GET /v1/openapi.json`, built from `OPERATIONS` and `SCHEMAS`.

Nothing here restates a schema: `components.schemas` holds the very dicts `validation.parse`
validates against, plus each task type's parameter schema from the registry.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

from chalicelib.api.contract import (
    OPERATIONS,
    PATH_PARAMETERS,
    REQUEST_HEADERS,
    RESPONSE_HEADERS,
    Operation,
    QueryParam,
)
from chalicelib.api.errors import header_names
from chalicelib.api.schemas import SCHEMAS, parameters_component, published
from chalicelib.domain.task_requests import NO_CONTROL_CHARACTERS
from chalicelib.domain.task_types import REGISTRY

#: the `code`s each error status carries (API.md, Errors)
ERROR_CODES: Final = {
    400: "validation_error (details list each problem with its JSON path: malformed JSON, a missing, unknown "
         "or invalid field, control characters or lone surrogates, a date outside 1970-9999, a cursor not from "
         "this listing) or unknown_task_type",
    401: "unauthenticated: no or bad credentials",
    403: "forbidden: the role or node token does not allow this",
    404: "not_found: unknown id, or one owned by another user",
    409: "invalid_transition (current_status, allowed_from), conflict, a lost lease, or not_configured",
    413: "payload_too_large: body over 256 KiB or parameters over 64 KiB",
    422: "idempotency_key_reused: same Idempotency-Key, different body",
    429: "rate_limited: too many write requests; see Retry-After",
}
_ROLES: Final = {"read": "viewer, operator or admin", "write": "operator or admin", "admin": "admin"}
#: security requirements by `Operation.auth`; `[]` overrides any default: no credentials
_SECURITY: Final[dict[str, list[dict[str, list[str]]]]] = {
    "none": [],
    "user": [{"userJwt": []}],
    "node": [{"nodeToken": []}],
    "user_or_node": [{"userJwt": []}, {"nodeToken": []}],
}
_SECURITY_SCHEMES: Final = {
    "userJwt": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A user token (Cognito or OIDC; HS256 in local mode) with claims `sub` and `roles`.",
    },
    "nodeToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The node token issued once by POST /v1/nodes; valid only on its own node's agent routes "
                       "and for reading the task type registry (GET /v1/task-types, an agent checking its steps).",
    },
}
_TAGS: Final = [
    {"name": "meta", "description": "Service health and this document"},
    {"name": "tasks", "description": "Tasks, their node runs, events and lifecycle"},
    {"name": "task-types", "description": "The task type registry: built-in types and the types admins define"},
    {"name": "nodes", "description": "Registered nodes"},
    {"name": "agents", "description": "Routes the node agents call with their node token"},
    {"name": "images", "description": "The image catalog synced from Harbor"},
    {"name": "monitoring", "description": "GPU trend from Prometheus and the fleet snapshot"},
]


@functools.cache
def build_openapi(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1.0 document of the API; built once per version, shared: do not mutate it."""
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(operation)
    parameter_schemas = {parameters_component(name): REGISTRY[name].parameters_schema for name in sorted(REGISTRY)}
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "fleetrun API",
            "version": version,
            "description": "Run tasks across a fleet of nodes. Errors are {error: {code, message, ...}}.",
        },
        "tags": _TAGS,
        "paths": paths,
        "components": {
            "schemas": {**published(SCHEMAS), **parameter_schemas},
            "headers": {name: _header(name) for name in RESPONSE_HEADERS},
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }


def schema_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _operation(operation: Operation) -> dict[str, Any]:
    document: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": [operation.tag],
        "security": _SECURITY[operation.auth],
        "parameters": _parameters(operation),
        "responses": _responses(operation),
    }
    if operation.role:
        document["description"] = f"Roles: {_ROLES[operation.role]}."
        if operation.auth == "user_or_node":
            document["description"] += " Agents may read it with their node token."
        document["x-fleetrun-role"] = operation.role
    if operation.request:
        request = SCHEMAS[operation.request]
        document["requestBody"] = {
            # a body is required when it must hold a field (`required`, or at least one of them)
            "required": bool(request.get("required") or request.get("minProperties")),
            "content": {"application/json": {"schema": schema_ref(operation.request)}},
        }
    return document


def _parameters(operation: Operation) -> list[dict[str, Any]]:
    in_path = [
        {"name": name, "in": "path", "required": True, "schema": PATH_PARAMETERS[name]}
        for name in re.findall(r"{(\w+)}", operation.path)
    ]
    in_query = [
        {"name": param.name, "in": "query", "required": param.required, "schema": _query_schema(param.schema),
         "description": param.description}
        for param in operation.query
    ]
    in_header = [
        {"name": name, "in": "header", "required": False, **_header(name, REQUEST_HEADERS)}
        for name in operation.headers
    ]
    return in_path + in_query + in_header


def _query_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema, saying what `check_query` refuses in every value: a free string
    (no enum, no pattern of its own) gets the no-control-characters pattern."""
    if schema.get("type") == "string" and "enum" not in schema and "pattern" not in schema:
        return {**schema, "pattern": NO_CONTROL_CHARACTERS}
    return schema


def _responses(operation: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, schema_name in operation.responses.items():
        headers = list(operation.response_headers.get(status, ()))
        headers.extend(header_names(status))
        description = HTTPStatus(status).phrase
        if status in ERROR_CODES:
            description += f": {ERROR_CODES[status]}"
        response: dict[str, Any] = {
            "description": description,
            "content": {"application/json": {"schema": schema_ref(schema_name)}},
        }
        if headers:
            response["headers"] = {name: {"$ref": f"#/components/headers/{name}"} for name in headers}
        responses[str(status)] = response
    responses["default"] = {
        "description": "internal_error: a bug; the body never carries a stack trace or a secret",
        "content": {"application/json": {"schema": schema_ref("Error")}},
    }
    return responses


def _header(name: str, table: Mapping[str, QueryParam] = RESPONSE_HEADERS) -> dict[str, Any]:
    spec = table[name]
    return {"description": spec.description, "schema": spec.schema}
