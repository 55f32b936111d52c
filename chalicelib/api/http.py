"""The HTTP edge: routes registered from the contract table, who is calling, error mapping.

`app.py` declares one view per operation; this module gives each view a `Call` with the
authenticated caller and the parsed body, and turns every FleetrunError into the error
body of API.md. HTTP concerns stay here and in `app.py`; services never see a request.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from chalice.app import Chalice, Request, Response

from chalicelib import lazy
from chalicelib.api.contract import OPERATIONS, REQUEST_HEADERS, Operation
from chalicelib.api.errors import http_headers, http_status
from chalicelib.api.validation import check_header, check_query, page_params, parse
from chalicelib.errors import Busy, FleetrunError, ServiceUnavailable, StoreBusy
from chalicelib.observability import bind, logger

# loaded by the first request that needs them (JWT verification, the node inventory, PynamoDB):
# registering the routes at import needs only the contract table (chalicelib/lazy.py)
if TYPE_CHECKING:
    from chalicelib import auth, ratelimit
    from chalicelib.api import cursors
    from chalicelib.domain.records import Node
    from chalicelib.services import liveness
    from chalicelib.store.retrying import is_conflict_or_throttle
else:
    auth, ratelimit = lazy.modules("chalicelib", "auth", "ratelimit")
    cursors = lazy.module("chalicelib.api.cursors")
    liveness = lazy.module("chalicelib.services.liveness")
    is_conflict_or_throttle = lazy.attribute("chalicelib.store.retrying", "is_conflict_or_throttle")

OPERATIONS_BY_ID = {op.operation_id: op for op in OPERATIONS}
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: bodies are parsed as JSON whatever the client labels them, so a mislabelled body gets
#: our validation_error rather than Chalice's own 415 shape
_CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded"]


@dataclass(frozen=True)
class Call:
    operation: Operation
    request: Request
    actor: auth.Actor | None = None
    node_id: str | None = None
    #: an agent's node status after this contact (see services/liveness.py)
    node_status: str | None = None
    #: the hash of the node token the agent was authenticated with (a claim checks it again)
    node_token_hash: str | None = None

    @property
    def user(self) -> auth.Actor:
        assert self.actor is not None, f"{self.operation.operation_id} is not a user route"
        return self.actor

    @property
    def node(self) -> str:
        assert self.node_id is not None, f"{self.operation.operation_id} is not an agent route"
        return self.node_id

    def body(self) -> dict[str, Any]:
        assert self.operation.request is not None
        # an agent relays what a process printed (output, messages): NUL is text there
        return parse(self.operation.request, self.request.raw_body, nul_allowed=self.operation.auth == "node")

    def query(self) -> dict[str, str]:
        """The query parameters; raises ValidationFailed when one holds a control character."""
        return check_query(self.request.query_params)

    def query_values(self, name: str) -> list[str]:
        """Every value of a repeatable query parameter (`?label=a:1&label=b:2`), in order;
        `query()` holds only the last one. The service checks each value."""
        params = self.request.query_params
        return list(params.getlist(name)) if params is not None and name in params else []

    def page(self) -> tuple[int, str | None]:
        """`(limit, the service's cursor)`; raises ValidationFailed unless the cursor is a
        `next_cursor` this listing gave this user under these filters (see `paged`)."""
        limit, signed = page_params(self.query())
        return limit, cursors.verify(signed, self._cursor_scope()) if signed else None

    def paged(self, listing: dict[str, Any]) -> dict[str, Any]:
        """A service's page as the answer of this call: its `next_cursor` signed for this route,
        these filters and this user. Every view that reads `page()` answers through this."""
        cursor = listing.get("next_cursor")
        return {**listing, "next_cursor": cursors.sign(cursor, self._cursor_scope()) if cursor else None}

    def _cursor_scope(self) -> cursors.CursorScope:
        filters = {k: v for k, v in self.query().items() if k not in cursors.PAGING_PARAMETERS}
        caller = self.actor.user_id if self.actor is not None else f"node:{self.node_id}"
        return cursors.CursorScope(self.operation.operation_id, caller, dict(self.request.uri_params or {}), filters)

    def header(self, name: str) -> str | None:
        """A request header; one the contract describes is checked against its schema."""
        value: str | None = self.request.headers.get(name)
        described = REQUEST_HEADERS.get(name) or REQUEST_HEADERS.get(name.title())
        if value is not None and described is not None:
            check_header(described.name, described.schema, value)
        return value


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        body=json.dumps(body, separators=(",", ":"), default=str),
        status_code=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def error_response(error: FleetrunError) -> Response:
    return json_response(error.document(), http_status(error), http_headers(error))


def rate_limited(operation: Operation) -> bool:
    """Writes and every admin route (image sync, reports, node administration, also the
    expensive reads) count against the caller's per-user limit."""
    return operation.method in _WRITE_METHODS or operation.role == "admin"


def _authenticate(operation: Operation, request: Request) -> Call:
    authorization = request.headers.get("authorization")
    if operation.auth == "user_or_node":
        # a node token names itself (`frn.`); anything else must be a user's JWT
        node_token = auth.is_node_token(authorization)
        return _authenticate(replace(operation, auth="node" if node_token else "user"), request)
    if operation.auth == "user":
        actor = auth.authenticate_user(authorization)
        assert operation.role is not None
        auth.require(actor, operation.role)
        if rate_limited(operation):
            ratelimit.check_write(actor.user_id)
        bind(user=actor.user_id)
        return Call(operation, request, actor=actor)
    if operation.auth == "node":
        node = auth.authenticate_node_item(authorization)
        bind(node=node.node_id)
        return Call(operation, request, node_id=node.node_id, node_status=_seen(node), node_token_hash=node.token_hash)
    return Call(operation, request)


def _seen(node: Node) -> str:
    """Every agent request is a sign of life; recording it never fails the request (the
    status authentication just read then stands)."""
    try:
        return liveness.seen(node)
    except Exception:
        logger.exception("could not record that the node was seen", extra={"node": node.node_id})
        return str(node.status)


def register(app: Chalice, operation_id: str) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """Register `view(call, **path_params)` as the route of a contract operation."""
    operation = OPERATIONS_BY_ID[operation_id]

    def decorate(view: Callable[..., Response]) -> Callable[..., Response]:
        @functools.wraps(view)
        def route(**path: str) -> Response:
            bind(**{k: v for k, v in path.items() if k in ("task_id", "node_id", "run_id")})
            try:
                request = app.current_request
                assert request is not None
                return view(_authenticate(operation, request), **path)
            except (ServiceUnavailable, Busy) as error:  # documented (throttled, conflicting, down): no bug
                logger.warning("request answered 503", extra={"operation": operation_id, "reason": error.message})
                return error_response(error)
            except FleetrunError as error:
                if http_status(error) >= 500:
                    logger.exception("request failed", extra={"operation": operation_id})
                return error_response(error)
            except Exception as error:
                if is_conflict_or_throttle(error):  # throttled or conflicting: the client retries, nobody debugs
                    logger.warning("request answered 503: database busy",
                                   extra={"operation": operation_id, "reason": type(error).__name__})
                    return error_response(StoreBusy())
                logger.exception("unexpected error", extra={"operation": operation_id})
                return error_response(FleetrunError("an internal error occurred; it has been logged"))

        app.route(operation.path, methods=[operation.method], content_types=_CONTENT_TYPES)(route)
        return view

    return decorate
