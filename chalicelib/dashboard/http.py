"""HTTP answers for the dashboard's files: content types, ETags (304), 404."""

from __future__ import annotations

from chalice.app import Request, Response

from chalicelib.dashboard import assets


def page(name: str, request: Request | None) -> Response:
    """The asset `name`; 404 for anything else. (The WebSocket URL comes from GET /v1/health.)"""
    headers = (request.headers if request is not None else {}) or {}
    asset = assets.find(name)
    if asset is None:
        return Response(body="not found\n", status_code=404,
                        headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"})
    common: dict[str, str | list[str]] = {
        "ETag": asset.etag, "Cache-Control": assets.CACHE_CONTROL, "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": assets.CONTENT_SECURITY_POLICY,
    }
    if headers.get("if-none-match") == asset.etag:
        return Response(body="", status_code=304, headers=common)
    return Response(body=asset.body, status_code=200, headers={"Content-Type": asset.content_type, **common})
