"""A read-only Harbor v2.0 API client: projects, repositories and tagged artifacts, every page.

Pages are followed through the `Link: <...>; rel="next"` header Harbor answers with. A 5xx
answer or a connection error is retried with backoff; when it persists, `HarborError` names
the request, so a caller never mistakes a partial listing for a complete one. urllib3 ships
with botocore in the Lambda: no new dependency.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote, urlencode, urljoin, urlsplit

import urllib3

from chalicelib import clock
from chalicelib.domain.images import Tagged
from chalicelib.errors import HarborError

API: Final = "/api/v2.0"
_NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


@dataclass(frozen=True)
class HarborSettings:
    url: str
    username: str | None = None
    password: str | None = None
    page_size: int = 100
    tries: int = 3
    backoff_seconds: float = 1.0
    timeout_seconds: float = 15.0


class HarborClient:
    """`projects()`, `repositories(project)`, `artifacts(repository)`: generators over every page."""

    def __init__(self, settings: HarborSettings, http: urllib3.PoolManager | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self._base = settings.url.rstrip("/")
        self._http = http or urllib3.PoolManager(retries=False, timeout=settings.timeout_seconds)
        self._sleep = sleep
        self._headers = {"Accept": "application/json"}
        if settings.username:  # RFC 7617: UTF-8 (urllib3.make_headers encodes latin-1, and fails beyond it)
            credentials = f"{settings.username}:{settings.password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")

    def projects(self) -> Iterator[str]:
        for item in self._items(f"{API}/projects"):
            yield str(item["name"])

    def repositories(self, project: str) -> Iterator[str]:
        """Full repository names (`project/repo`) of a project."""
        for item in self._items(f"{API}/projects/{_segment(project)}/repositories"):
            yield str(item["name"])

    def artifacts(self, repository: str) -> Iterator[tuple[dict[str, Any], list[Tagged]]]:
        """Each artifact of a repository with its tags (an untagged artifact has none).

        A repository that no longer exists (404, deleted since it was listed) has no artifacts.
        """
        project, _, name = repository.partition("/")
        # Harbor wants a repository name containing "/" encoded twice: a/b -> a%252Fb
        path = f"{API}/projects/{_segment(project)}/repositories/{_segment(quote(name, safe=''))}/artifacts"
        for item in self._items(path, {"with_tag": "true"}, missing_ok=True):
            yield item, [_tagged(repository, item, tag) for tag in item.get("tags") or []]

    # --- paging and retries ---------------------------------------------------------------
    def _items(self, path: str, params: dict[str, str] | None = None,
               missing_ok: bool = False) -> Iterator[dict[str, Any]]:
        query = {"page": "1", "page_size": str(self.settings.page_size), **(params or {})}
        url: str | None = f"{self._base}{path}?{urlencode(query)}"
        while url is not None:
            response = self._get(url, missing_ok)
            if response is None:
                return
            body = _json(response, url)
            if not isinstance(body, list):
                raise HarborError(f"Harbor GET {url} answered something other than a list")
            yield from body
            url = self._next(response.headers.get("Link"))

    def _next(self, link: str | None) -> str | None:
        match = _NEXT_LINK.search(link or "")
        if match is None:
            return None
        url = urljoin(self._base + "/", str(match.group(1)))
        # the robot's credentials go with every page: never to a host the admin did not choose
        if urlsplit(url)[:2] != urlsplit(self._base)[:2]:
            raise HarborError("Harbor's next-page link points at another host; the listing was stopped")
        return url

    def _get(self, url: str, missing_ok: bool) -> urllib3.BaseHTTPResponse | None:
        tries = self.settings.tries
        problem = ""
        for attempt in range(1, tries + 1):
            try:
                response = self._http.request("GET", url, headers=self._headers, redirect=False)
            except urllib3.exceptions.HTTPError as error:
                problem = f"failed after {tries} tries ({type(error).__name__})"
            else:
                if response.status == 200:
                    return response
                if response.status == 404 and missing_ok:
                    return None
                if response.status in (401, 403):
                    raise HarborError(f"Harbor GET {url} answered {response.status}: check the robot account "
                                      "name, its secret and its permissions")
                if response.status < 500 and response.status != 429:
                    raise HarborError(f"Harbor GET {url} answered {response.status}")
                problem = f"answered {response.status} after {tries} tries"
            if attempt < tries:
                self._sleep(self.settings.backoff_seconds * 2 ** (attempt - 1))
        raise HarborError(f"Harbor GET {url} {problem}")


def _segment(value: str) -> str:
    return quote(value, safe="")


def _json(response: urllib3.BaseHTTPResponse, url: str) -> Any:
    try:
        return json.loads(response.data)
    except ValueError:
        raise HarborError(f"Harbor GET {url} answered a body that is not JSON") from None


def _tagged(repository: str, artifact: dict[str, Any], tag: dict[str, Any]) -> Tagged:
    return Tagged(
        repository=repository,
        tag=str(tag["name"]),
        digest=str(artifact["digest"]),
        size_bytes=int(artifact.get("size") or 0),
        pushed_at=_timestamp(tag.get("push_time") or artifact.get("push_time")),
    )


def _timestamp(value: Any) -> str | None:
    """Harbor's push times (`2026-11-02T08:15:03.512Z`, sometimes without fraction) in the contract's format."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return clock.rfc3339(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None
