"""The rules of a task type definition beyond its body's schema (domain/type_definitions.py)."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.domain import type_definitions
from chalicelib.errors import ValidationFailed
from chalicelib.validation import validate_parameters


def definition(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "cdn.purge",
        "steps": ["purge", "verify"],
        "parameters_schema": {
            "type": "object",
            "properties": {
                "paths": {"type": "array", "items": {"type": "string"}},
                "api_token": {"type": "string"},
                "credentials": {"type": "object", "properties": {"user": {"type": "string"},
                                                                 "password": {"type": "string"}}},
            },
            "required": ["paths"],
        },
        "secret_parameters": ["api_token", "credentials.password"],
    }
    return {**base, **changes}


def problems(body: dict[str, Any]) -> list[dict[str, str]]:
    with pytest.raises(ValidationFailed) as caught:
        type_definitions.check(body)
    details: list[dict[str, str]] = caught.value.extra["details"]
    return details


def paths(body: dict[str, Any]) -> list[str]:
    return [detail["path"] for detail in problems(body)]


def test_a_sound_definition_passes_and_describes_an_agent_executed_type() -> None:
    # WHEN
    type_definitions.check(definition())
    task_type = type_definitions.task_type(definition(), 3)
    # THEN
    assert (task_type.version, task_type.builtin, task_type.agent_executed) == (3, False, True)
    assert task_type.secret_parameters == frozenset({"api_token", "credentials.password"})
    assert task_type.describe()["steps"] == ["purge", "verify"]


def test_a_schema_that_is_not_json_schema_is_refused_at_its_path() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integr"}}}
    assert paths(definition(parameters_schema=schema, secret_parameters=[])) == [
        "$.parameters_schema.properties.n.type"]


def test_a_pattern_that_is_no_regex_is_refused_before_any_task_meets_it() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "string", "pattern": "(["}}}
    assert paths(definition(parameters_schema=schema, secret_parameters=[])) == [
        "$.parameters_schema.properties.n.pattern"]


@pytest.mark.parametrize("reference", ["https://example.com/schema.json", "other.json#/x", "//host/x"])
def test_a_remote_reference_is_refused_at_its_path(reference: str) -> None:
    schema = {"type": "object", "properties": {"x": {"$ref": reference}}}
    [detail] = problems(definition(parameters_schema=schema, secret_parameters=[]))
    assert detail["path"] == "$.parameters_schema.properties.x.$ref"
    assert "remote" in detail["message"]


def test_local_references_that_resolve_are_accepted_and_others_refused() -> None:
    schema = {"type": "object", "$defs": {"cred": {"type": "object", "properties": {"password": {"type": "string"}}}},
              "properties": {"a": {"$ref": "#/$defs/cred"}, "b": {"$ref": "#/$defs/missing"}}}
    assert paths(definition(parameters_schema=schema, secret_parameters=[])) == [
        "$.parameters_schema.properties.b.$ref"]


def test_an_id_that_would_give_references_a_remote_base_is_refused() -> None:
    schema = {"type": "object", "$id": "https://example.com/root.json", "properties": {}}
    assert paths(definition(parameters_schema=schema, secret_parameters=[])) == ["$.parameters_schema.$id"]


def test_a_schema_that_refers_to_itself_without_end_is_refused() -> None:
    assert paths(definition(parameters_schema={"type": "object", "$ref": "#"}, secret_parameters=[])) == [
        "$.parameters_schema"]


def test_parameters_must_be_an_object() -> None:
    assert paths(definition(parameters_schema={"type": "string"}, secret_parameters=[])) == [
        "$.parameters_schema.type"]


def test_a_schema_over_64_kib_is_refused() -> None:
    schema = {"type": "object", "description": "x" * (64 * 1024)}
    [detail] = problems(definition(parameters_schema=schema, secret_parameters=[]))
    assert detail["path"] == "$.parameters_schema"
    assert "65536" in detail["message"]


def test_fifty_steps_pass_and_the_fifty_first_is_refused_at_its_index() -> None:
    type_definitions.check(definition(steps=[f"s{i}" for i in range(50)]))
    assert paths(definition(steps=[f"s{i}" for i in range(51)])) == ["$.steps[50]"]


def test_apply_steps_count_towards_the_fifty() -> None:
    body = definition(steps=[f"s{i}" for i in range(49)], apply_steps=["a0", "a1"], requires_confirmation=True)
    assert paths(body) == ["$.apply_steps[1]"]


@pytest.mark.parametrize("step", [".", ".."])
def test_a_step_that_is_not_one_path_segment_is_refused(step: str) -> None:
    assert paths(definition(steps=["purge", step])) == ["$.steps[1]"]


def test_a_repeated_step_is_refused() -> None:
    assert paths(definition(steps=["purge", "purge"])) == ["$.steps[1]"]


def test_confirmation_and_apply_steps_go_together() -> None:
    assert paths(definition(requires_confirmation=True)) == ["$.apply_steps"]
    assert paths(definition(apply_steps=["apply"])) == ["$.apply_steps"]
    type_definitions.check(definition(requires_confirmation=True, apply_steps=["apply"]))


def test_a_secret_path_the_schema_does_not_declare_is_refused_at_its_index() -> None:
    details = problems(definition(secret_parameters=["api_token", "credentials.pin", "nothing"]))
    assert [d["path"] for d in details] == ["$.secret_parameters[1]", "$.secret_parameters[2]"]
    assert "'pin'" in details[0]["message"]


def test_a_secret_path_may_go_through_a_local_reference() -> None:
    schema = {"type": "object", "$defs": {"cred": {"type": "object", "properties": {"password": {"type": "string"}}}},
              "properties": {"credentials": {"$ref": "#/$defs/cred"}}}
    type_definitions.check(definition(parameters_schema=schema, secret_parameters=["credentials.password"]))


def test_a_ref_inside_an_enum_value_is_data_not_a_reference() -> None:
    schema = {"type": "object", "properties": {"x": {"enum": [{"$ref": "https://example.com"}]}}}
    type_definitions.check(definition(parameters_schema=schema, secret_parameters=[]))


def test_parameters_that_follow_a_reference_cycle_forever_are_refused_not_crashed() -> None:
    # GIVEN a type whose schema only loops for a value of `a` ({} validates, so the definition passes)
    schema = {"type": "object", "$defs": {"x": {"$ref": "#/$defs/x"}}, "properties": {"a": {"$ref": "#/$defs/x"}}}
    type_definitions.check(definition(parameters_schema=schema, secret_parameters=[]))
    task_type = type_definitions.task_type(definition(parameters_schema=schema, secret_parameters=[]), 1)
    # WHEN / THEN parameters with `a` are a validation error
    with pytest.raises(ValidationFailed) as caught:
        validate_parameters(task_type, {"a": 1})
    assert caught.value.extra["details"][0]["path"] == "$.parameters"
