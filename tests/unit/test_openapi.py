"""The OpenAPI document: valid OpenAPI 3.1, complete, and built from the schemas validation uses."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from chalicelib.api.contract import OPERATIONS, Operation
from chalicelib.api.openapi import build_openapi
from chalicelib.api.schemas import SCHEMAS, parameters_component
from chalicelib.api.validation import request_validator
from chalicelib.domain.task_requests import NO_CONTROL_CHARACTERS
from chalicelib.domain.task_types import REGISTRY

#: request schemas the document shows with the rules of types and channels added (schemas.published)
PUBLISHED_WITH_TYPE_VARIANTS = frozenset({"CreateTaskRequest", "CreateScheduleRequest", "CreateSubscriptionRequest"})


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_openapi("1.2.3")


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for token in ref[2:].split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def operation_in(document: dict[str, Any], operation: Operation) -> dict[str, Any]:
    found: dict[str, Any] = document["paths"][operation.path][operation.method.lower()]
    return found


def test_is_valid_openapi_3_1(document):
    validate(document)
    assert document["openapi"] == "3.1.0"
    assert document["info"]["version"] == "1.2.3"


def test_is_plain_json(document):
    assert json.loads(json.dumps(document)) == document


def test_is_built_once_per_version():
    assert build_openapi("1.2.3") is build_openapi("1.2.3")


def test_every_operation_appears_once(document):
    ids = [operation.operation_id for operation in OPERATIONS]
    assert len(ids) == len(set(ids))
    for operation in OPERATIONS:
        assert operation_in(document, operation)["operationId"] == operation.operation_id
    in_document = [op for methods in document["paths"].values() for op in methods.values()]
    assert len(in_document) == len(OPERATIONS)


def test_every_ref_resolves(document):
    found = set(refs(document))
    assert "#/components/schemas/CreateTaskRequest" in found
    for ref in found:
        assert resolve(document, ref) is not None


def test_request_schemas_are_the_ones_parse_uses(document):
    schemas = document["components"]["schemas"]
    requests = {operation.request for operation in OPERATIONS if operation.request}
    assert requests
    for operation in OPERATIONS:
        if operation.request:
            body = operation_in(document, operation)["requestBody"]["content"]["application/json"]["schema"]
            assert resolve(document, body["$ref"]) is schemas[operation.request]
    for name in requests - PUBLISHED_WITH_TYPE_VARIANTS:
        assert schemas[name] is SCHEMAS[name] is request_validator(name).schema
        assert json.loads(json.dumps(document))["components"]["schemas"][name] == SCHEMAS[name]


def test_a_task_request_is_published_as_one_of_the_types_and_validated_as_the_common_fields(document):
    # the document adds the per-type variants; parse validates the rest and submit the type
    task = document["components"]["schemas"]["CreateTaskRequest"]
    assert {key: value for key, value in task.items() if key != "oneOf"} == SCHEMAS["CreateTaskRequest"]
    assert request_validator("CreateTaskRequest").schema is SCHEMAS["CreateTaskRequest"]
    *builtins, defined = task["oneOf"]
    assert [variant["properties"]["type"]["const"] for variant in builtins] == sorted(REGISTRY)
    assert defined["properties"]["type"] == {"not": {"enum": sorted(REGISTRY)}}  # a type defined through the API
    schedule = document["components"]["schemas"]["CreateScheduleRequest"]
    assert schedule["properties"]["task"]["oneOf"] == task["oneOf"]
    for variant in builtins:
        assert resolve(document, variant["properties"]["parameters"]["$ref"]) == REGISTRY[
            variant["properties"]["type"]["const"]].parameters_schema


def test_every_schema_is_draft_2020_12(document):
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_task_type_parameters_are_components_named_in_create_task(document):
    schemas = document["components"]["schemas"]
    for name, task_type in REGISTRY.items():
        component = parameters_component(name)
        assert "." not in component
        assert schemas[component] is task_type.parameters_schema
        assert f"#/components/schemas/{component}" in schemas["CreateTaskRequest"]["description"]


def test_create_task_headers(document):
    create = next(operation for operation in OPERATIONS if operation.operation_id == "createTask")
    found = operation_in(document, create)
    assert "Location" in found["responses"]["202"]["headers"]
    assert "Idempotent-Replayed" in found["responses"]["200"]["headers"]
    assert {"name": "Idempotency-Key", "in": "header"}.items() <= found["parameters"][0].items()


def test_every_429_carries_retry_after_and_every_error_is_an_error(document):
    for operation in OPERATIONS:
        responses = operation_in(document, operation)["responses"]
        for status, response in responses.items():
            if status == "default" or int(status) >= 400:
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
        if "429" in responses:
            assert "Retry-After" in responses["429"]["headers"]


def test_every_operation_that_reads_a_query_a_header_or_a_body_documents_400(document):
    # control characters, lone surrogates, bad dates and foreign cursors are 400 wherever input is read
    for operation in OPERATIONS:
        if operation.query or operation.headers or operation.request:
            assert "400" in operation_in(document, operation)["responses"], operation.operation_id


def test_cursors_are_documented_as_signed_and_bound_to_their_listing(document):
    paged = [op for op in OPERATIONS if any(param.name == "cursor" for param in op.query)]
    assert paged
    for operation in paged:
        (cursor,) = [p for p in operation_in(document, operation)["parameters"] if p["name"] == "cursor"]
        assert "signed" in cursor["description"]
        assert "route, filters and user" in cursor["description"]


def test_every_free_string_query_parameter_documents_that_control_characters_are_refused(document):
    no_control = re.compile(NO_CONTROL_CHARACTERS)
    for operation in OPERATIONS:
        for parameter in operation_in(document, operation)["parameters"]:
            schema = parameter["schema"]
            if parameter["in"] == "query" and schema.get("type") == "string" and "enum" not in schema:
                assert "pattern" in schema, (operation.operation_id, parameter["name"])
                assert not re.search(schema["pattern"].replace("$", "\\Z"), "tag\x01"), parameter["name"]
    assert [text for text in ("cdn", "cd\tn", "\x00", "\x9b") if no_control.search(text)] == ["cdn"]


def test_created_filters_document_the_years_1970_to_9999(document):
    tasks = next(operation for operation in OPERATIONS if operation.operation_id == "listTasks")
    for parameter in operation_in(document, tasks)["parameters"]:
        if parameter["name"] in ("created_after", "created_before"):
            pattern = re.compile(parameter["schema"]["pattern"])
            moments = ("1969-12-31T00:00:00Z", "0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z")
            assert [m for m in moments if pattern.fullmatch(m)] == ["1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z"]


def test_the_usage_report_month_is_required_and_in_1970_to_9999(document):
    usage = next(operation for operation in OPERATIONS if operation.operation_id == "getUsageReport")
    (month,) = [p for p in operation_in(document, usage)["parameters"] if p["name"] == "month"]
    assert month["required"] is True
    pattern = re.compile(month["schema"]["pattern"])
    assert [m for m in ("1970-01", "2026-11", "9999-12") if pattern.fullmatch(m)] == ["1970-01", "2026-11", "9999-12"]
    assert [m for m in ("0000-01", "1969-12", "2026-13", "2026-00") if pattern.fullmatch(m)] == []


def test_security_follows_auth(document):
    schemes = document["components"]["securitySchemes"]
    assert schemes["userJwt"]["bearerFormat"] == "JWT"
    assert schemes["nodeToken"]["scheme"] == "bearer"
    expected: dict[str, list[dict[str, list[str]]]] = {
        "none": [],
        "user": [{"userJwt": []}],
        "node": [{"nodeToken": []}],
        "user_or_node": [{"userJwt": []}, {"nodeToken": []}],  # the task type registry: agents read it too
    }
    for operation in OPERATIONS:
        assert operation_in(document, operation)["security"] == expected[operation.auth]


def test_api_md_examples_match_the_response_schemas():
    # GIVEN the Task and Statistics examples of API.md
    at = "2026-11-22T18:07:19.384Z"
    task = {
        "task_id": "01JD", "type": "config.release", "type_version": 1, "name": "release", "owner": "alice",
        "status": "running", "stage": "apply_config", "progress": 50, "target_nodes": ["edge-12", "edge-13"],
        "parameters": {"website_id": 41}, "tags": ["cdn"], "priority": 5, "max_concurrency": 10,
        "max_errors": 0, "concurrency_key": None, "runner_node": None, "attempt": 1,
        "claim_timeout_seconds": 600, "waiting_for": None, "target_selector": None,
        "node_counts": {
            "pending": 0, "running": 1, "apply_pending": 0, "succeeded": 1, "failed": 0, "cancelled": 0,
            "timed_out": 0,
        },
        "dispatch": {"triggered": True, "target_node_count": 2, "created_count": 2, "skipped_count": 0},
        "error_message": None, "created_at": at, "started_at": at, "completed_at": None, "updated_at": at,
        "revision": 7,
    }  # fmt: skip
    statistics = {
        "total_tasks": 120,
        "by_status": {
            "pending": 1, "running": 2, "apply_pending": 0, "cancelling": 0, "completed": 100,
            "partial_failure": 5, "failed": 10, "cancelled": 2, "discarded": 0,
        },
        "running_tasks": 2, "completed_tasks": 100, "failed_tasks": 10,
        "type_stats": {"config.release": 80, "slurm.scale_up": 40},
        "success_rate": 86.96, "avg_duration_seconds": 42.5,
        "node_runs": {"succeeded": 900, "failed": 30, "timed_out": 2, "cancelled": 8},
        "as_of": at,
    }  # fmt: skip
    # WHEN / THEN they validate, also inside their pages and envelopes
    Draft202012Validator(SCHEMAS["Task"]).validate(task)
    Draft202012Validator(SCHEMAS["TaskPage"]).validate({"items": [task], "next_cursor": None})
    Draft202012Validator(SCHEMAS["DispatchResponse"]).validate({"dispatch": task["dispatch"], "task": task})
    Draft202012Validator(SCHEMAS["Statistics"]).validate(statistics)
    Draft202012Validator(SCHEMAS["Statistics"]).validate({**statistics, "success_rate": None})
    Draft202012Validator(SCHEMAS["TaskTypeList"]).validate(
        {"items": [t.describe() for t in REGISTRY.values()], "next_cursor": None})


def test_a_subscription_request_is_published_with_each_channels_secret_rule(document):
    schema = document["components"]["schemas"]["CreateSubscriptionRequest"]
    valid = Draft202012Validator(schema).is_valid
    assert {key: value for key, value in schema.items() if key != "allOf"} == SCHEMAS["CreateSubscriptionRequest"]
    assert valid({"channel": "webhook", "target": "https://example.com/h", "secret": "s" * 8})
    assert not valid({"channel": "webhook", "target": "https://example.com/h"})
    assert valid({"channel": "dingtalk", "target": "https://example.com/h"})
    assert not valid({"channel": "email", "target": "ops@example.com", "secret": "s" * 8})
    assert not valid({"channel": "slack", "target": "https://example.com/h", "secret": "s" * 8})
