from __future__ import annotations


def test_a_claim_records_when_the_node_was_last_seen(fleet):
    # GIVEN a node that never claimed
    fleet.register("seen-1")
    assert fleet.user("GET", "/v1/nodes/seen-1").body["last_seen_at"] is None
    # WHEN its agent claims (even with nothing to do)
    assert fleet.claim("seen-1") == []
    # THEN the node shows when it was seen
    node = fleet.user("GET", "/v1/nodes/seen-1").body
    assert node["last_seen_at"] is not None
    assert node["status"] == "idle"


def test_registering_a_node_twice_is_a_conflict_and_keeps_the_first_token(fleet):
    fleet.register("dup-1")
    answer = fleet.call("POST", "/v1/nodes", {"node_id": "dup-1"}, bearer=fleet.admin)
    assert answer.status == 409
    assert answer.body["error"]["code"] == "conflict"
    assert fleet.claim("dup-1") == []  # the first token still works


def test_nodes_are_listed_with_pagination(fleet):
    fleet.register("page-1", "page-2", "page-3")
    first = fleet.user("GET", "/v1/nodes?limit=2").body
    assert len(first["items"]) == 2
    assert first["next_cursor"]
    second = fleet.user("GET", f"/v1/nodes?limit=2&cursor={first['next_cursor']}").body
    assert {n["node_id"] for n in first["items"] + second["items"]} == {"page-1", "page-2", "page-3"}
