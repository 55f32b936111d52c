"""A real HTTP server in a thread whose every POST is answered by a function: a stand-in for the
service's agent routes in agent tests (tests/receivers.py answers fixed bodies instead)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: (path, JSON body sent) -> (status, extra headers, JSON body to answer)
Answer = Callable[[str, Any], tuple[int, dict[str, str], Any]]


@contextlib.contextmanager
def serving(answer: Answer) -> Iterator[str]:
    """Serve `answer` on a free local port for the `with` block; yields the base URL."""
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            sent = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, headers, body = answer(self.path, json.loads(sent or b"{}"))
            payload = json.dumps(body).encode()
            self.send_response(status)
            for name, value in {**headers, "Content-Type": "application/json"}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
