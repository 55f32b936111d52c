"""The local runtime's HTTP server answers unknown routes and methods as API.md says, over a real socket."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.config import Config
from chalice.local import LocalChalice, LocalDevServer, ThreadedHTTPServer

from fleetrun.local.rest_gateway import ContractRequestHandler

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW9mLWFsaWNl"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    """A two-route app behind the runtime's request handler, on a free port."""
    app = LocalChalice(app_name="gateway-test")

    @app.route("/v1/tasks", methods=["GET", "POST"])
    def tasks() -> dict[str, Any]:
        return {"items": []}

    @app.route("/v1/tasks/{task_id}", methods=["GET"])
    def task(task_id: str) -> dict[str, str]:
        return {"task_id": task_id}

    config = Config.create(chalice_stage="dev", app_name="gateway-test", chalice_app=app)
    dev = LocalDevServer(app, config, "127.0.0.1", 0, handler_cls=ContractRequestHandler, server_cls=ThreadedHTTPServer)
    thread = threading.Thread(target=dev.server.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1", dev.server.server_port
    dev.server.shutdown()
    dev.server.server_close()


def call(server: tuple[str, int], method: str, path: str, token: str | None = None) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection(*server, timeout=10)
    connection.request(method, path, headers={"Authorization": f"Bearer {token}"} if token else {})
    response = connection.getresponse()
    response.body = response.read()  # type: ignore[attr-defined]
    connection.close()
    return response


def error_of(response: http.client.HTTPResponse) -> dict[str, Any]:
    assert response.getheader("Content-Type") == "application/json"
    document: dict[str, Any] = json.loads(response.body)  # type: ignore[attr-defined]
    return document["error"]  # type: ignore[no-any-return]


def test_a_known_route_and_method_reach_the_app(server):
    response = call(server, "GET", "/v1/tasks/t1", TOKEN)
    assert (response.status, json.loads(response.body)) == (200, {"task_id": "t1"})  # type: ignore[attr-defined]


@pytest.mark.parametrize(("sent", "received"), [("edge%3A1", "edge:1"), ("a%2Fb", "a/b"), ("a%20b%23c", "a b#c")])
def test_a_path_parameter_reaches_the_app_decoded_as_api_gateway_passes_it(server, sent, received):
    # a node id `edge:1` that a client sent encoded is the same node (it answered 404 before)
    response = call(server, "GET", f"/v1/tasks/{sent}", TOKEN)
    assert (response.status, json.loads(response.body)) == (200, {"task_id": received})  # type: ignore[attr-defined]


@pytest.mark.parametrize("token", [None, TOKEN], ids=["without a token", "with a bearer token"])
def test_an_unknown_route_is_a_404_not_found_that_echoes_no_credential(server, token):
    # WHEN a path no route has is requested (with a token in the path, too)
    response = call(server, "GET", f"/v1/nope/{TOKEN}", token)
    # THEN 404 not_found, and the token is nowhere in the answer (not API Gateway's 403 echo)
    assert response.status == 404
    assert error_of(response)["code"] == "not_found"
    answer = response.body + str(response.getheaders()).encode()  # type: ignore[attr-defined]
    assert TOKEN.encode() not in answer
    assert b"signature" not in answer


@pytest.mark.parametrize("method", ["DELETE", "PUT", "PATCH", "OPTIONS", "TRACE", "CONNECT", "FOO"])
def test_a_method_the_route_does_not_have_is_a_405_listing_those_it_has(server, method):
    # WHEN a route is called with a method it lacks, a standard one or not
    response = call(server, method, "/v1/tasks", TOKEN)
    # THEN 405 method_not_allowed, with `Allow` and the same list in the body
    assert response.status == 405
    assert response.getheader("Allow") == "GET, POST"
    assert error_of(response) == {"code": "method_not_allowed", "allow": ["GET", "POST"],
                                  "message": "this route does not have that method (allow: the methods it has)"}


def test_a_head_request_gets_the_405s_headers_without_a_body(server):
    # WHEN HEAD is sent to a GET route (on a connection closed after it)
    with socket.create_connection(server, timeout=10) as raw:
        raw.sendall(b"HEAD /v1/tasks/t1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = raw.makefile("rb").read()
    # THEN the 405's headers, no body bytes after them
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert (lines[0], headers["Allow"], headers["Content-Type"], body) == (
        "HTTP/1.1 405 Method Not Allowed", "GET", "application/json", b"")


def test_a_request_the_server_cannot_parse_is_a_400_validation_error(server):
    # GIVEN a request with a header line longer than the server reads
    with socket.create_connection(server, timeout=10) as raw:
        raw.sendall(b"GET /v1/tasks HTTP/1.1\r\nX-Big: " + b"x" * 70_000 + b"\r\n\r\n")
        answer = raw.makefile("rb").read()
    # WHEN / THEN a JSON contract error, not an HTML page
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 400 Bad Request"
    assert json.loads(body)["error"] == {"code": "validation_error", "message": "the request headers are too large",
                                         "details": []}


def test_the_access_log_scrubs_a_token_from_the_request_line(server, capfd):
    # WHEN a client puts a token into a URL
    call(server, "GET", f"/v1/tasks/{TOKEN}")
    # THEN the server's access line names the request without it
    logged = capfd.readouterr().err
    assert "GET /v1/tasks/*** HTTP/1.1" in logged
    assert TOKEN not in logged


NODE_TOKEN = "frn.demo-1.c2VjcmV0LW9mLWRlbW8tMQ"


def test_an_agents_answered_call_is_not_an_access_line(server, capfd):
    # GIVEN the app logging at INFO, as `make run` does
    # WHEN an agent (a node token) calls a route, then a user, then an agent's call fails
    call(server, "GET", "/v1/tasks/idle-claim", NODE_TOKEN)
    call(server, "GET", "/v1/tasks/user-read", TOKEN)
    call(server, "GET", "/v1/nope", NODE_TOKEN)
    # THEN the agent's answered call left no line (an idle agent polls every few seconds);
    # the user's request and the agent's failed one did
    logged = capfd.readouterr().err
    assert "idle-claim" not in logged
    assert "GET /v1/tasks/user-read HTTP/1.1" in logged
    assert '"GET /v1/nope HTTP/1.1" 404' in logged


def test_at_debug_every_agent_call_is_an_access_line(server, capfd):
    # GIVEN the app logging at DEBUG (POWERTOOLS_LOG_LEVEL=DEBUG)
    app_logger = logging.getLogger("fleetrun")
    level = app_logger.level
    app_logger.setLevel(logging.DEBUG)
    try:
        # WHEN an agent calls a route
        call(server, "GET", "/v1/tasks/busy-claim", NODE_TOKEN)
    finally:
        app_logger.setLevel(level)
    # THEN its access line is there, without its token
    logged = capfd.readouterr().err
    assert "GET /v1/tasks/busy-claim HTTP/1.1" in logged
    assert NODE_TOKEN not in logged
