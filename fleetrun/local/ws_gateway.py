"""The local stand-in for API Gateway's WebSocket API.

- A WebSocket server (`ws://host:ws_port/?token=...`) that calls the app's `on_ws_connect`,
  `on_ws_message` and `on_ws_disconnect` handlers with the events API Gateway sends (see
  `ws_events`): a `$connect` answer other than 2xx refuses the handshake with that status;
  messages of one connection are handled one at a time, in order.
- The management API the app posts to through its `apigatewaymanagementapi` client
  (`FLEETRUN_WEBSOCKET_ENDPOINT`): `POST /@connections/{id}` sends the body to the client as a
  text frame, `DELETE` closes the connection, `GET` describes it; an unknown or closed
  connection answers `410 GoneException`, as in AWS. Signatures are not checked.
- A connection ends with the user token it was opened with (API.md "Real time"): the gateway
  closes it with code 4001 the moment the token's `exp` passes, and a `DELETE` of a connection
  whose token has expired (the app's sweeper) closes it with 4001 too. API Gateway cannot
  choose a close code; in AWS the sweeper's last message says why instead.

The WebSocket side runs an asyncio loop in its own thread; the management endpoint is a
threaded HTTP server on its own port (API Gateway serves both on one domain, but the
`websockets` server accepts only GET upgrades).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jwt
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from fleetrun.local import ws_events
from fleetrun.local.pump_base import LambdaContext

logger = logging.getLogger("fleetrun.local.ws")

Handler = Callable[[dict[str, Any], Any], Any]
#: how long the management endpoint waits for a frame to be handed to the client
_SEND_TIMEOUT_SECONDS = 5.0
#: API.md: a connection whose token expired is closed with this code
TOKEN_EXPIRED_CODE = 4001
TOKEN_EXPIRED_REASON = "token expired"
#: API Gateway's message limit, both ways: a larger post is refused (413 PayloadTooLargeException)
MESSAGE_BYTES_MAX = 128 * 1024


@dataclass
class _Connection:
    socket: ServerConnection
    connected_at: float
    source_ip: str
    user_agent: str
    last_active_at: float = field(default_factory=time.time)
    #: the `exp` of the token the connection was opened with
    token_expires_at: float | None = None
    #: the close the expiry timer started, held here: asyncio keeps only weak references to tasks
    closing: asyncio.Task[None] | None = None

    def token_expired(self) -> bool:
        return self.token_expires_at is not None and time.time() >= self.token_expires_at


@dataclass
class WsHandlers:
    """The app's three WebSocket handlers (Chalice handler objects: `handler(event, context)`)."""

    connect: Handler
    message: Handler
    disconnect: Handler

    @classmethod
    def of_app(cls, app_module: Any) -> WsHandlers:
        """Found from the app's own registrations (`app.websocket_handlers`), like Chalice's deployer."""
        routes = app_module.app.websocket_handlers

        def handler(route_key: str) -> Handler:
            function: Handler = getattr(app_module, routes[route_key].handler_string.split(".")[-1])
            return function

        return cls(connect=handler("$connect"), message=handler("$default"), disconnect=handler("$disconnect"))


class WebSocketGateway:
    """Bind with the constructor (both ports are known at once; 0 picks a free one), then
    `start(handlers)`."""

    def __init__(self, host: str = "127.0.0.1", ws_port: int = 8001, management_port: int = 0,
                 stage: str = "local") -> None:
        # bound here, not when serving starts: port 0 picks a free port, known from now on
        self._socket = socket.create_server((host, ws_port))
        self.host, self.ws_port = host, int(self._socket.getsockname()[1])
        self.gateway = ws_events.Gateway(domain_name=f"{host}:{self.ws_port}", stage=stage, api_id="local")
        self._connections: dict[str, _Connection] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: Server | None = None
        self._handlers: WsHandlers | None = None
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ws")
        self._http = ThreadingHTTPServer((host, management_port), _management_handler(self))
        self._http.daemon_threads = True
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.ws_port}"

    @property
    def management_endpoint(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    # --- lifecycle -----------------------------------------------------------------------
    def start(self, handlers: WsHandlers, thread_setup: Callable[[], None] | None = None) -> None:
        """Serve in background threads; `thread_setup` runs first in each of them (log tags)."""
        self._handlers = handlers
        if thread_setup is not None:
            self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ws", initializer=thread_setup)
        started = threading.Event()
        failure: list[BaseException] = []

        def run_loop() -> None:
            if thread_setup is not None:
                thread_setup()
            asyncio.set_event_loop(self._loop)
            try:
                self._server = self._loop.run_until_complete(self._serve())
            except BaseException as error:
                failure.append(error)
                started.set()
                return
            started.set()
            self._loop.run_forever()

        def run_http() -> None:
            if thread_setup is not None:
                thread_setup()
            self._http.serve_forever(poll_interval=0.2)

        for name, target in (("ws-gateway", run_loop), ("ws-connections", run_http)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        started.wait(10)
        if failure:
            raise RuntimeError(f"the WebSocket gateway could not listen on {self.url}") from failure[0]

    async def _serve(self) -> Server:
        return await serve(self._session, sock=self._socket, process_request=self._connect,
                           ping_interval=20, ping_timeout=20, max_size=MESSAGE_BYTES_MAX)

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        if self._server is None:
            self._socket.close()
        else:
            server = self._server

            async def close() -> None:
                server.close()
                await server.wait_closed()

            try:
                asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
            except Exception as error:  # closing is best effort at shutdown
                logger.warning("closing the WebSocket server: %r", error)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- WebSocket side ------------------------------------------------------------------
    async def _connect(self, connection: ServerConnection, request: Request) -> Response | None:
        connection_id = ws_events.new_connection_id()
        query = parse_qs(urlsplit(request.path).query)
        headers = {name: value for name, value in request.headers.raw_items()}
        source_ip = str(connection.remote_address[0]) if connection.remote_address else "127.0.0.1"
        now = time.time()
        event = ws_events.connect_event(self.gateway, connection_id, query=query, headers=headers,
                                        source_ip=source_ip, connected_at=now)
        answer = await self._invoke("connect", event)
        status = int(answer.get("statusCode", 200)) if isinstance(answer, dict) else 200
        if status >= 300:
            body = answer.get("body") if isinstance(answer, dict) else None
            return connection.respond(status, str(body or "Forbidden"))
        # registered once the handshake is done (`_session`): like API Gateway, posting to a
        # connection whose $connect has not finished is GoneException
        pending = _Connection(connection, now, source_ip, headers.get("User-Agent", ""),
                              token_expires_at=_token_expiry(query))
        connection.fleetrun = pending  # type: ignore[attr-defined]
        connection.fleetrun_id = connection_id  # type: ignore[attr-defined]
        return None

    async def _session(self, connection: ServerConnection) -> None:
        connection_id: str = connection.fleetrun_id  # type: ignore[attr-defined]
        known: _Connection = connection.fleetrun  # type: ignore[attr-defined]
        with self._lock:
            self._connections[connection_id] = known
        expiry = self._close_at_expiry(known)
        try:
            async for frame in connection:
                known.last_active_at = time.time()
                body = frame if isinstance(frame, str) else frame.decode("utf-8", errors="replace")
                await self._invoke("message", ws_events.message_event(
                    self.gateway, connection_id, body, connected_at=known.connected_at,
                    source_ip=known.source_ip, user_agent=known.user_agent,
                ))
        except ConnectionClosed:
            pass
        finally:
            if expiry is not None:
                expiry.cancel()
            with self._lock:
                self._connections.pop(connection_id, None)
            status = connection.close_code if connection.close_code is not None else 1006
            reason = connection.close_reason or ("" if connection.close_code is not None else "Going away")
            await self._invoke("disconnect", ws_events.disconnect_event(
                self.gateway, connection_id, status_code=status, reason=reason, connected_at=known.connected_at,
                source_ip=known.source_ip, user_agent=known.user_agent,
            ))

    def _close_at_expiry(self, known: _Connection) -> asyncio.TimerHandle | None:
        if known.token_expires_at is None:
            return None

        def close() -> None:
            known.closing = self._loop.create_task(known.socket.close(TOKEN_EXPIRED_CODE, TOKEN_EXPIRED_REASON))

        return self._loop.call_later(max(0.0, known.token_expires_at - time.time()), close)

    async def _invoke(self, route: str, event: dict[str, Any]) -> Any:
        """Call one app handler in a worker thread, as Lambda would: a raise is a 500."""
        assert self._handlers is not None
        handler: Handler = getattr(self._handlers, route)

        def call() -> Any:
            try:
                return handler(event, LambdaContext(f"fleetrun-ws-{route}"))
            except Exception:
                logger.exception("the %s handler raised", route)
                return {"statusCode": 500, "body": "Internal server error"}

        return await self._loop.run_in_executor(self._executor, call)

    # --- management side (@connections) -------------------------------------------------
    def post(self, connection_id: str, data: bytes) -> bool:
        """Send `data` to the client; False when the connection is gone."""
        known = self._connections.get(connection_id)
        if known is None:
            return False
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            message: str | bytes = data
        else:
            message = text
        future = asyncio.run_coroutine_threadsafe(known.socket.send(message), self._loop)
        try:
            future.result(timeout=_SEND_TIMEOUT_SECONDS)
        except ConnectionClosed:
            return False
        except TimeoutError:  # a slow reader: the frame stays queued, like API Gateway's buffer
            logger.warning("a frame to %s is still queued after %s s", connection_id, _SEND_TIMEOUT_SECONDS)
        return True

    def close(self, connection_id: str) -> bool:
        known = self._connections.get(connection_id)
        if known is None:
            return False
        code, reason = (TOKEN_EXPIRED_CODE, TOKEN_EXPIRED_REASON) if known.token_expired() else (
            1000, "closed by the service")
        asyncio.run_coroutine_threadsafe(known.socket.close(code, reason), self._loop)
        return True

    def describe(self, connection_id: str) -> dict[str, Any] | None:
        known = self._connections.get(connection_id)
        if known is None:
            return None
        return {
            "connectedAt": _iso(known.connected_at),
            "identity": {"sourceIp": known.source_ip, "userAgent": known.user_agent},
            "lastActiveAt": _iso(known.last_active_at),
        }

    @property
    def connection_count(self) -> int:
        return len(self._connections)


def _token_expiry(query: dict[str, list[str]]) -> float | None:
    """The `exp` claim of the connect token (the app verified the token at `$connect`; this only
    reads when it ends)."""
    token = (query.get("token") or [""])[0]
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch * 1000) % 1000:03d}Z"


def _management_handler(gateway: WebSocketGateway) -> type[BaseHTTPRequestHandler]:
    class ConnectionsHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            connection_id, data = self._connection_id(), self._body()
            if connection_id is None:
                return self._answer(404, {"message": "Not Found"})
            if len(data) > MESSAGE_BYTES_MAX:
                return self._answer(413, {"message": f"the message is larger than {MESSAGE_BYTES_MAX} bytes"},
                                    {"x-amzn-ErrorType": "PayloadTooLargeException"})
            if not gateway.post(connection_id, data):
                return self._gone()
            return self._answer(200, None)

        def do_DELETE(self) -> None:
            connection_id = self._connection_id()
            if connection_id is None:
                return self._answer(404, {"message": "Not Found"})
            return self._answer(204, None) if gateway.close(connection_id) else self._gone()

        def do_GET(self) -> None:
            connection_id = self._connection_id()
            described = gateway.describe(connection_id) if connection_id is not None else None
            return self._answer(200, described) if described is not None else self._gone()

        def _connection_id(self) -> str | None:
            # the endpoint may carry a stage (`/<stage>/@connections/<id>`), like API Gateway's
            _, marker, rest = urlsplit(self.path).path.partition("/@connections/")
            return unquote(rest) if marker and rest and "/" not in rest else None

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _gone(self) -> None:
            self._answer(410, {"message": "GoneException"}, {"x-amzn-ErrorType": "GoneException"})

        def _answer(self, status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None) -> None:
            payload = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # one line per push is noise
            return None

    return ConnectionsHandler
