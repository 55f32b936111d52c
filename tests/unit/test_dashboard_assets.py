"""The dashboard's files are served by the app: `/` and `/ui/<file>`, right content types,
ETag revalidation, and nothing outside the static directory."""

from __future__ import annotations

import re

import pytest
from chalice.test import Client

from chalicelib.dashboard import assets


@pytest.fixture(scope="module")
def client():
    import app as app_module

    with Client(app_module.app) as test_client:
        yield test_client


def test_the_root_is_the_dashboard_page(client):
    answer = client.http.get("/")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert answer.headers["Cache-Control"] == "no-cache"
    assert "script-src 'self';" in answer.headers["Content-Security-Policy"]
    assert b'<script type="module" src="ui/app.js">' in answer.body


@pytest.mark.parametrize(("name", "content_type"), [
    ("app.js", "text/javascript; charset=utf-8"),
    ("style.css", "text/css; charset=utf-8"),
    ("favicon.svg", "image/svg+xml"),
])
def test_assets_have_their_content_type(client, name, content_type):
    answer = client.http.get(f"/ui/{name}")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == content_type
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_an_unchanged_asset_is_revalidated_with_its_etag(client):
    etag = client.http.get("/ui/app.js").headers["ETag"]
    answer = client.http.get("/ui/app.js", headers={"If-None-Match": etag})
    assert answer.status_code == 304
    assert answer.body == b""
    assert client.http.get("/ui/app.js", headers={"If-None-Match": '"other"'}).status_code == 200


@pytest.mark.parametrize("name", ["missing.js", "..%2Fassets.py", "assets.py", "__init__.py", ".."])
def test_anything_else_is_404(client, name):
    answer = client.http.get(f"/ui/{name}")
    assert answer.status_code == 404


def test_every_module_import_and_page_reference_is_a_served_asset():
    served = set(assets.names())
    referenced: set[str] = set()
    for name in served:
        body = assets.find(name).body  # type: ignore[union-attr]
        referenced.update(re.findall(r'from "\./([\w.-]+)"', body))
        referenced.update(re.findall(r'"ui/([\w.-]+)"', body))
    assert referenced, "no references found: the pattern is stale"
    assert referenced <= served, referenced - served
