"""Every error code of API.md's error table, over HTTP: the status and the body shape
`{"error": {"code", "message", ...}}`; plus the public routes and the registered routes."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import jwt
import pytest

from chalicelib import auth, clock, config
from chalicelib.api.contract import OPERATIONS
from chalicelib.api.openapi import build_openapi
from chalicelib.observability import ScrubbingFormatter, logger
from tests.faults import aws_error, fail_calls, throttled
from tests.harness import SECRET, Answer, Fleet, token

RELEASE = {"type": "config.release", "target_nodes": ["edge-12"], "parameters": {"website_id": 41}}


def assert_error(answer: Answer, status: int, code: str) -> dict[str, Any]:
    """The answer is `status` with API.md's error body of `code`; returns the inner error object."""
    assert answer.status == status, answer
    assert isinstance(answer.body, dict), answer
    assert set(answer.body) == {"error"}, answer
    error = answer.body["error"]
    assert error["code"] == code, answer
    assert isinstance(error["message"], str), answer
    assert error["message"], answer
    assert answer.headers.get("Content-Type", "").startswith("application/json"), answer.headers
    return error  # type: ignore[no-any-return]


def create(fleet: Fleet, body: dict[str, Any] | None = None, who: str = "alice") -> dict[str, Any]:
    answer = fleet.submit(body or RELEASE, who=who)
    assert answer.status == 202, answer
    return answer.body  # type: ignore[no-any-return]


def completed_task(fleet: Fleet) -> dict[str, Any]:
    fleet.register("edge-12")
    task = create(fleet)
    fleet.settle()
    assert fleet.run_agents(["edge-12"]) == 1
    done = fleet.task(task["task_id"])
    assert done["status"] == "completed", done
    return done


class TestValidationError:
    def test_missing_type(self, fleet):
        # WHEN a task body lacks the required `type`
        answer = fleet.submit({"target_nodes": ["edge-12"]})
        # THEN 400 with the path of the missing field
        error = assert_error(answer, 400, "validation_error")
        assert {"path": "$.type", "message": "is required"} in error["details"]

    def test_unknown_field(self, fleet):
        answer = fleet.submit({**RELEASE, "colour": "blue"})
        error = assert_error(answer, 400, "validation_error")
        assert [d["path"] for d in error["details"]] == ["$.colour"]

    def test_malformed_json(self, fleet):
        answer = fleet.call("POST", "/v1/tasks", raw="{", bearer=token())
        error = assert_error(answer, 400, "validation_error")
        assert [d["path"] for d in error["details"]] == ["$"]
        assert "malformed JSON" in error["details"][0]["message"]

    def test_details_list_every_problem_with_its_path(self, fleet):
        # GIVEN three problems at once: wrong type, out of range, a bad node id
        body = {"type": "config.release", "priority": 11, "name": 5, "target_nodes": ["edge-12", "bad id"]}
        # WHEN
        error = assert_error(fleet.submit(body), 400, "validation_error")
        # THEN each one is listed with its JSON path
        paths = {d["path"] for d in error["details"]}
        assert paths == {"$.priority", "$.name", "$.target_nodes[1]"}
        assert all(isinstance(d["message"], str) and d["message"] for d in error["details"])

    def test_parameters_are_validated_against_the_type(self, fleet):
        body = {"type": "config.release", "target_nodes": ["edge-12"], "parameters": {"website_id": "41"}}
        error = assert_error(fleet.submit(body), 400, "validation_error")
        assert [d["path"] for d in error["details"]] == ["$.parameters.website_id"]

    def test_limit_out_of_range(self, fleet):
        error = assert_error(fleet.user("GET", "/v1/tasks?limit=201"), 400, "validation_error")
        assert [d["path"] for d in error["details"]] == ["$query.limit"]

    @pytest.mark.parametrize("key", ["k" * 129, ""])
    def test_idempotency_key_outside_1_to_128_chars(self, fleet, key):
        sent = {"Content-Type": "application/json", "Authorization": f"Bearer {token()}", "Idempotency-Key": key}
        response = fleet.client.http.request("POST", "/v1/tasks", headers=sent, body=json.dumps(RELEASE).encode())
        answer = Answer(response.status_code, json.loads(response.body), dict(response.headers))
        error = assert_error(answer, 400, "validation_error")
        assert error["details"]

    @pytest.mark.parametrize("where", ["body", "parameters"])
    def test_deeply_nested_json_is_rejected_not_a_crash(self, fleet, where):
        # GIVEN a small (10 KB) body nested deeper than any real request
        nested = "[" * 2500 + "]" * 2500
        raw = (
            nested
            if where == "body"
            else ('{"type":"shell","target_nodes":["edge-12"],"parameters":{"command":["ls"],"x":' + nested + "}}")
        )
        # WHEN / THEN it is a validation error, not an internal error
        assert_error(fleet.call("POST", "/v1/tasks", raw=raw, bearer=token()), 400, "validation_error")

    def test_unknown_status_filter(self, fleet):
        create(fleet)
        error = assert_error(fleet.user("GET", "/v1/tasks?status=bogus"), 400, "validation_error")
        assert [d["path"] for d in error["details"]] == ["$query.status"]


class TestUnknownTaskType:
    def test_type_not_in_the_registry(self, fleet):
        answer = fleet.submit({"type": "nope.nothing", "target_nodes": ["edge-12"]})
        error = assert_error(answer, 400, "unknown_task_type")
        assert "config.release" in error["known_types"]


class TestUnauthenticated:
    def test_no_authorization_header(self, fleet):
        assert_error(fleet.call("GET", "/v1/tasks"), 401, "unauthenticated")

    @pytest.mark.parametrize("bearer", ["not-a-jwt", "a.b.c", token().replace(".", ".x", 1)])
    def test_bad_token(self, fleet, bearer):
        assert_error(fleet.call("GET", "/v1/tasks", bearer=bearer), 401, "unauthenticated")

    def test_token_signed_with_another_secret(self, fleet):
        forged = auth.mint_token("alice", ["admin"], "not-the-secret")
        assert_error(fleet.call("GET", "/v1/tasks", bearer=forged), 401, "unauthenticated")

    def test_expired_token(self, fleet):
        expired = auth.mint_token("alice", ["operator"], SECRET, ttl_seconds=-10)
        assert jwt.decode(expired, options={"verify_signature": False})["exp"] < time.time()
        error = assert_error(fleet.call("GET", "/v1/tasks", bearer=expired), 401, "unauthenticated")
        assert "expired" in error["message"]

    def test_not_a_bearer_scheme(self, fleet):
        answer = fleet.call("GET", "/v1/tasks", headers={"Authorization": f"Basic {token()}"})
        assert_error(answer, 401, "unauthenticated")

    def test_agent_route_without_a_node_token(self, fleet):
        fleet.register("edge-12")
        answer = fleet.call("POST", "/v1/agents/edge-12/claim", {"max": 1}, bearer=token("alice", ("admin",)))
        assert_error(answer, 401, "unauthenticated")

    def test_node_token_on_a_user_route(self, fleet):
        fleet.register("edge-12")
        answer = fleet.call("GET", "/v1/tasks", bearer=fleet.node_tokens["edge-12"])
        assert_error(answer, 401, "unauthenticated")


class TestForbidden:
    def test_viewer_creating_a_task(self, fleet):
        answer = fleet.call("POST", "/v1/tasks", RELEASE, bearer=token("vera", ("viewer",)))
        assert_error(answer, 403, "forbidden")

    def test_operator_registering_a_node(self, fleet):
        answer = fleet.call("POST", "/v1/nodes", {"node_id": "edge-12"}, bearer=token("alice", ("operator",)))
        assert_error(answer, 403, "forbidden")

    def test_node_token_of_a_claiming_for_b(self, fleet):
        fleet.register("edge-a", "edge-b")
        answer = fleet.agent("edge-a", "/v1/agents/edge-b/claim", {"max": 1})
        assert_error(answer, 403, "forbidden")

    def test_token_without_any_fleetrun_role(self, fleet):
        answer = fleet.call("GET", "/v1/tasks", bearer=token("eve", ("superuser",)))
        assert_error(answer, 403, "forbidden")

    def test_non_admin_listing_another_users_tasks(self, fleet):
        assert_error(fleet.user("GET", "/v1/tasks?owner=bob"), 403, "forbidden")


class TestNotFound:
    def test_unknown_task_id(self, fleet):
        error = assert_error(fleet.user("GET", "/v1/tasks/01JDUNKNOWNUNKNOWNUNKNOWN00"), 404, "not_found")
        assert "01JDUNKNOWNUNKNOWNUNKNOWN00" in error["message"]

    def test_another_users_task_is_not_found_not_forbidden(self, fleet):
        # GIVEN alice's task
        task = create(fleet, who="alice")
        task_id = task["task_id"]
        # WHEN bob reads it, lists its runs or events, or cancels it
        answers = [
            fleet.user("GET", f"/v1/tasks/{task_id}", who="bob"),
            fleet.user("GET", f"/v1/tasks/{task_id}/nodes", who="bob"),
            fleet.user("GET", f"/v1/tasks/{task_id}/events", who="bob"),
            fleet.user("POST", f"/v1/tasks/{task_id}/cancel", who="bob"),
        ]
        # THEN each answer is the same 404 an unknown id gets: existence is never revealed
        for answer in answers:
            assert_error(answer, 404, "not_found")
        unknown_id = task_id[:-4] + "ZZZZ"
        unknown = fleet.user("GET", f"/v1/tasks/{unknown_id}", who="bob")
        assert answers[0].body == json.loads(json.dumps(unknown.body).replace(unknown_id, task_id))
        # AND alice's task is untouched
        assert fleet.task(task_id)["status"] == "pending"

    def test_admin_sees_another_users_task(self, fleet):
        task = create(fleet, who="alice")
        assert fleet.user("GET", f"/v1/tasks/{task['task_id']}", who="root", roles=("admin",)).status == 200

    def test_unknown_node(self, fleet):
        assert_error(fleet.user("GET", "/v1/nodes/edge-404"), 404, "not_found")


class TestInvalidTransition:
    def test_cancel_a_completed_task(self, fleet):
        # GIVEN a completed task
        task = completed_task(fleet)
        # WHEN it is cancelled
        answer = fleet.user("POST", f"/v1/tasks/{task['task_id']}/cancel")
        # THEN 409 with the current status and where the action is allowed from
        error = assert_error(answer, 409, "invalid_transition")
        assert error["current_status"] == "completed"
        assert error["allowed_from"] == ["apply_pending", "pending", "running"]
        # AND the task is unchanged
        assert fleet.task(task["task_id"])["status"] == "completed"

    def test_retry_a_running_task(self, fleet):
        # GIVEN a dispatched, running task
        fleet.register("edge-12")
        task = create(fleet)
        fleet.settle()
        assert fleet.task(task["task_id"])["status"] == "running"
        # WHEN it is retried
        answer = fleet.user("POST", f"/v1/tasks/{task['task_id']}/retry", {"scope": "failed"})
        # THEN
        error = assert_error(answer, 409, "invalid_transition")
        assert error["current_status"] == "running"
        assert error["allowed_from"] == ["cancelled", "failed", "partial_failure"]
        assert fleet.task(task["task_id"])["attempt"] == 1

    @pytest.mark.parametrize("action", ["confirm", "discard"])
    def test_confirm_or_discard_outside_apply_pending(self, fleet, action):
        task = create(fleet)
        error = assert_error(fleet.user("POST", f"/v1/tasks/{task['task_id']}/{action}"), 409, "invalid_transition")
        assert error["current_status"] == "pending"
        assert error["allowed_from"] == ["apply_pending"]

    def test_dispatch_a_completed_task(self, fleet):
        task = completed_task(fleet)
        answer = fleet.user("POST", f"/v1/tasks/{task['task_id']}/dispatch", {"target_nodes": ["edge-13"]})
        error = assert_error(answer, 409, "invalid_transition")
        assert error["current_status"] == "completed"
        assert error["allowed_from"] == ["pending", "running"]


class TestConflict:
    def test_heartbeat_after_the_run_was_completed(self, fleet):
        # GIVEN a run that was claimed and completed
        fleet.register("edge-12")
        create(fleet)
        fleet.settle()
        [run] = fleet.claim("edge-12")
        assert fleet.finish("edge-12", run).status == 200
        # WHEN the agent heartbeats it again (its lease is gone)
        answer = fleet.agent("edge-12", f"/v1/runs/{run['run_id']}/heartbeat", {"attempt": run["attempt"]})
        # THEN 409 conflict: the agent must stop
        error = assert_error(answer, 409, "conflict")
        assert error["current_status"] == "succeeded"
        assert error["current_attempt"] == run["attempt"]

    def test_complete_with_a_stale_attempt(self, fleet):
        fleet.register("edge-12")
        create(fleet)
        fleet.settle()
        [run] = fleet.claim("edge-12")
        stale = {"attempt": run["attempt"] + 1, "status": "succeeded"}
        answer = fleet.agent("edge-12", f"/v1/runs/{run['run_id']}/complete", stale)
        assert_error(answer, 409, "conflict")

    def test_second_complete_with_another_status(self, fleet):
        fleet.register("edge-12")
        create(fleet)
        fleet.settle()
        [run] = fleet.claim("edge-12")
        assert fleet.finish("edge-12", run, "succeeded").status == 200
        assert fleet.finish("edge-12", run, "succeeded").status == 200  # identical: replay
        assert_error(fleet.finish("edge-12", run, "failed", "late"), 409, "conflict")

    def test_dispatch_while_the_task_is_still_being_dispatched(self, fleet):
        # GIVEN a task whose own dispatch has not run yet (nothing settled)
        task = create(fleet)
        # WHEN a dispatch request comes in
        answer = fleet.user("POST", f"/v1/tasks/{task['task_id']}/dispatch", {"target_nodes": ["edge-13"]})
        # THEN it is told to retry
        assert_error(answer, 409, "conflict")


class TestPayloadTooLarge:
    def test_body_over_256_kib(self, fleet):
        body = {**RELEASE, "name": "x" * (256 * 1024)}
        assert len(json.dumps(body)) > 256 * 1024
        assert_error(fleet.submit(body), 413, "payload_too_large")

    def test_parameters_over_64_kib(self, fleet):
        body = {"type": "shell", "target_nodes": ["edge-12"], "parameters": {"command": ["echo", "x" * 70_000]}}
        assert len(json.dumps(body)) < 256 * 1024
        error = assert_error(fleet.submit(body), 413, "payload_too_large")
        assert "parameters" in error["message"]

    def test_agent_body_over_256_kib(self, fleet):
        fleet.register("edge-12")
        answer = fleet.call(
            "POST", "/v1/agents/edge-12/claim", raw=" " * (256 * 1024 + 1), bearer=fleet.node_tokens["edge-12"]
        )
        assert_error(answer, 413, "payload_too_large")


class TestIdempotencyKeyReused:
    def test_same_key_different_body(self, fleet):
        # GIVEN a task created with a key
        first = fleet.submit(RELEASE, key="release-41")
        assert first.status == 202, first
        # WHEN the same key comes with another body
        answer = fleet.submit({**RELEASE, "name": "something else"}, key="release-41")
        # THEN 422, naming the task the key belongs to
        error = assert_error(answer, 422, "idempotency_key_reused")
        assert error["task_id"] == first.body["task_id"]

    def test_same_key_same_body_is_a_replay_not_an_error(self, fleet):
        first = fleet.submit(RELEASE, key="release-41")
        again = fleet.submit(RELEASE, key="release-41")
        assert again.status == 200, again
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert again.body["task_id"] == first.body["task_id"]


class TestRateLimited:
    def test_third_write_over_a_limit_of_two(self, fleet, monkeypatch):
        # GIVEN a limit of 2 writes per 60 s, and a clock that stays at one whole second of the
        # last minute (in the past, so tokens minted on it are already valid)
        monkeypatch.setenv("FLEETRUN_RATE_LIMIT", "2")
        config.reset()
        frozen = float((int(time.time()) // 60 - 1) * 60 + 5)
        monkeypatch.setattr(clock, "now_epoch", lambda: frozen)
        # WHEN alice makes three writes
        first, second, third = (fleet.submit(RELEASE) for _ in range(3))
        # THEN the third is refused with Retry-After in whole seconds: the writes of that second
        # count until 60 s after its end (ratelimit.py)
        assert (first.status, second.status) == (202, 202), (first, second)
        error = assert_error(third, 429, "rate_limited")
        retry_after = third.headers.get("Retry-After")
        assert retry_after is not None, third.headers
        assert retry_after.isdigit(), retry_after
        assert int(retry_after) == 61
        assert error["retry_after"] == 61
        # AND reads and other users are not limited
        assert fleet.user("GET", "/v1/tasks").status == 200
        assert fleet.submit(RELEASE, who="bob").status == 202


def _boom(operation: str) -> Exception:
    """A failure of the AWS call that no layer above expects, carrying a would-be secret."""
    return RuntimeError(f"boom secret-xyz in {operation}")


class TestInternalError:
    def test_unexpected_exception_is_a_500_without_details(self, fleet, monkeypatch):
        # GIVEN the table read fails in a way nobody planned for
        failed = fail_calls(monkeypatch, "Query", _boom)
        # WHEN
        answer = fleet.user("GET", "/v1/tasks")
        # THEN 500 internal_error, and nothing of the exception reaches the caller
        assert failed
        assert_error(answer, 500, "internal_error")
        text = json.dumps(answer.body) + json.dumps(answer.headers)
        for leaked in ("boom", "secret-xyz", "Traceback", "RuntimeError", ".py"):
            assert leaked not in text

    def test_unexpected_exception_in_a_write(self, fleet, monkeypatch):
        failed = fail_calls(monkeypatch, "TransactWriteItems", _boom)
        answer = fleet.submit(RELEASE)
        assert failed
        assert_error(answer, 500, "internal_error")
        assert "boom" not in json.dumps(answer.body)
        assert "secret-xyz" not in json.dumps(answer.body)
        assert "Traceback" not in json.dumps(answer.body)

    def test_the_service_logger_still_logs_info_once_the_app_exists(self, fleet, capsys):
        # GIVEN the app module is imported (the fleet fixture does) and a request was served
        assert fleet.call("GET", "/v1/health").status == 200
        # WHEN the service logs at INFO
        logger.info("probe-info-line")
        # THEN the line is written, as JSON
        lines = [line for line in capsys.readouterr().out.splitlines() if "probe-info-line" in line]
        assert len(lines) == 1, lines
        assert json.loads(lines[0])["message"] == "probe-info-line"
        # AND no handler writes the service's lines without the scrubbing JSON formatter
        plain = [
            h
            for h in logging.getLogger(logger.name).handlers
            if type(h) is logging.StreamHandler and not isinstance(h.formatter, ScrubbingFormatter)
        ]
        assert plain == []


class TestServiceUnavailable:
    """API.md: a throttled or conflicting dependency is `503 service_unavailable` with Retry-After."""

    def test_a_throttled_read_is_a_503_with_retry_after(self, fleet, monkeypatch):
        # GIVEN DynamoDB throttles the read after botocore's own retries
        failed = fail_calls(monkeypatch, "Query", throttled)
        # WHEN a user lists tasks
        answer = fleet.user("GET", "/v1/tasks")
        # THEN a 503 that says when to come back, and nothing of the AWS error
        assert failed
        body = assert_error(answer, 503, "service_unavailable")
        assert answer.headers.get("Retry-After") == "1"
        assert "Throughput" not in json.dumps(body)
        # AND the next request, no longer throttled, is served
        assert fleet.user("GET", "/v1/tasks").status == 200

    @pytest.mark.parametrize("code", ["TransactionConflictException", "ThrottlingException"])
    def test_a_create_that_keeps_conflicting_is_a_503_and_creates_nothing(self, fleet, monkeypatch, code):
        failed = fail_calls(monkeypatch, "TransactWriteItems", aws_error(code), times=20)
        answer = fleet.submit(RELEASE)
        assert failed
        assert_error(answer, 503, "service_unavailable")
        assert answer.headers.get("Retry-After") == "1"
        assert fleet.user("GET", "/v1/tasks").body["items"] == []  # a read: the failing writes are not in its way


class TestEveryErrorHasTheContractShape:
    def test_a_json_body_labelled_text_plain_is_parsed_as_json(self, fleet):
        # bodies are parsed as JSON whatever their label (chalicelib/api/http.py _CONTENT_TYPES)
        answer = fleet.call("POST", "/v1/tasks", RELEASE, bearer=token(), headers={"Content-Type": "text/plain"})
        assert answer.status == 202, answer

    def test_a_non_json_body_labelled_text_plain_is_a_validation_error(self, fleet):
        plain = {"Content-Type": "text/plain"}
        answer = fleet.call("POST", "/v1/tasks", raw="type=shell", bearer=token(), headers=plain)
        error = assert_error(answer, 400, "validation_error")
        assert [d["path"] for d in error["details"]] == ["$"]

    def test_json_content_type_with_charset_is_accepted(self, fleet):
        answer = fleet.call(
            "POST", "/v1/tasks", RELEASE, bearer=token(), headers={"Content-Type": "application/json; charset=utf-8"}
        )
        assert answer.status == 202, answer


class TestPublicRoutes:
    @pytest.mark.parametrize("path", ["/v1/health", "/v1/openapi.json"])
    def test_need_no_credentials(self, fleet, path):
        answer = fleet.call("GET", path)
        assert answer.status == 200, answer
        assert isinstance(answer.body, dict)

    def test_served_openapi_is_the_built_document(self, fleet):
        served = fleet.call("GET", "/v1/openapi.json").body
        assert served == json.loads(json.dumps(build_openapi(fleet.app_module.VERSION), default=str))


def _documented_operations() -> list[tuple[str, str]]:
    document = build_openapi("test")
    methods = {"get", "put", "post", "delete", "patch", "head", "options"}
    return sorted(
        (path, method.upper()) for path, item in document["paths"].items() for method in item if method in methods
    )


def _concrete(path: str) -> str:
    return (
        path.replace("{task_id}", "01JDUNKNOWNUNKNOWNUNKNOWN00")
        .replace("{node_id}", "edge-12")
        .replace("{run_id}", "01JDUNKNOWNUNKNOWNUNKNOWN00~edge-12")
    )


class TestRoutesAreRegistered:
    def test_an_unregistered_route_answers_chalices_own_403(self, fleet):
        # what a missing route looks like, so the test below can tell it apart
        answer = fleet.call("GET", "/v1/no-such-route")
        assert answer.status == 403
        assert answer.body == {"message": "Missing Authentication Token"}

    def test_every_contract_operation_is_registered(self, fleet):
        registered = {(path, method) for path, entries in fleet.app_module.app.routes.items() for method in entries}
        documented = {(op.path, op.method) for op in OPERATIONS}
        assert documented <= registered
        assert set(_documented_operations()) == documented

    @pytest.mark.parametrize(("path", "method"), _documented_operations())
    def test_every_documented_route_answers_with_the_contract(self, fleet, path, method):
        # WHEN a documented route is called without credentials
        answer = fleet.call(method, _concrete(path))
        # THEN it is answered by fleetrun (not Chalice's missing-route 403)
        assert answer.body != {"message": "Missing Authentication Token"}, (method, path)
        public = path in ("/v1/health", "/v1/openapi.json")
        if public:
            assert answer.status == 200, answer
        else:
            assert_error(answer, 401, "unauthenticated")
