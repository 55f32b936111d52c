"""Request bodies, task parameters, pagination and cursors: what is accepted, and where each problem is reported."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.api.contract import REQUEST_HEADERS
from chalicelib.api.validation import check_header, check_query, page_params, parse
from chalicelib.domain.task_types import REGISTRY, TaskType
from chalicelib.errors import PayloadTooLarge, ValidationFailed
from chalicelib.validation import MAX_BODY_BYTES, query_timestamp, validate_parameters

SHELL_PARAMETERS = {"type": "shell", "parameters": {"command": ["true"]}}
BAD_MAX_ERRORS = 'must be an integer from 0 to the number of target nodes, or a percentage string from "0%" to "100%"'


def problems(schema_name: str, body: Any) -> list[dict[str, str]]:
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    with pytest.raises(ValidationFailed) as caught:
        parse(schema_name, raw)
    details: list[dict[str, str]] = caught.value.extra["details"]
    return details


def paths(schema_name: str, body: Any) -> list[str]:
    return [detail["path"] for detail in problems(schema_name, body)]


def task(**fields: Any) -> dict[str, Any]:
    return {"type": "config.release", "target_nodes": ["edge-12"], **fields}


class TestParseAcceptsValidBodies:
    def test_returns_the_body_as_sent(self):
        # GIVEN a body using every field of a task
        body = task(
            name="release 41",
            parameters={"website_id": 41},
            tags=["cdn"],
            priority=5,
            max_concurrency=10,
            max_errors="10%",
            concurrency_key=None,
            runner_node=None,
        )
        # WHEN / THEN it comes back unchanged, from bytes or from text
        assert parse("CreateTaskRequest", json.dumps(body).encode()) == body
        assert parse("CreateTaskRequest", json.dumps(body)) == body

    @pytest.mark.parametrize("raw", [None, b"", "", "  \n"])
    def test_an_empty_body_reads_as_an_empty_object(self, raw):
        assert parse("RetryRequest", raw) == {}
        assert parse("ClaimRequest", raw) == {}

    @pytest.mark.parametrize("max_errors", [0, 3, "0%", "10%", "100%"])
    def test_max_errors_is_a_count_or_a_percentage(self, max_errors):
        assert parse("CreateTaskRequest", json.dumps(task(max_errors=max_errors)))["max_errors"] == max_errors

    def test_exactly_256_kib_is_not_too_large(self):
        compact = json.dumps(task())
        raw = compact + " " * (MAX_BODY_BYTES - len(compact))
        assert parse("CreateTaskRequest", raw)["type"] == "config.release"


class TestParseRejectsBadBodies:
    def test_missing_field_points_at_the_field(self):
        assert problems("CreateTaskRequest", {}) == [{"path": "$.type", "message": "is required"}]

    def test_unknown_field_points_at_the_field(self):
        assert problems("CreateTaskRequest", task(typo_field=1)) == [
            {"path": "$.typo_field", "message": "is not an allowed field"}
        ]

    def test_wrong_type(self):
        assert problems("CreateTaskRequest", task(priority="high")) == [
            {"path": "$.priority", "message": "must be of type integer"}
        ]

    def test_a_boolean_is_not_an_integer(self):
        assert paths("ClaimRequest", {"max": True}) == ["$.max"]

    def test_too_many_nodes(self):
        # GIVEN 10,001 distinct, valid node ids
        nodes = [f"n{i}" for i in range(10_001)]
        # THEN one problem, on the list, and the message does not echo the list
        assert problems("DispatchRequest", {"target_nodes": nodes}) == [
            {"path": "$.target_nodes", "message": "must have at most 10000 items"}
        ]

    def test_duplicate_nodes_point_at_the_repeat(self):
        assert problems("DispatchRequest", {"target_nodes": ["a", "b", "a"]}) == [
            {"path": "$.target_nodes[2]", "message": "repeats an earlier item"}
        ]

    @pytest.mark.parametrize("node_id", ["edge 12", "", "x" * 129, "edge/12", "edge-12\n", "ëdge"])
    def test_bad_node_id(self, node_id):
        assert paths("DispatchRequest", {"target_nodes": ["ok-1", node_id]}) == ["$.target_nodes[1]"]

    @pytest.mark.parametrize("max_errors", ["abc", "10", "101%", "1000%", "010%", "10 %", "٣%", -1, 1.5, None, 10**30])
    def test_bad_max_errors(self, max_errors):
        assert problems("CreateTaskRequest", task(max_errors=max_errors)) == [
            {"path": "$.max_errors", "message": BAD_MAX_ERRORS}
        ]

    @pytest.mark.parametrize("raw", ["{bad", '{"type": "shell",}', b"\xff\xfe", '{"priority": NaN}'])
    def test_malformed_json(self, raw):
        [detail] = problems("CreateTaskRequest", raw)
        assert detail["path"] == "$"
        assert detail["message"].startswith("malformed JSON")

    @pytest.mark.parametrize("raw", ["[1]", '"text"', "3", "null"])
    def test_a_body_that_is_not_an_object(self, raw):
        assert problems("CreateTaskRequest", raw) == [{"path": "$", "message": "must be a JSON object"}]

    def test_over_256_kib_is_too_large(self):
        compact = json.dumps(task())
        raw = compact + " " * (MAX_BODY_BYTES + 1 - len(compact))
        with pytest.raises(PayloadTooLarge):
            parse("CreateTaskRequest", raw)

    def test_every_problem_is_reported_at_once_in_path_order(self):
        # GIVEN a body with one problem of each kind
        body = {
            "target_nodes": ["ok", "bad id", 7, "ok"],
            "priority": 11,
            "tags": ["x" * 65],
            "surprise": True,
            "max_errors": "abc",
        }
        # WHEN it is parsed
        with pytest.raises(ValidationFailed) as caught:
            parse("CreateTaskRequest", json.dumps(body))
        # THEN each one is listed, sorted by path, and the message names the first
        assert [(d["path"], d["message"]) for d in caught.value.extra["details"]] == [
            ("$.max_errors", BAD_MAX_ERRORS),
            ("$.priority", "must be <= 10"),
            ("$.surprise", "is not an allowed field"),
            ("$.tags[0]", "must be at most 64 characters long"),
            ("$.target_nodes[1]", "must match ^[A-Za-z0-9._:-]{1,128}$"),
            ("$.target_nodes[2]", "must be of type string"),
            ("$.target_nodes[3]", "repeats an earlier item"),
            ("$.type", "is required"),
        ]
        assert caught.value.message == f"request body is invalid: $.max_errors {BAD_MAX_ERRORS} (and 7 more)"

    def test_nested_paths(self):
        body = {"attempt": 0, "events": [{"type": "info"}, {"type": "debug", "progress": 101, "extra": 1}]}
        assert paths("RunEventsRequest", body) == [
            "$.attempt",
            "$.events[1].extra",
            "$.events[1].progress",
            "$.events[1].type",
        ]

    def test_index_paths_sort_by_number(self):
        nodes = [f"n{i}" for i in range(12)]
        nodes[2], nodes[10] = "bad id", "bad id!"
        assert paths("DispatchRequest", {"target_nodes": nodes}) == ["$.target_nodes[2]", "$.target_nodes[10]"]

    def test_a_key_that_is_not_an_identifier_is_quoted(self):
        assert paths("RegisterNodeRequest", {"node_id": "n1", "labels": {"pool name": 1}}) == [
            '$.labels["pool name"]'
        ]

    def test_messages_never_echo_the_value(self):
        secret = "hunter2-" * 40
        details = problems("CreateTaskRequest", task(concurrency_key=secret, name=secret))
        assert details
        assert all("hunter2" not in detail["message"] for detail in details)


class TestValidateParameters:
    def test_valid_parameters_pass(self):
        validate_parameters(REGISTRY["config.release"], {"website_id": 41, "origin_set_id": 14})

    def test_missing_parameter_points_at_it(self):
        # GIVEN slurm.scale_up parameters without salt_master
        parameters = {"ssh_user": "root", "partition": "gpu", "password": "s3cret"}
        # WHEN / THEN
        with pytest.raises(ValidationFailed) as caught:
            validate_parameters(REGISTRY["slurm.scale_up"], parameters)
        assert caught.value.extra["details"] == [{"path": "$.parameters.salt_master", "message": "is required"}]

    def test_unknown_and_wrong_parameters(self):
        with pytest.raises(ValidationFailed) as caught:
            validate_parameters(REGISTRY["shell"], {"command": "ls", "colour": "red"})
        assert [d["path"] for d in caught.value.extra["details"]] == ["$.parameters.colour", "$.parameters.command"]

    def test_a_secret_is_never_echoed(self):
        password = "p" * 2000
        with pytest.raises(ValidationFailed) as caught:
            validate_parameters(
                REGISTRY["slurm.scale_up"],
                {"ssh_user": "root", "salt_master": "salt", "partition": "gpu", "password": password},
            )
        assert password not in json.dumps(caught.value.document())
        assert caught.value.extra["details"] == [
            {"path": "$.parameters.password", "message": "must be at most 1024 characters long"}
        ]

    def test_over_64_kib_is_too_large(self):
        with pytest.raises(PayloadTooLarge):
            validate_parameters(REGISTRY["shell"], {"command": ["echo", "x" * 64 * 1024]})

    def test_each_type_is_checked_against_its_own_schema(self):
        # GIVEN a type that reuses a registered name with a different schema
        own = TaskType(
            name="shell",
            description="",
            steps=("run",),
            parameters_schema={"type": "object", "required": ["script"]},
        )
        validate_parameters(REGISTRY["shell"], {"command": ["true"]})
        # WHEN / THEN its own schema applies, not the cached one
        with pytest.raises(ValidationFailed) as caught:
            validate_parameters(own, {"command": ["true"]})
        assert caught.value.extra["details"] == [{"path": "$.parameters.script", "message": "is required"}]


class TestPageParams:
    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            (None, (50, None)),
            ({}, (50, None)),
            ({"limit": "1"}, (1, None)),
            ({"limit": "200", "cursor": "abc"}, (200, "abc")),
            ({"cursor": ""}, (50, None)),
        ],
    )
    def test_accepted(self, query, expected):
        assert page_params(query) == expected

    @pytest.mark.parametrize("limit", ["0", "201", "-1", "abc", "1.5", "", " 5", "00000000050"])
    def test_rejected(self, limit):
        with pytest.raises(ValidationFailed) as caught:
            page_params({"limit": limit})
        assert [d["path"] for d in caught.value.extra["details"]] == ["$query.limit"]


def raw_task(fragment: str) -> str:
    """A create-task body written by hand, so JSON escapes such as `\\ud800` reach the parser as sent."""
    parts = ['"type": "shell"', '"target_nodes": ["edge-12"]', fragment]
    if '"parameters"' not in fragment:
        parts.append('"parameters": {"command": ["true"]}')
    return "{" + ", ".join(part for part in parts if part) + "}"


class TestTextNoStoreCanHold:
    @pytest.mark.parametrize(
        ("schema", "raw", "path"),
        [
            ("CreateTaskRequest", raw_task(r'"name": "\ud800"'), "$.name"),
            ("CreateTaskRequest", raw_task(r'"tags": ["ok", "\udfff"]'), "$.tags[1]"),
            ("CreateTaskRequest", raw_task(r'"parameters": {"command": ["echo", "\ud800"]}'),
             "$.parameters.command[1]"),
            ("CreateTaskRequest", raw_task(r'"parameters": {"\ud800": 1}'), '$.parameters["\\ud800"]'),
            ("RegisterNodeRequest", r'{"node_id": "edge-1", "labels": {"pool": "\ud800"}}', "$.labels.pool"),
            ("CreateScheduleRequest", r'{"name": "\ud800", "expression": "rate(1 hour)", "task": ' + raw_task("") + "}",
             "$.name"),
            ("CreateSubscriptionRequest", r'{"channel": "email", "target": "a@b.c", "filter": {"tag": "\ud800"}}',
             "$.filter.tag"),
        ],
        ids=["task-name", "task-tag", "parameter-value", "parameter-key", "node-label", "schedule-name",
             "subscription-filter-tag"],
    )
    def test_a_lone_surrogate_is_refused_where_it_sits(self, schema, raw, path):
        details = problems(schema, raw)
        assert [detail["path"] for detail in details] == [path]
        assert "lone UTF-16 surrogate" in details[0]["message"]

    def test_a_nul_in_a_parameter_value_is_refused(self):
        assert problems("CreateTaskRequest", raw_task(r'"parameters": {"command": ["a\u0000b"]}')) == [
            {"path": "$.parameters.command[0]", "message": "value contains a NUL character"},
        ]

    def test_a_nul_in_a_name_is_reported_once(self):
        assert problems("CreateTaskRequest", raw_task(r'"name": "a\u0000b"')) == [
            {"path": "$.name", "message": "value contains a NUL character"},
        ]

    @pytest.mark.parametrize("text", ["\x01", "line\nbreak", "tab\there", "\x7f", "\x85"])
    @pytest.mark.parametrize("field", ["name", "tags", "concurrency_key"])
    def test_names_tags_and_keys_refuse_control_characters(self, field, text):
        value = [text] if field == "tags" else text
        path = "$.tags[0]" if field == "tags" else f"$.{field}"
        assert problems("CreateTaskRequest", task(**SHELL_PARAMETERS, **{field: value})) == [
            {"path": path, "message": "must not contain control characters"},
        ]

    def test_labels_refuse_control_characters_in_keys_and_values(self):
        assert paths("RegisterNodeRequest", {"node_id": "edge-1", "labels": {"po\tol": "cdn", "zone": "eu\n"}}) == [
            '$.labels["po\\tol"]', "$.labels.zone",
        ]

    def test_free_text_keeps_newlines_and_tabs(self):
        # parameters are free text: a script, a config file
        body = task(type="shell", parameters={"command": ["sh", "-c", "echo a\n\techo b"]})
        assert parse("CreateTaskRequest", json.dumps(body)) == body

    def test_a_surrogate_pair_is_a_character_not_a_lone_surrogate(self):
        assert parse("CreateTaskRequest", raw_task(r'"name": "deploy \ud83d\ude80"'))["name"] == "deploy \U0001f680"

    def test_an_agent_may_relay_a_nul_a_process_printed_but_no_lone_surrogate(self):
        raw = r'{"attempt": 1, "status": "failed", "output": "bin\u0000ary", "error_message": "exit 1"}'
        assert parse("CompleteRequest", raw, nul_allowed=True)["output"] == "bin\x00ary"
        assert paths("CompleteRequest", raw) == ["$.output"]
        with pytest.raises(ValidationFailed):
            parse("CompleteRequest", r'{"attempt": 1, "status": "failed", "output": "\ud800"}', nul_allowed=True)

    def test_a_str_body_holding_a_raw_lone_surrogate_is_refused_not_a_crash(self):
        # an SQS message body arrives as str: encoding it must not raise
        assert paths("CreateTaskRequest", '{"type": "shell", "name": "\ud800"}') == ["$.name"]

    def test_a_body_nested_as_deep_as_json_allows_is_scanned_without_recursion(self):
        depth = 900
        body = '{"type": "shell", "parameters": {"a": ' + "[" * depth + '"\\ud800"' + "]" * depth + "}}"
        assert problems("CreateTaskRequest", body)[0]["path"].startswith("$.parameters.a[0][0]")


class TestQueryAndHeaders:
    @pytest.mark.parametrize("value", ["a\x00b", "\x01", "tab\t", "\ud800", "\x9b"])
    def test_a_query_value_with_a_control_character_or_lone_surrogate_is_refused(self, value):
        with pytest.raises(ValidationFailed) as caught:
            check_query({"type": "shell", "tag": value})
        assert caught.value.extra["details"] == [
            {"path": "$query.tag", "message": "must not contain control characters or lone surrogates"},
        ]

    def test_an_odd_query_name_is_reported_by_its_json_escape(self):
        with pytest.raises(ValidationFailed) as caught:
            check_query({"ta\x00g": "x"})
        assert [d["path"] for d in caught.value.extra["details"]] == ['$query["ta\\u0000g"]']

    def test_plain_query_values_pass(self):
        assert check_query({"tag": "cdn", "type": "config.release", "owner": "ünïcode"}) == {
            "tag": "cdn", "type": "config.release", "owner": "ünïcode",
        }
        assert check_query(None) == {}

    @pytest.mark.parametrize("value", ["key\x01", "\ud800", "a\x7fb"])
    def test_an_idempotency_key_with_a_control_character_is_refused(self, value):
        with pytest.raises(ValidationFailed) as caught:
            check_header("Idempotency-Key", REQUEST_HEADERS["Idempotency-Key"].schema, value)
        assert [d["path"] for d in caught.value.extra["details"]] == ["$header.Idempotency-Key"]


class TestQueryTimestamp:
    @pytest.mark.parametrize(
        ("value", "epoch"),
        [
            ("1970-01-01T00:00:00Z", 0.0),
            ("2026-11-22T18:07:19.384Z", 1795370839.384),
            ("2026-11-22t19:07:19+01:00", 1795370839.0),
            ("9999-12-31T23:59:59Z", 253402300799.0),
        ],
    )
    def test_rfc_3339_in_1970_to_9999_is_accepted(self, value, epoch):
        assert query_timestamp("created_after", value) == pytest.approx(epoch)

    @pytest.mark.parametrize(
        "value",
        [
            "1969-12-31T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "1970-01-01T00:30:00+01:00",  # 1969 in UTC
            "9999-12-31T23:59:59-01:00",  # 10000 in UTC
            "2026-02-30T00:00:00Z",
        ],
    )
    def test_a_time_outside_1970_to_9999_is_a_400(self, value):
        with pytest.raises(ValidationFailed, match="years 1970-9999") as caught:
            query_timestamp("created_before", value)
        assert [d["path"] for d in caught.value.extra["details"]] == ["$query.created_before"]

    @pytest.mark.parametrize(
        "value", ["yesterday", "2026-11-22", "2026-11-22T18:07:19", "10000-01-01T00:00:00Z", "٢٠٢٦-11-22T18:07:19Z"],
    )
    def test_anything_but_rfc_3339_is_a_400(self, value):
        with pytest.raises(ValidationFailed, match="RFC 3339"):
            query_timestamp("created_after", value)
