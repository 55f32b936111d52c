"""The node id `service` names the one run of every task the service executes itself
(`images.sync`): no agent may hold it. Before it was reserved, an admin could register a machine
called `service`, and its agent claimed the image syncs — with the Harbor robot secret."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.domain.task_types import SERVICE_NODE
from chalicelib.store import inventory
from tests.harbor_server import HarborServer
from tests.harness import Fleet
from tests.integration.test_harbor_image_sync import harbor  # noqa: F401  (the fixture)


def refused(answer: Any, path: str) -> None:
    assert answer.status == 400, answer
    assert answer.body["error"]["code"] == "validation_error"
    assert "reserved" in answer.body["error"]["message"]
    assert [d["path"] for d in answer.body["error"]["details"]] == [path]


def test_a_node_cannot_be_registered_as_service(fleet: Fleet):
    answer = fleet.call("POST", "/v1/nodes", {"node_id": SERVICE_NODE}, bearer=fleet.admin)

    refused(answer, "$.node_id")
    assert fleet.user("GET", f"/v1/nodes/{SERVICE_NODE}").status == 404


@pytest.mark.parametrize(("field", "value"), [("target_nodes", ["edge-1", SERVICE_NODE]),
                                             ("runner_node", SERVICE_NODE)])
def test_an_agent_task_cannot_name_the_service_as_a_node(fleet: Fleet, field: str, value: Any):
    fleet.register("edge-1")
    body = {"type": "shell", "target_nodes": ["edge-1"], "parameters": {"command": ["true"]}, field: value}

    refused(fleet.submit(body), f"$.{field}")
    assert fleet.user("GET", "/v1/tasks?type=shell").body["items"] == []


def test_a_dispatch_request_cannot_add_the_service_as_a_node(fleet: Fleet):
    # GIVEN a running shell task
    fleet.register("edge-1")
    task_id = fleet.submit({"type": "shell", "target_nodes": ["edge-1"],
                            "parameters": {"command": ["true"]}}).body["task_id"]
    fleet.settle()

    # WHEN a dispatch request names the service THEN it is refused and adds no target
    refused(fleet.user("POST", f"/v1/tasks/{task_id}/dispatch", {"target_nodes": [SERVICE_NODE]}), "$.target_nodes")
    assert fleet.task(task_id)["target_nodes"] == ["edge-1"]


def test_a_node_registered_as_service_before_the_id_was_reserved_is_refused_every_agent_route(
        fleet: Fleet, harbor: HarborServer):  # noqa: F811
    # GIVEN a node `service` with a valid token (written as an older release would have), and an
    # image sync whose run is claimable (dispatched, not yet taken by the work queue's worker)
    node, token = _registered_before_the_reservation(fleet)
    task_id = _image_sync_waiting_for_the_worker(fleet)

    # WHEN its agent claims, or reports for the service's run
    claim = fleet.call("POST", f"/v1/agents/{node}/claim", {"max": 5}, bearer=token)
    events = fleet.call("POST", f"/v1/runs/{task_id}.{SERVICE_NODE}/events",
                        {"attempt": 1, "events": [{"type": "info", "message": "x"}]}, bearer=token)

    # THEN both are forbidden, and the sync runs in the service with its secret handed to nobody
    assert (claim.status, claim.body["error"]["code"]) == (403, "forbidden"), claim
    assert "reserved" in claim.body["error"]["message"]
    assert events.status == 403, events
    fleet.settle()
    assert fleet.task(task_id, who="root")["status"] == "completed"


def test_deregistering_a_node_registered_as_service_before_leaves_the_service_s_runs_alone(
        fleet: Fleet, harbor: HarborServer):  # noqa: F811
    # GIVEN a node `service` from an older release, and an image sync whose run waits in the queue
    _registered_before_the_reservation(fleet)
    task_id = _image_sync_waiting_for_the_worker(fleet)

    # WHEN the admin deregisters the node, as the agent routes' 403 tells them to
    answer = fleet.user("DELETE", f"/v1/nodes/{SERVICE_NODE}", who="root", roles=("admin",))

    # THEN it is gone, and the sync still runs in the service
    assert answer.status == 200, answer
    assert fleet.user("GET", f"/v1/nodes/{SERVICE_NODE}").status == 404
    fleet.settle()
    assert fleet.task(task_id, who="root")["status"] == "completed"


def test_a_selector_matching_a_node_registered_as_service_before_is_refused(fleet: Fleet):
    # GIVEN a node `service` registered by an older release, labelled like a pool
    _registered_before_the_reservation(fleet, {"pool": "edge"})

    # WHEN a task selects that pool THEN it is refused, naming the selector
    body = {"type": "shell", "target_selector": {"labels": {"pool": "edge"}}, "parameters": {"command": ["true"]}}
    refused(fleet.submit(body), "$.target_selector")


def _registered_before_the_reservation(fleet: Fleet, labels: dict[str, str] | None = None) -> tuple[str, str]:
    from chalicelib import auth, clock

    token, token_hash = auth.new_node_token(SERVICE_NODE)
    inventory.create(SERVICE_NODE, labels or {}, 1, token_hash, clock.now_iso())
    return SERVICE_NODE, token


def _image_sync_waiting_for_the_worker(fleet: Fleet) -> str:
    """An image sync, dispatched: its run is claimable, and the work queue's worker has not run."""
    answer = fleet.user("POST", "/v1/images/sync", {}, who="root", roles=("admin",))
    assert answer.status == 202, answer
    for _ in range(10):
        fleet.stream.drain()
        fleet.queue.drain()
    return str(answer.body["task_id"])
