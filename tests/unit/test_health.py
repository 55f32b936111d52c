"""`GET /v1/health` tells clients what they need before signing in, node statuses included."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from chalice.test import Client

from chalicelib.domain.node_states import NODE_STATUSES


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    import app as app_module

    with Client(app_module.app) as test_client:
        yield test_client


def test_health_lists_the_node_statuses_of_the_domain_in_order(client: Client) -> None:
    answer = client.http.get("/v1/health")
    assert answer.status_code == 200
    assert json.loads(answer.body)["node_statuses"] == list(NODE_STATUSES)


def test_no_dashboard_script_spells_out_the_node_statuses() -> None:
    # the fleet page takes them from GET /v1/health, so a new status needs no JavaScript change
    from chalicelib.dashboard.assets import STATIC_DIR

    scripts = {path.name: path.read_text() for path in STATIC_DIR.glob("*.js")}
    assert scripts
    assert [name for name, text in scripts.items() if '"maintenance"' in text] == []
