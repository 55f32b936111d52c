"""A small HTTP client of the fleetrun API, shared by the CLI and the agent."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import requests


class ApiError(Exception):
    """The API answered with an error body (`{"error": {"code", "message", ...}}`)."""

    def __init__(self, status: int, code: str, message: str, body: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.body = status, code, message, body or {}
        self.headers = headers or {}


@dataclass
class Api:
    base_url: str
    token: str | None = None
    timeout: float = 30.0

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self._session = requests.Session()

    def request(self, method: str, path: str, body: Any = None, *, params: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None,
                follow_redirects: bool = True) -> tuple[int, Any, dict[str, str]]:
        """Send one request; return (status, decoded body, headers). Raises ApiError on 4xx/5xx
        and requests.RequestException when the API cannot be reached."""
        sent = {"Accept": "application/json", **(headers or {})}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            sent["Content-Type"] = "application/json"
            data = json.dumps(body)
        query = {k: v for k, v in (params or {}).items() if v is not None}
        response = self._session.request(
            method, f"{self.base_url}{path}", data=data, params=query, headers=sent, timeout=self.timeout,
            allow_redirects=follow_redirects,
        )
        decoded: Any = response.json() if response.content else None
        if response.status_code >= 400:
            error = (decoded or {}).get("error", {}) if isinstance(decoded, dict) else {}
            raise ApiError(response.status_code, error.get("code", "http_error"),
                           error.get("message", response.text[:200]), decoded if isinstance(decoded, dict) else None,
                           dict(response.headers))
        return response.status_code, decoded, dict(response.headers)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)[1]

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        return self.request("POST", path, body, headers=headers)[1]

    def pages(self, path: str, limit: int = 200, **params: Any) -> list[Any]:
        """Every item of a paginated list."""
        items: list[Any] = []
        cursor: str | None = None
        while True:
            page = self.get(path, limit=limit, cursor=cursor, **params)
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items
