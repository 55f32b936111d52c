"""Domain errors carry no HTTP: the api table gives each one its status, code and headers (API.md Errors)."""

from __future__ import annotations

import pytest

from chalicelib import errors
from chalicelib.api.errors import HTTP_ERRORS, header_names, http_headers, http_status
from chalicelib.errors import FleetrunError

CONTRACT: list[tuple[FleetrunError, int, str]] = [
    (errors.ValidationFailed("bad"), 400, "validation_error"),
    (errors.UnknownTaskType("x.y", ["a.b"]), 400, "unknown_task_type"),
    (errors.Unauthenticated("who"), 401, "unauthenticated"),
    (errors.Forbidden("no"), 403, "forbidden"),
    (errors.TaskNotFound("t1"), 404, "not_found"),
    (errors.RouteNotFound(), 404, "not_found"),
    (errors.MethodNotAllowed(["POST", "GET"]), 405, "method_not_allowed"),
    (errors.InvalidTransition("task", "running", "retry", {"failed"}), 409, "invalid_transition"),
    (errors.Conflict("raced"), 409, "conflict"),
    (errors.Busy("busy"), 503, "service_unavailable"),  # a transaction conflict that outlived its retries
    (errors.LeaseLost("t1:n1", "running", 2), 409, "conflict"),
    (errors.NotConfigured("no harbor"), 409, "not_configured"),
    (errors.PayloadTooLarge("big"), 413, "payload_too_large"),
    (errors.IdempotencyKeyReused("k", "t1"), 422, "idempotency_key_reused"),
    (errors.RateLimited(7), 429, "rate_limited"),
    (errors.ServiceUnavailable("down"), 503, "service_unavailable"),
    (errors.PrometheusUnavailable("down"), 503, "service_unavailable"),
    (errors.UnknownAction("explode"), 500, "internal_error"),
    (FleetrunError("bug"), 500, "internal_error"),
]


@pytest.mark.parametrize(("error", "status", "code"), CONTRACT, ids=lambda v: type(v).__name__)
def test_each_error_answers_the_status_and_code_of_the_contract(error: FleetrunError, status: int, code: str) -> None:
    assert (http_status(error), error.document()["error"]["code"]) == (status, code)


def test_errors_carry_no_http_status() -> None:
    assert not any(hasattr(cls, "status") for cls in HTTP_ERRORS)


def test_only_rate_limited_unavailable_and_method_not_allowed_add_headers() -> None:
    assert http_headers(errors.RateLimited(7)) == {"Retry-After": "7"}
    assert http_headers(errors.MethodNotAllowed(["POST", "GET"])) == {"Allow": "GET, POST"}
    # API.md: a 503 says when to retry
    assert http_headers(errors.StoreBusy()) == {"Retry-After": "1"}
    assert http_headers(errors.PrometheusUnavailable("down")) == {"Retry-After": "5"}
    assert http_headers(errors.Busy("busy")) == {"Retry-After": "1"}
    with_headers = (errors.RateLimited, errors.MethodNotAllowed, errors.ServiceUnavailable, errors.Busy)
    assert all(http_headers(error) == {} for error, _, _ in CONTRACT if not isinstance(error, with_headers))
    statuses = (400, 401, 403, 404, 405, 409, 413, 422, 429, 500, 503)
    assert [status for status in statuses if header_names(status)] == [405, 429, 503]
    assert header_names(429) == ["Retry-After"]
    assert header_names(503) == ["Retry-After"]


def test_the_error_document_keeps_the_extra_fields() -> None:
    assert errors.RateLimited(7).document() == {
        "error": {"code": "rate_limited", "message": "too many write requests; retry in 7 s", "retry_after": 7},
    }


@pytest.mark.parametrize(("error", "status", "code"), CONTRACT, ids=lambda v: type(v).__name__)
def test_only_errors_of_the_request_itself_are_not_retryable(error: FleetrunError, status: int, code: str) -> None:
    # a lost race and a rate limit (4xx) can pass on the next try; every other 4xx cannot
    request_is_wrong = 400 <= status < 500 and not isinstance(error, errors.Conflict | errors.RateLimited)
    assert error.retryable is not request_is_wrong
