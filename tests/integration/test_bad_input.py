"""Bad input of any kind is `400 validation_error` with the JSON path of the problem, never a 500
(API.md "Errors"): lone surrogates, NUL and control characters, forged or borrowed cursors,
dates outside 1970-9999, a `max_errors` no task could use."""

from __future__ import annotations

import json
import re
from typing import Any

import boto3
import pytest

from chalicelib import config
from chalicelib.api.contract import CURSOR, OPERATIONS, Operation
from tests.harness import Answer, Fleet

SHELL = {"type": "shell", "target_nodes": ["edge-1"], "parameters": {"command": ["true"]}}
#: SHELL as JSON text, to splice a raw fragment into
TASK = json.dumps(SHELL)
ADMIN = {"who": "root", "roles": ("admin",)}


def refused(answer: Answer) -> list[str]:
    """The paths of a 400 validation_error's details."""
    assert answer.status == 400, answer
    assert answer.body["error"]["code"] == "validation_error", answer
    return [detail["path"] for detail in answer.body["error"]["details"]]


def raw(fleet: Fleet, method: str, path: str, body: str, **headers: str) -> Answer:
    """A body sent exactly as written: `\\ud800` reaches the service as the JSON escape."""
    return fleet.call(method, path, raw=body, bearer=fleet.admin, headers=headers or None)


class TestLoneSurrogatesNulAndControlCharacters:
    @pytest.mark.parametrize(
        ("path", "body", "where"),
        [
            ("/v1/tasks", TASK[:-1] + r', "name": "\ud800"}', "$.name"),
            ("/v1/tasks", TASK[:-1] + r', "tags": ["\ud800"]}', "$.tags[0]"),
            ("/v1/schedules", r'{"name": "\ud800", "expression": "rate(1 hour)", "task": ' + TASK + "}", "$.name"),
            ("/v1/nodes", r'{"node_id": "edge-9", "labels": {"pool": "\ud800"}}', "$.labels.pool"),
            ("/v1/nodes", r'{"node_id": "edge-9", "labels": {"\ud800": "cdn"}}', '$.labels["\\ud800"]'),
            ("/v1/subscriptions", r'{"channel": "webhook", "target": "https://example.com/h", '
                                  r'"secret": "s3cret-s3cret", "filter": {"tag": "\ud800"}}', "$.filter.tag"),
        ],
        ids=["task-name", "task-tag", "schedule-name", "node-label-value", "node-label-key", "subscription-filter-tag"],
    )
    def test_a_lone_surrogate_ud800_is_a_400_not_a_500(self, fleet: Fleet, path: str, body: str, where: str) -> None:
        assert refused(raw(fleet, "POST", path, body)) == [where]

    def test_a_nul_in_a_task_name_is_a_400(self, fleet: Fleet) -> None:
        answer = raw(fleet, "POST", "/v1/tasks", TASK[:-1] + r', "name": "a\u0000b"}')
        assert refused(answer) == ["$.name"]
        assert answer.body["error"]["details"][0]["message"] == "value contains a NUL character"

    def test_a_nul_in_a_parameter_is_a_400(self, fleet: Fleet) -> None:
        body = r'{"type": "shell", "target_nodes": ["edge-1"], "parameters": {"command": ["echo", "a\u0000b"]}}'
        assert refused(raw(fleet, "POST", "/v1/tasks", body)) == ["$.parameters.command[1]"]

    def test_a_tab_in_a_tag_is_a_400_but_a_newline_in_a_parameter_is_kept(self, fleet: Fleet) -> None:
        fleet.register("edge-1")
        assert refused(fleet.user("POST", "/v1/tasks", {**SHELL, "tags": ["cdn\t"]})) == ["$.tags[0]"]
        answer = fleet.user("POST", "/v1/tasks", {**SHELL, "parameters": {"command": ["sh", "-c", "a\n\tb"]}})
        assert answer.status == 202, answer
        assert answer.body["parameters"]["command"][2] == "a\n\tb"

    def test_an_idempotency_key_holding_a_control_character_is_a_400(self, fleet: Fleet) -> None:
        answer = fleet.user("POST", "/v1/tasks", SHELL, headers={"Idempotency-Key": "key\x01"})
        assert refused(answer) == ["$header.Idempotency-Key"]

    @pytest.mark.parametrize("query", ["tag=a%00b", "type=%01", "owner=%C2%9B"], ids=["nul", "soh", "c1-csi"])
    def test_a_query_filter_holding_a_control_character_is_a_400(self, fleet: Fleet, query: str) -> None:
        assert refused(fleet.user("GET", f"/v1/tasks?{query}", **ADMIN)) == [f"$query.{query.split('=')[0]}"]

    def test_an_agent_may_report_the_nul_a_process_printed(self, fleet: Fleet) -> None:
        # GIVEN a running node run
        fleet.started(SHELL)
        (run,) = fleet.claim("edge-1")
        # WHEN the agent completes it with output holding a NUL
        body = {"attempt": run["attempt"], "status": "succeeded", "output": "bin\x00ary"}
        answer = fleet.agent("edge-1", f"/v1/runs/{run['run_id']}/complete", body)
        # THEN it is accepted (a lone surrogate still is not)
        assert answer.status == 200, answer
        again = fleet.call("POST", f"/v1/runs/{run['run_id']}/events", raw=r'{"attempt": 1, "events": '
                           r'[{"type": "info", "message": "\ud800"}]}', bearer=fleet.node_tokens["edge-1"])
        assert refused(again) == ["$.events[0].message"]


def paged_operations() -> list[Operation]:
    return [operation for operation in OPERATIONS if CURSOR in operation.query]


def concrete(path: str) -> str:
    return re.sub(r"{\w+}", "edge-1", path)


class TestCursors:
    @pytest.mark.parametrize("operation", paged_operations(), ids=lambda op: op.operation_id)
    def test_a_forged_cursor_of_json_x_1_is_a_400_on_every_paged_route(self, fleet: Fleet, operation: Operation):
        # eyJ4IjoxfQ is {"x":1}: JSON a store would take as a start key and fail on
        answer = fleet.user("GET", f"{concrete(operation.path)}?cursor=eyJ4IjoxfQ", **ADMIN)
        assert refused(answer) == ["$query.cursor"]

    def test_a_next_cursor_continues_only_its_own_listing_filters_and_user(self, fleet: Fleet) -> None:
        # GIVEN alice's first page of her shell tasks
        fleet.register("edge-1")
        for _ in range(3):
            assert fleet.submit(SHELL).status == 202
        first = fleet.user("GET", "/v1/tasks?type=shell&limit=1").body
        cursor = first["next_cursor"]
        # THEN it continues that very listing
        second = fleet.user("GET", f"/v1/tasks?type=shell&limit=1&cursor={cursor}")
        assert second.status == 200, second
        assert second.body["items"][0]["task_id"] != first["items"][0]["task_id"]
        # AND nothing else: another user, other filters, another route
        assert refused(fleet.user("GET", f"/v1/tasks?type=shell&cursor={cursor}", who="bob")) == ["$query.cursor"]
        assert refused(fleet.user("GET", f"/v1/tasks?type=shell&tag=x&cursor={cursor}")) == ["$query.cursor"]
        assert refused(fleet.user("GET", f"/v1/tasks?cursor={cursor}")) == ["$query.cursor"]
        assert refused(fleet.user("GET", f"/v1/schedules?cursor={cursor}")) == ["$query.cursor"]

    def test_a_node_runs_cursor_of_one_task_is_a_400_on_another(self, fleet: Fleet) -> None:
        # GIVEN two tasks of two nodes each
        fleet.register("edge-1", "edge-2")
        body = {**SHELL, "target_nodes": ["edge-1", "edge-2"]}
        first, other = fleet.submit(body).body["task_id"], fleet.submit(body).body["task_id"]
        fleet.settle()
        page = fleet.user("GET", f"/v1/tasks/{first}/nodes?limit=1").body
        # THEN the cursor pages the first task's runs, and only those
        rest = fleet.user("GET", f"/v1/tasks/{first}/nodes?limit=1&cursor={page['next_cursor']}").body
        assert [r["node"] for r in page["items"] + rest["items"]] == ["edge-1", "edge-2"]
        assert refused(fleet.user("GET", f"/v1/tasks/{other}/nodes?cursor={page['next_cursor']}")) == [
            "$query.cursor"]

    def test_allocation_pages_follow_their_signed_cursor(self, fleet: Fleet) -> None:
        fleet.register("gpu-1")
        for user in ("ann", "ben"):
            assert fleet.user("POST", "/v1/nodes/gpu-1/allocate", {"user": user}, **ADMIN).status == 200
            assert fleet.user("POST", "/v1/nodes/gpu-1/release", **ADMIN).status == 200
        first = fleet.user("GET", "/v1/nodes/gpu-1/allocations?limit=1", **ADMIN).body
        second = fleet.user("GET", f"/v1/nodes/gpu-1/allocations?limit=1&cursor={first['next_cursor']}", **ADMIN)
        assert second.status == 200, second
        assert [a["user"] for a in first["items"] + second.body["items"]] == ["ben", "ann"]

    def test_cursors_are_signed_with_the_secrets_manager_key_when_one_is_configured(
            self, fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
        # GIVEN a cursor secret in Secrets Manager, as the stack provides one in AWS
        arn = boto3.client("secretsmanager").create_secret(Name="fleetrun/cursor", SecretString="k" * 48)["ARN"]
        monkeypatch.setenv("FLEETRUN_CURSOR_SECRET_ARN", arn)
        config.reset()
        fleet.register("edge-1", "edge-2")
        cursor = fleet.user("GET", "/v1/nodes?limit=1").body["next_cursor"]
        assert fleet.user("GET", f"/v1/nodes?limit=1&cursor={cursor}").status == 200
        # WHEN the secret is gone (the key falls back to the one derived from the JWT secret)
        monkeypatch.delenv("FLEETRUN_CURSOR_SECRET_ARN")
        config.reset()
        # THEN the cursor it signed no longer verifies: it was signed with the secret, not the fallback
        assert refused(fleet.user("GET", f"/v1/nodes?limit=1&cursor={cursor}")) == ["$query.cursor"]


class TestDatesOutside1970To9999:
    @pytest.mark.parametrize(
        "query",
        ["created_before=1969-12-31T00:00:00Z", "created_after=0001-01-01T00:00:00Z",
         "created_after=1970-01-01T00:30:00%2B01:00", "created_before=9999-12-31T23:59:59-01:00"],
    )
    def test_a_task_filter_date_outside_1970_to_9999_is_a_400(self, fleet: Fleet, query: str) -> None:
        assert refused(fleet.user("GET", f"/v1/tasks?{query}")) == [f"$query.{query.split('=')[0]}"]

    def test_the_first_and_last_moments_are_accepted(self, fleet: Fleet) -> None:
        query = "created_after=1970-01-01T00:00:00Z&created_before=9999-12-31T23:59:59.999Z"
        assert fleet.user("GET", f"/v1/tasks?{query}").status == 200

    @pytest.mark.parametrize("month", ["0000-01", "1969-12"])
    def test_a_usage_report_month_before_1970_is_a_400(self, fleet: Fleet, month: str) -> None:
        assert refused(fleet.user("GET", f"/v1/reports/usage?month={month}", **ADMIN)) == ["$query.month"]


class TestMaxErrors:
    @pytest.mark.parametrize("max_errors", ["101%", 10**30, 3], ids=["101-percent", "10e30", "above-2-targets"])
    def test_a_max_errors_no_task_could_use_is_a_400(self, fleet: Fleet, max_errors: Any) -> None:
        body = {**SHELL, "target_nodes": ["edge-1", "edge-2"], "max_errors": max_errors}
        assert refused(fleet.user("POST", "/v1/tasks", body)) == ["$.max_errors"]

    @pytest.mark.parametrize("max_errors", ["100%", 2])
    def test_every_target_may_fail_is_still_accepted(self, fleet: Fleet, max_errors: Any) -> None:
        fleet.register("edge-1", "edge-2")
        body = {**SHELL, "target_nodes": ["edge-1", "edge-2"], "max_errors": max_errors}
        assert fleet.user("POST", "/v1/tasks", body).status == 202

    def test_a_count_written_as_a_whole_float_is_held_to_the_targets_and_answered_as_a_count(
            self, fleet: Fleet) -> None:
        # JSON Schema's integer admits 3.0: it is the count 3, never the string "3.0"
        fleet.register("edge-1", "edge-2")
        body = {**SHELL, "target_nodes": ["edge-1", "edge-2"]}
        assert refused(fleet.user("POST", "/v1/tasks", {**body, "max_errors": 3.0})) == ["$.max_errors"]
        accepted = fleet.user("POST", "/v1/tasks", {**body, "max_errors": 2.0})
        assert accepted.status == 202, accepted
        assert accepted.body["max_errors"] == 2

    def test_a_schedules_task_with_max_errors_above_its_targets_is_a_400(self, fleet: Fleet) -> None:
        body = {"name": "nightly", "expression": "rate(1 day)", "task": {**SHELL, "max_errors": 2}}
        assert refused(fleet.user("POST", "/v1/schedules", body)) == ["$.task.max_errors"]
