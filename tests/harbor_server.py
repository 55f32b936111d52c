"""A real HTTP server speaking the part of the Harbor v2.0 API that `images.sync` uses.

Basic auth (a robot account), `page`/`page_size` with `Link: <...>; rel="next"` and
`X-Total-Count` headers, repository names containing "/" encoded twice in paths (the server
decodes the path once, like Harbor's router, then the segment again), and scripted faults:
`fail(path_fragment, times)` answers 500 that many times (-1: always).
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Artifact:
    digest: str
    size: int
    tags: list[str]
    push_time: str = "2026-11-20T08:15:03.512Z"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": abs(hash(self.digest)) % 100000, "type": "IMAGE", "digest": self.digest, "size": self.size,
            "push_time": self.push_time, "media_type": "application/vnd.oci.image.manifest.v1+json",
            "tags": [{"name": t, "push_time": self.push_time, "immutable": False} for t in self.tags] or None,
        }


@dataclass
class HarborState:
    #: project -> full repository name -> artifacts
    projects: dict[str, dict[str, list[Artifact]]] = field(default_factory=dict)
    #: path fragment -> 500s left to answer (-1: forever)
    faults: dict[str, int] = field(default_factory=dict)
    #: every request as (path with query, status)
    requests: list[tuple[str, int]] = field(default_factory=list)


class HarborServer:
    """`with HarborServer("robot$sync", "s3cret") as harbor:` then `harbor.url`."""

    def __init__(self, username: str, password: str, page_size_cap: int = 100) -> None:
        self.username, self.password = username, password
        self.page_size_cap = page_size_cap
        self.state = HarborState()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HarborServer:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- scripting ---
    def put(self, repository: str, *artifacts: Artifact) -> None:
        project = repository.split("/")[0]
        with self._lock:
            self.state.projects.setdefault(project, {})[repository] = list(artifacts)

    def project(self, name: str) -> None:
        with self._lock:
            self.state.projects.setdefault(name, {})

    def fail(self, fragment: str, times: int) -> None:
        with self._lock:
            self.state.faults[fragment] = times

    def requests(self, fragment: str = "") -> list[tuple[str, int]]:
        with self._lock:
            return [r for r in self.state.requests if fragment in r[0]]

    # --- serving ---
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                status, body, headers = server._answer(self.path, self.headers.get("Authorization"))
                with server._lock:
                    server.state.requests.append((self.path, status))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def _answer(self, raw_path: str, authorization: str | None) -> tuple[int, Any, dict[str, str]]:
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if authorization != expected:
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "unauthorized"}]}, {}
        with self._lock:
            for fragment, left in self.state.faults.items():
                if fragment in raw_path and left != 0:
                    self.state.faults[fragment] = left - 1 if left > 0 else -1
                    return 500, {"errors": [{"code": "UNKNOWN", "message": "internal error"}]}, {}
        split = urlsplit(raw_path)
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        # Harbor's router sees the path decoded once: a/b sent as a%2Fb becomes two segments
        segments = unquote(split.path).strip("/").split("/")
        with self._lock:
            listing = self._listing(segments)
        if listing is None:
            return 404, {"errors": [{"code": "NOT_FOUND", "message": f"path {split.path} was not found"}]}, {}
        return self._page(split.path, query, listing)

    def _listing(self, segments: list[str]) -> list[dict[str, Any]] | None:
        projects = self.state.projects
        match segments:
            case ["api", "v2.0", "projects"]:
                return [{"project_id": i, "name": name} for i, name in enumerate(sorted(projects), start=1)]
            case ["api", "v2.0", "projects", project, "repositories"] if project in projects:
                return [{"name": name, "artifact_count": len(a)} for name, a in sorted(projects[project].items())]
            case ["api", "v2.0", "projects", project, "repositories", name, "artifacts"] if project in projects:
                repository = f"{project}/{unquote(name)}"
                if repository not in projects[project]:
                    return None
                return [artifact.as_json() for artifact in projects[project][repository]]
        return None

    def _page(self, path: str, query: dict[str, str], listing: list[dict[str, Any]]) -> tuple[int, Any, dict[str, str]]:
        page = int(query.get("page", "1"))
        size = min(int(query.get("page_size", "10")), self.page_size_cap)
        items = listing[(page - 1) * size:page * size]
        headers = {"X-Total-Count": str(len(listing))}
        links = []
        extra = "".join(f"&{k}={v}" for k, v in query.items() if k not in ("page", "page_size"))
        if page > 1:
            links.append(f'<{path}?page={page - 1}&page_size={size}{extra}>; rel="prev"')
        if page * size < len(listing):
            links.append(f'<{path}?page={page + 1}&page_size={size}{extra}>; rel="next"')
        if links:
            headers["Link"] = " , ".join(links)
        return 200, items, headers
