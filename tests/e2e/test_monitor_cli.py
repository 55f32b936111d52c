"""`fleetrun monitor` as a user runs it, against the local runtime (the shared `stack`, which has
no Prometheus configured)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.stack import Stack, fleetrun
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def snapshot(env: dict[str, str]) -> dict[str, Any]:
    done = fleetrun("monitor", "snapshot", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_snapshot_counts_a_node_registered_through_the_cli(stack: Stack, env: dict[str, str]) -> None:
    # GIVEN the fleet as the snapshot sees it
    before = snapshot(env)["nodes"]["idle"]
    # WHEN a node is registered
    registered = fleetrun("node", "register", stack.node_id("monitor"), env=env)
    assert registered.returncode == 0, registered.stderr
    # THEN the snapshot counts it once the stream has delivered (no 10 s wait: node counts are live)
    wait_for(lambda: snapshot(env)["nodes"]["idle"] == before + 1 or None, 10, "the snapshot to count the node")
    table = fleetrun("monitor", "snapshot", env=env)
    assert table.returncode == 0, table.stderr
    for heading in ("nodes", "tasks", "node runs", "in flight", "waiting", "idle", "as of"):
        assert heading in table.stdout


def test_gpu_without_prometheus_says_what_to_configure(env: dict[str, str]) -> None:
    done = fleetrun("monitor", "gpu", "--range", "6h", env=env)
    assert done.returncode == 1
    assert "service_unavailable" in done.stderr
    assert "FLEETRUN_PROMETHEUS_URL" in done.stderr
    assert done.stdout == ""


def test_gpu_rejects_a_bad_range_with_its_path(env: dict[str, str]) -> None:
    done = fleetrun("monitor", "gpu", "--range", "6y", env=env)
    assert done.returncode == 1
    assert "$query.range" in done.stderr
