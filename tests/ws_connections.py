"""A real `@connections` endpoint for tests that drive the WebSocket handlers in-process.

The app posts through its own `apigatewaymanagementapi` client (real HTTP, botocore-signed; moto
lets a custom endpoint through); this server records what each connection was sent and answers
`410 GoneException` for connections marked gone, as API Gateway does for a closed socket. A
`DELETE` (the service closing a connection) is recorded, and the connection is gone from then on.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit


class RecordingConnections:
    def __init__(self) -> None:
        self.sent: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.gone: set[str] = set()
        #: connections the service closed (`DELETE @connections/{id}`), in order
        self.closed: list[str] = []
        self.posts = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> RecordingConnections:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def take(self, connection_id: str) -> list[dict[str, Any]]:
        """What `connection_id` was sent since the last take."""
        with self._lock:
            messages = list(self.sent.get(connection_id, []))
            self.sent[connection_id] = []
            return messages

    def _close(self, connection_id: str) -> bool:
        with self._lock:
            if connection_id in self.gone:
                return False
            self.gone.add(connection_id)
            self.closed.append(connection_id)
            return True

    def _record(self, connection_id: str, data: bytes) -> bool:
        with self._lock:
            self.posts += 1
            if connection_id in self.gone:
                return False
            self.sent[connection_id].append(json.loads(data))
            return True


def _handler(recorder: RecordingConnections) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_DELETE(self) -> None:
            if recorder._close(self._connection_id()):
                self._answer(204, b"")
            else:
                self._answer(410, b'{"message": "GoneException"}', {"x-amzn-ErrorType": "GoneException"})

        def _connection_id(self) -> str:
            return unquote(urlsplit(self.path).path.rsplit("/@connections/", 1)[1])

        def do_POST(self) -> None:
            connection_id = self._connection_id()
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if recorder._record(connection_id, data):
                self._answer(200, b"")
            else:
                self._answer(410, b'{"message": "GoneException"}', {"x-amzn-ErrorType": "GoneException"})

        def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler
