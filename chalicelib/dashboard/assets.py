"""Static files of the dashboard, served from the package (chalice ships chalicelib/).

Only files that exist in `static/` with a known extension are served: a name is looked up
in a listing made once, never joined into a path, so `..` cannot escape the directory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}
#: scripts only from the app itself (the page keeps a token in localStorage); the WebSocket API
#: may live on another host (API Gateway gives it its own domain)
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
#: browsers revalidate every time (a deploy is seen at once) and get 304 while unchanged
CACHE_CONTROL: Final = "no-cache"


@dataclass(frozen=True)
class Asset:
    name: str
    body: str
    content_type: str
    etag: str


def _stamp() -> float:
    """When the directory last changed: an edited file is served at once under `make run`."""
    return max((path.stat().st_mtime for path in STATIC_DIR.iterdir()), default=0.0)


@cache
def _load(stamp: float) -> dict[str, Asset]:
    found: dict[str, Asset] = {}
    for path in sorted(STATIC_DIR.iterdir()):
        content_type = CONTENT_TYPES.get(path.suffix)
        if path.is_file() and content_type:
            body = path.read_text(encoding="utf-8")
            etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:20] + '"'
            found[path.name] = Asset(path.name, body, content_type, etag)
    return found


def find(name: str) -> Asset | None:
    """The asset called `name`, or None."""
    return _load(_stamp()).get(name)


def names() -> list[str]:
    return sorted(_load(_stamp()))

