"""A real HTTP server in a thread that records what notification channels POST to it.

Each path answers as configured: a status and body, or a hang (no answer for `hang` seconds).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Received:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"ok"
    hang: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    answers: dict[str, Answer] = field(default_factory=dict)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def answer(self, path: str, status: int = 200, body: bytes = b"ok", hang: float = 0.0,
               headers: dict[str, str] | None = None) -> str:
        """Configure `path`; returns its full URL."""
        self.answers[path] = Answer(status, body, hang, headers or {})
        return self.url + path

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start() -> Receiver:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            query = {name: values[0] for name, values in parse_qs(parts.query).items()}
            receiver.requests.append(Received(parts.path, query, dict(self.headers.items()), body, time.time()))
            answer = receiver.answers.get(parts.path, Answer())
            if answer.hang:
                time.sleep(answer.hang)
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json" if answer.body.startswith(b"{") else "text/plain")
                self.send_header("Content-Length", str(len(answer.body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = Receiver(server)
    threading.Thread(target=server.serve_forever, name="receiver", daemon=True).start()
    return receiver
