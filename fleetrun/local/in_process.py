"""The runtime's own AWS calls, served by the stand-in's WSGI application in the same process.

The local runtime hosts moto's server and the app in one process, so every call the app, the
pumps and the scheduler make went through a socket twice: botocore's HTTP client out, werkzeug's
HTTP server in. `serve_in_process(url, app)` registers a botocore `before-send` handler (what
moto's own in-memory mock uses) that hands each request for `url` to `app` directly — the same
WSGI application the server runs, journal and lock included — and returns its answer to
botocore. Everything above the socket is unchanged: botocore still serialises, signs and parses,
moto still parses the request and answers it; only the socket and the HTTP parsing on each side
are gone. Requests from other processes (tests, scripts, the CLI) still come over HTTP.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.handlers import BUILTIN_HANDLERS
from werkzeug.test import EnvironBuilder

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Raw(io.BytesIO):
    """The body botocore reads from an `AWSResponse` (it streams the raw response)."""

    def stream(self, **_: Any) -> Iterable[bytes]:
        while chunk := self.read(1 << 16):
            yield chunk


class InProcessTransport:
    """A botocore `before-send` handler answering requests for `base_url` with `app`."""

    def __init__(self, base_url: str, app: WsgiApp) -> None:
        self.base_url, self.app = base_url.rstrip("/"), app

    def __call__(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        if not (request.url == self.base_url or request.url.startswith(self.base_url + "/")):
            return None
        environ = self.environ(request)
        answer: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            answer[:] = [status, headers]
            return lambda _chunk: None

        chunks = self.app(environ, start_response)
        try:
            body = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        status, headers = answer
        return AWSResponse(request.url, int(status.split(" ", 1)[0]), dict(headers), _Raw(body))

    @staticmethod
    def environ(request: AWSPreparedRequest) -> dict[str, Any]:
        """The WSGI environ werkzeug's server would have built for this request."""
        url = urlsplit(request.url)
        body = request.body
        if body is None:
            data = b""
        elif isinstance(body, bytes | bytearray):
            data = bytes(body)
        elif isinstance(body, str):
            data = body.encode("utf-8")
        else:  # a file-like body (botocore rewinds it on a retry)
            data = body.read()
        headers = {name: value.decode("latin-1") if isinstance(value, bytes) else str(value)
                   for name, value in request.headers.items()}
        builder = EnvironBuilder(path=url.path or "/", base_url=f"{url.scheme}://{url.netloc}",
                                 query_string=url.query, method=request.method, headers=headers, data=data)
        try:
            environ: dict[str, Any] = builder.get_environ()
        finally:
            builder.close()
        raw_uri = (url.path or "/") + (f"?{url.query}" if url.query else "")
        environ.update(RAW_URI=raw_uri, REQUEST_URI=raw_uri, REMOTE_ADDR="127.0.0.1")
        return environ


def serve_in_process(base_url: str, app: WsgiApp) -> InProcessTransport:
    """Route this process's botocore requests for `base_url` to `app`: every session and client
    created after this call (they copy botocore's built-in handlers when they are made)."""
    transport = InProcessTransport(base_url, app)
    BUILTIN_HANDLERS.append(("before-send", transport))
    return transport
