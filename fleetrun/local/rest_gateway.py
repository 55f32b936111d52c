"""The local REST API gateway: Chalice's dev server, answering as the deployed API does (API.md "Errors").

Chalice's `LocalGateway` imitates API Gateway's defaults: an unknown path is `403 Missing
Authentication Token`, or, with an `Authorization` header, a 403 that echoes the whole header
(a bearer token); a known path with another method reaches the app, which answers its own
`405 {"Code": "MethodNotAllowedError"}`; `BaseHTTPRequestHandler` answers a method it has no
`do_` handler for (TRACE, anything) with a 501 HTML page. The deployed API answers with contract
bodies instead (gateway responses and a mock `ANY` method per path, `infra/rest_api.py`); so does
this one: 404 `not_found` for a path no route has, 405 `method_not_allowed` with `Allow` for a
method the route does not have, whatever the method, and a contract body for the server's own
errors (a malformed request line). None of them says anything the client sent, and the access
log scrubs what looks like a token from the request line. Path parameters reach the app decoded,
as API Gateway passes them (`/v1/nodes/edge%3A1` is node `edge:1`); Chalice passed them raw.

API Gateway stops waiting for the Lambda after 29 s (not raisable on an edge-optimized API) and
answers 504 on its own; the deployed API maps that (`INTEGRATION_TIMEOUT`) to a contract body.
Here a route runs on a thread of its own and, past `api_timeout_seconds()` (29 s,
`FLEETRUN_API_TIMEOUT_SECONDS` for tests), the client gets `504 {"error": {"code":
"gateway_timeout", ...}}` (no code of API.md fits a gateway's timeout) while the route, like the
Lambda behind API Gateway, runs on to its end.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote

from chalice.app import Chalice
from chalice.config import Config
from chalice.local import (
    ChaliceRequestHandler,
    LambdaEventConverter,
    LocalGateway,
    LocalGatewayException,
    MatchResult,
    RouteMatcher,
)

from chalicelib.api.errors import http_headers, http_status
from chalicelib.auth import is_node_token
from chalicelib.errors import FleetrunError, MethodNotAllowed, RouteNotFound, ValidationFailed
from chalicelib.observability import SERVICE, scrub

#: the app's logger: its level (POWERTOOLS_LOG_LEVEL) decides whether agents' calls are logged
_APP_LOGGER = logging.getLogger(SERVICE)
#: what the server's own refusals (BaseHTTPRequestHandler.send_error) say, by the status it chose
_SERVER_ERRORS: dict[int, str] = {
    HTTPStatus.REQUEST_URI_TOO_LONG: "the request line is too long",
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: "the request headers are too large",
}


#: API Gateway's integration timeout (REST API)
API_TIMEOUT_SECONDS = 29.0


def api_timeout_seconds() -> float:
    """How long a route may run before the gateway answers 504 (`FLEETRUN_API_TIMEOUT_SECONDS`)."""
    raw = os.environ.get("FLEETRUN_API_TIMEOUT_SECONDS", "").strip()
    return float(raw) if raw else API_TIMEOUT_SECONDS


class GatewayTimeout(LocalGatewayException):
    """API Gateway's own 504, with the contract's error shape."""

    CODE = 504

    def __init__(self, seconds: float) -> None:
        body = {"error": {"code": "gateway_timeout",
                          "message": f"the request took longer than {seconds:g} s; it may still complete"}}
        super().__init__({"Content-Type": "application/json"}, json.dumps(body, separators=(",", ":")).encode())


def routine_agent_call(authorization: str | None, code: int | str) -> bool:
    """Whether a request is an agent's (node token) and was answered without an error."""
    return is_node_token(authorization) and isinstance(code, int) and code < HTTPStatus.BAD_REQUEST


class ContractError(LocalGatewayException):
    """A gateway answer carrying a contract error (sent by ChaliceRequestHandler as it is)."""

    def __init__(self, error: FleetrunError) -> None:
        body = json.dumps(error.document(), separators=(",", ":")).encode()
        super().__init__({"Content-Type": "application/json", **http_headers(error)}, body)
        self.CODE = http_status(error)


class DecodingRouteMatcher(RouteMatcher):
    """Matches on the path as sent, then decodes each captured segment (API Gateway's order: an
    encoded `/` inside a parameter stays inside it)."""

    def match_route(self, url: str) -> MatchResult:
        found = super().match_route(url)
        return MatchResult(found.route, {name: unquote(value) for name, value in found.captured.items()},
                           found.query_params)


class ContractGateway(LocalGateway):
    """Routes a request only to a route and method the app has; the rest is answered here."""

    def __init__(self, app_object: Chalice, config: Config) -> None:
        super().__init__(app_object, config)
        self._routes = DecodingRouteMatcher(list(app_object.routes))
        self.event_converter = LambdaEventConverter(self._routes, app_object.api.binary_types)

    def handle_request(self, method: str, path: str, headers: dict[str, Any], body: bytes | None) -> Any:
        try:
            route = self._routes.match_route(path).route
        except ValueError:
            raise ContractError(RouteNotFound()) from None
        views = self._app_object.routes[route]
        # Chalice answers OPTIONS itself (CORS preflight) only for routes with CORS, as API Gateway does
        with_preflight = any(view.cors for view in views.values())
        allowed = set(views) | ({"OPTIONS"} if with_preflight else set())
        if method not in allowed:
            raise ContractError(MethodNotAllowed(allowed))
        return self._within_timeout(super().handle_request, method, path, headers, body)

    @staticmethod
    def _within_timeout(call: Any, *args: Any) -> Any:
        """`call(*args)` on a thread of its own; GatewayTimeout when it outlasts the API's timeout
        (the thread is left to finish, as the Lambda is)."""
        seconds = api_timeout_seconds()
        outcome: list[tuple[bool, Any]] = []
        done = threading.Event()
        context = contextvars.copy_context()

        def run() -> None:
            try:
                outcome.append((True, context.run(call, *args)))
            except BaseException as error:  # raised again on the request's thread
                outcome.append((False, error))
            finally:
                done.set()

        threading.Thread(target=run, name="api-route", daemon=True).start()
        if not done.wait(seconds):
            _APP_LOGGER.error("a request took longer than %g s: answered 504", seconds)
            raise GatewayTimeout(seconds)
        succeeded, value = outcome[0]
        if not succeeded:
            raise value
        return value


class ContractRequestHandler(ChaliceRequestHandler):
    """ChaliceRequestHandler over a ContractGateway, for every method a client may send."""

    def __init__(self, request: Any, client_address: Any, server: Any, app_object: Chalice, config: Config) -> None:
        self.local_gateway = ContractGateway(app_object, config)
        BaseHTTPRequestHandler.__init__(self, request, client_address, server)

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler looks up `do_<METHOD>`; any method goes to the gateway (405 or 404)
        if name.startswith("do_"):
            return self._generic_handle
        raise AttributeError(name)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """The access line of every request, but an agent's answered call only at DEBUG
        (`POWERTOOLS_LOG_LEVEL=DEBUG`): an idle agent claims every few seconds, and a working one
        reports through its own log."""
        headers = getattr(self, "headers", None)  # none yet when the request line was refused
        authorization = headers.get("Authorization") if headers is not None else None
        if routine_agent_call(authorization, code) and not _APP_LOGGER.isEnabledFor(logging.DEBUG):
            return
        super().log_request(code, size)

    def log_message(self, format: str, *args: Any) -> None:
        """The access line, without anything that looks like a credential (a token in a URL)."""
        super().log_message("%s", scrub(format % args))

    def _send_error_response(self, error: LocalGatewayException) -> None:
        if self.command == "HEAD":  # the headers of the answer, without its body
            assert error.body is not None
            self._send_http_response_no_body(error.CODE, {**error.headers, "Content-Length": str(len(error.body))})
            return
        super()._send_error_response(error)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The server's own answers to a request it cannot parse (bad request line, version,
        headers): `400 validation_error`, and the connection is closed as the server would."""
        error = ValidationFailed(_SERVER_ERRORS.get(code, "the request is not valid HTTP/1.1"))
        body = json.dumps(error.document(), separators=(",", ":")).encode()
        self.close_connection = True
        self.send_response(http_status(error))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
