"""API Gateway's own answers, made contract answers (API.md "Errors"): the additions to the
OpenAPI body `chalice package` gives the REST API.

API Gateway answers some requests without calling the app. By default an unknown path is
`403 {"message": "Missing Authentication Token"}`, and with an `Authorization` header a 403
whose message echoes that header, bearer token included (INCOMPLETE_SIGNATURE: it reads the
header as a broken SigV4 signature); a method a path does not have gets the same answer. Here:

- gateway responses with fixed contract bodies: the path-not-found family (MISSING_AUTHENTICATION_TOKEN
  and the SigV4 ones, which only an unknown path meets in an API without IAM auth) → `404
  not_found`; stage throttling → `429 rate_limited` with `Retry-After`; a body over 10 MB → `413`;
  every other 4XX → `400 validation_error`, every 5XX (the function timed out, was throttled or
  failed to start) → `503 service_unavailable` with `Retry-After`. No template reads
  `$context.error.messageString` or the request: nothing the client sent comes back;
- an `ANY` method on every path, a mock integration answering `405 method_not_allowed` with
  `Allow` = the path's methods (API Gateway prefers a path's own methods to its `ANY`). HEAD and
  OPTIONS included, as in the local runtime. TRACE and CONNECT never reach API Gateway's methods.

They sit in the OpenAPI body, not in `AWS::ApiGateway::GatewayResponse` resources: the body is
what SAM hashes into the deployment's logical id, so a change is deployed to the stage with it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final

from chalicelib.errors import (
    FleetrunError,
    MethodNotAllowed,
    PayloadTooLarge,
    RateLimited,
    RouteNotFound,
    ServiceUnavailable,
    ValidationFailed,
)

GATEWAY_RESPONSES: Final = "x-amazon-apigateway-gateway-responses"
ANY_METHOD: Final = "x-amazon-apigateway-any-method"
#: OpenAPI operation keys of a path item that are HTTP methods
_METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch")
#: the content types the app's routes accept (chalicelib/api/http.py): the mock answers them all
_REQUEST_TYPES: Final = ("application/json", "text/plain", "application/x-www-form-urlencoded")
THROTTLED_RETRY_SECONDS: Final = 1
UNAVAILABLE_RETRY_SECONDS: Final = 5


def _document(error: type[FleetrunError], message: str, **extra: Any) -> dict[str, Any]:
    """The error document of `error`'s code with a message of the gateway's own."""
    return {"error": {"code": error.code, "message": message, **extra}}


def _body(document: dict[str, Any]) -> dict[str, str]:
    return {"application/json": json.dumps(document, separators=(",", ":"))}


def _response(status: int, document: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"statusCode": status, "responseTemplates": _body(document)}
    if headers:
        # static values are quoted: `'5'`
        response["responseParameters"] = {f"gatewayresponse.header.{k}": f"'{v}'" for k, v in headers.items()}
    return response


def gateway_responses() -> dict[str, Any]:
    """The `x-amazon-apigateway-gateway-responses` of the REST API."""
    not_found = _response(404, RouteNotFound().document())
    throttled = _document(RateLimited, f"too many requests to this API; retry in {THROTTLED_RETRY_SECONDS} s",
                          retry_after=THROTTLED_RETRY_SECONDS)
    unavailable = _document(ServiceUnavailable, "the service could not answer this request in time; retry",
                            retry_after=UNAVAILABLE_RETRY_SECONDS)
    return {
        "MISSING_AUTHENTICATION_TOKEN": not_found,
        "INCOMPLETE_SIGNATURE": not_found,
        "INVALID_SIGNATURE": not_found,
        "EXPIRED_TOKEN": not_found,
        "RESOURCE_NOT_FOUND": not_found,
        "REQUEST_TOO_LARGE": _response(413, _document(PayloadTooLarge, "the request is over API Gateway's 10 MB")),
        "THROTTLED": _response(429, throttled, {"Retry-After": str(THROTTLED_RETRY_SECONDS)}),
        "DEFAULT_4XX": _response(400, ValidationFailed("the API gateway refused the request").document()),
        "DEFAULT_5XX": _response(503, unavailable, {"Retry-After": str(UNAVAILABLE_RETRY_SECONDS)}),
    }


def methods_of(path_item: dict[str, Any]) -> list[str]:
    """The HTTP methods of an OpenAPI path item, as `Allow` spells them."""
    return sorted(key.upper() for key in path_item if key in _METHODS)


def method_not_allowed(allow: Iterable[str]) -> dict[str, Any]:
    """The `ANY` operation of a path whose methods are `allow`: a mock answering 405."""
    error = MethodNotAllowed(allow)
    return {
        "produces": ["application/json"],
        "responses": {"405": {"description": "method_not_allowed", "headers": {"Allow": {"type": "string"}}}},
        "x-amazon-apigateway-integration": {
            "type": "mock",
            "passthroughBehavior": "when_no_match",
            "requestTemplates": {kind: '{"statusCode": 405}' for kind in _REQUEST_TYPES},
            "responses": {"default": {
                "statusCode": "405",
                "responseParameters": {"method.response.header.Allow": f"'{', '.join(error.extra['allow'])}'"},
                "responseTemplates": _body(error.document()),
            }},
        },
    }


def override_path(*keys: str) -> str:
    """A CloudFormation property override path through `keys` (a `.` in a key is escaped)."""
    return ".".join(key.replace(".", "\\.") for key in keys)
