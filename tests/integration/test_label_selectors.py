"""Label targeting on moto (API.md `target_selector`, `GET /v1/nodes?label=`, `dispatch
{"selector": true}`): the label index follows every node write that changes what selectors see,
a resolution reads only the index, and a reused release reaches the nodes added since."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from pynamodb.connection.base import Connection

from chalicelib.services import harbor_sources, nodes, selectors
from chalicelib.store import label_index
from chalicelib.store.models import LabelItem, NodeItem, node_pk
from tests.harness import Answer, Fleet, assert_statistics_equal_recount

ADMIN = ("admin",)
CDN = {"pool": "cdn"}


def admin(fleet: Fleet, method: str, path: str, body: Any = None) -> Answer:
    return fleet.user(method, path, body, who="root", roles=ADMIN)


def register(fleet: Fleet, node: str, labels: dict[str, str]) -> None:
    answer = admin(fleet, "POST", "/v1/nodes", {"node_id": node, "labels": labels})
    assert answer.status == 201, answer
    fleet.node_tokens[node] = answer.body["token"]


def shell(**extra: Any) -> dict[str, Any]:
    return {"type": "shell", "parameters": {"command": ["true"]}, **extra}


def selected(labels: dict[str, str]) -> list[str]:
    return selectors.resolve(labels)


def index_items(labels: dict[str, str]) -> list[str]:
    """The node ids of the raw index items of one pair."""
    (key, value), = labels.items()
    return [item.sk for item in LabelItem.query(label_index.label_pk(key, value), consistent_read=True)]


def problems(answer: Answer) -> list[dict[str, str]]:
    assert answer.status == 400, answer
    assert answer.body["error"]["code"] == "validation_error"
    return answer.body["error"]["details"]  # type: ignore[no-any-return]


@pytest.fixture
def cdn(fleet: Fleet) -> Fleet:
    """Three nodes in pool cdn (two of them in eu), one in pool gpu."""
    register(fleet, "edge-1", {"pool": "cdn", "region": "eu"})
    register(fleet, "edge-2", {"pool": "cdn", "region": "eu"})
    register(fleet, "edge-3", {"pool": "cdn", "region": "us"})
    register(fleet, "gpu-1", {"pool": "gpu"})
    return fleet


class TestTheIndexFollowsTheNodes:
    def test_a_selector_picks_every_node_holding_all_its_pairs_in_id_order(self, cdn):
        assert selected(CDN) == ["edge-1", "edge-2", "edge-3"]
        assert selected({"pool": "cdn", "region": "eu"}) == ["edge-1", "edge-2"]
        assert selected({"region": "eu", "pool": "gpu"}) == []

    def test_a_patched_label_moves_the_node_between_selectors_at_the_next_resolution(self, cdn):
        # WHEN edge-2 is moved to the gpu pool
        assert admin(cdn, "PATCH", "/v1/nodes/edge-2", {"labels": {"pool": "gpu"}}).status == 200
        # THEN the next resolutions see it there, and no index item of its old labels is left
        assert selected(CDN) == ["edge-1", "edge-3"]
        assert selected({"pool": "gpu"}) == ["edge-2", "gpu-1"]
        assert index_items({"region": "eu"}) == ["edge-1"]
        # AND a change of slots alone leaves the index as it is
        assert admin(cdn, "PATCH", "/v1/nodes/edge-2", {"slots": 3}).status == 200
        assert selected({"pool": "gpu"}) == ["edge-2", "gpu-1"]

    def test_a_node_in_maintenance_is_left_out_until_its_reclaim_succeeds(self, cdn):
        # WHEN edge-1 is being reclaimed
        reclaim = admin(cdn, "POST", "/v1/nodes/edge-1/reclaim", {"user": "bob"})
        assert reclaim.status == 202, reclaim
        # THEN no selector picks it, though GET /v1/nodes?label= still lists it
        assert selected(CDN) == ["edge-2", "edge-3"]
        listed = admin(cdn, "GET", "/v1/nodes?label=pool:cdn").body["items"]
        assert next((n["node_id"], n["status"]) for n in listed) == ("edge-1", "maintenance")
        # WHEN the reclaim succeeds / THEN it is picked again
        cdn.settle()
        assert cdn.run_agents(["edge-1"]) == 1
        assert selected(CDN) == ["edge-1", "edge-2", "edge-3"]

    def test_a_node_whose_reclaim_failed_stays_left_out(self, cdn):
        admin(cdn, "POST", "/v1/nodes/edge-3/reclaim", {"user": "bob"})
        cdn.settle()
        cdn.run_agents(["edge-3"], fail=frozenset({"edge-3"}))
        assert admin(cdn, "GET", "/v1/nodes/edge-3").body["status"] == "maintenance"
        assert selected(CDN) == ["edge-1", "edge-2"]

    def test_a_deregistered_node_leaves_the_index_and_comes_back_with_its_new_labels(self, cdn):
        assert admin(cdn, "DELETE", "/v1/nodes/edge-2").status == 200
        assert selected(CDN) == ["edge-1", "edge-3"]
        assert index_items({"region": "eu"}) == ["edge-1"]
        register(cdn, "edge-2", {"pool": "gpu"})
        assert selected(CDN) == ["edge-1", "edge-3"]
        assert selected({"pool": "gpu"}) == ["edge-2", "gpu-1"]

    def test_a_label_change_racing_another_leaves_the_index_as_the_node_ends(self, cdn, monkeypatch):
        # GIVEN another admin's PATCH lands between this PATCH's read of edge-1 and its write
        indexed, raced = label_index.indexed, []

        def racing(basis: Any, write: Any) -> Any:
            if not raced:
                raced.append(write.action)  # first: the racing PATCH passes through here too
                nodes.update("edge-1", {"pool": "gpu"}, None)
            return indexed(basis, write)

        monkeypatch.setattr(label_index, "indexed", racing)
        # WHEN this PATCH is applied
        answer = admin(cdn, "PATCH", "/v1/nodes/edge-1", {"labels": {"pool": "web"}})
        # THEN it is written over the other one, and the index holds exactly the final labels
        assert (answer.status, answer.body["labels"]) == (200, {"pool": "web"})
        assert (selected({"pool": "web"}), selected({"pool": "gpu"}), selected(CDN)) == (
            ["edge-1"], ["gpu-1"], ["edge-2", "edge-3"])
        assert index_items({"region": "eu"}) == ["edge-2"]

    def test_a_reclaim_outcome_racing_a_label_change_still_brings_the_node_back(self, cdn, monkeypatch):
        admin(cdn, "POST", "/v1/nodes/edge-1/reclaim", {"user": "bob"})
        cdn.settle()
        indexed, raced = label_index.indexed, []

        def racing(basis: Any, write: Any) -> Any:
            if write.action == "reclaim_succeeded" and not raced:
                raced.append(write.action)
                nodes.update("edge-1", {"pool": "web"}, None)
            return indexed(basis, write)

        monkeypatch.setattr(label_index, "indexed", racing)
        assert cdn.run_agents(["edge-1"]) == 1
        assert admin(cdn, "GET", "/v1/nodes/edge-1").body["status"] == "idle"
        assert (selected({"pool": "web"}), selected(CDN)) == (["edge-1"], ["edge-2", "edge-3"])

    @pytest.mark.parametrize(("first", "second"), [
        ({"a#b": "c"}, {"a": "b#c"}),
        ({"a=b": "c"}, {"a": "b=c"}),
        ({"a|b": "c"}, {"a": "b|c"}),
        ({"a%23b": "c"}, {"a#b": "c"}),
    ])
    def test_labels_that_spell_alike_once_joined_are_two_pairs(self, fleet, first, second):
        register(fleet, "n-1", first)
        register(fleet, "n-2", second)
        assert selected(first) == ["n-1"]
        assert selected(second) == ["n-2"]


class TestSubmitWithASelector:
    def test_the_resolved_nodes_become_the_targets_after_the_given_ones(self, cdn):
        register(cdn, "edge-0", {"pool": "other"})
        answer = cdn.submit(shell(target_nodes=["gpu-1", "edge-2"], target_selector={"labels": {"pool": "cdn"}}))
        assert answer.status == 202, answer
        assert answer.body["target_nodes"] == ["gpu-1", "edge-2", "edge-1", "edge-3"]
        assert answer.body["target_selector"] == {"labels": {"pool": "cdn"}}
        assert cdn.task(answer.body["task_id"])["target_selector"] == {"labels": {"pool": "cdn"}}

    def test_a_task_without_a_selector_shows_null(self, cdn):
        answer = cdn.submit(shell(target_nodes=["edge-1"]))
        assert answer.body["target_selector"] is None

    def test_a_selector_matching_nothing_is_a_validation_error_at_the_selector(self, cdn):
        details = problems(cdn.submit(shell(target_selector={"labels": {"pool": "nowhere"}})))
        assert [d["path"] for d in details] == ["$.target_selector"]

    def test_a_selector_whose_only_matches_are_in_maintenance_matches_nothing(self, fleet):
        register(fleet, "m-1", {"pool": "solo"})
        admin(fleet, "POST", "/v1/nodes/m-1/reclaim", {"user": "bob"})
        assert [d["path"] for d in problems(fleet.submit(shell(target_selector={"labels": {"pool": "solo"}})))] == [
            "$.target_selector"]

    @pytest.mark.parametrize(("selector", "path"), [
        ({"labels": {"pool": 7}}, "$.target_selector.labels.pool"),
        ({"labels": {"pool": None}}, "$.target_selector.labels.pool"),
        ({"labels": {}}, "$.target_selector.labels"),
        ({"labels": {f"k{i}": "v" for i in range(17)}}, "$.target_selector.labels"),
        ({"pool": "cdn"}, "$.target_selector.labels"),
        ({"labels": {"pool": "cdn"}, "extra": 1}, "$.target_selector.extra"),
        ({"labels": {"pool": "bad\u0007"}}, "$.target_selector.labels.pool"),
    ])
    def test_a_malformed_selector_is_a_validation_error_with_its_path(self, cdn, selector, path):
        assert path in [d["path"] for d in problems(cdn.submit(shell(target_selector=selector)))]

    def test_a_service_executed_type_takes_no_selector(self, cdn, monkeypatch):
        monkeypatch.setattr(harbor_sources, "check_task", lambda *_: None)  # any Harbor will do here
        body = {"type": "images.sync", "target_selector": {"labels": CDN},
                "parameters": {"harbor_url": "https://harbor.example", "robot_name": "robot$sync",
                               "robot_secret": "robot-secret-value"}}
        assert [d["path"] for d in problems(cdn.submit(body))] == ["$.target_selector"]

    def test_a_two_phase_type_still_takes_exactly_one_target(self, cdn):
        body = {"type": "iac.plan_apply", "parameters": {"workspace": "w", "source": "s"},
                "target_selector": {"labels": {"pool": "cdn", "region": "eu"}}}
        assert [d["path"] for d in problems(cdn.submit(body))] == ["$.target_selector"]


class TestDispatchBySelector:
    def test_a_node_labelled_later_gets_its_run_and_a_repeat_creates_nothing(self, cdn):
        # GIVEN a running task on the three cdn nodes
        task_id = cdn.submit(shell(target_selector={"labels": CDN})).body["task_id"]
        cdn.settle()
        # WHEN a fourth cdn node registers and the task is dispatched by its selector
        register(cdn, "edge-4", CDN)
        answer = cdn.user("POST", f"/v1/tasks/{task_id}/dispatch", {"selector": True})
        # THEN only the new node gets a run
        assert answer.status == 200, answer
        dispatch = answer.body["dispatch"]
        assert (dispatch["created_count"], dispatch["skipped_count"], dispatch["target_node_count"]) == (1, 3, 4)
        assert sorted(answer.body["task"]["target_nodes"]) == ["edge-1", "edge-2", "edge-3", "edge-4"]
        # AND the same dispatch again creates nothing
        again = cdn.user("POST", f"/v1/tasks/{task_id}/dispatch", {"selector": True}).body["dispatch"]
        assert (again["created_count"], again["skipped_count"]) == (0, 4)
        # AND every node runs once: the task completes
        cdn.settle()
        assert cdn.run_agents(["edge-1", "edge-2", "edge-3", "edge-4"]) == 4
        assert cdn.task(task_id)["status"] == "completed"

    def test_a_task_without_a_selector_has_nothing_to_re_resolve(self, cdn):
        task_id = cdn.submit(shell(target_nodes=["edge-1"])).body["task_id"]
        cdn.settle()
        details = problems(cdn.user("POST", f"/v1/tasks/{task_id}/dispatch", {"selector": True}))
        assert [d["path"] for d in details] == ["$.selector"]

    @pytest.mark.parametrize("body", [
        {}, {"selector": False}, {"selector": True, "target_nodes": ["edge-1"]}, {"selector": "yes"},
    ])
    def test_the_body_is_exactly_one_of_target_nodes_and_selector_true(self, cdn, body):
        task_id = cdn.submit(shell(target_selector={"labels": CDN})).body["task_id"]
        cdn.settle()
        problems(cdn.user("POST", f"/v1/tasks/{task_id}/dispatch", body))

    def test_a_finished_release_reaches_a_node_added_since_and_runs_again(self, cdn):
        # GIVEN a release that completed on the three cdn nodes
        task_id = cdn.submit(shell(target_selector={"labels": CDN})).body["task_id"]
        cdn.settle()
        assert cdn.run_agents(["edge-1", "edge-2", "edge-3"]) == 3
        cdn.settle()
        assert cdn.task(task_id)["status"] == "completed"
        # WHEN a fourth cdn node registers and the release is dispatched by its selector
        register(cdn, "edge-4", CDN)
        answer = cdn.user("POST", f"/v1/tasks/{task_id}/dispatch", {"selector": True})
        # THEN only the new node gets a run, and the task is running again, its finish undone
        assert answer.status == 200, answer
        assert (answer.body["dispatch"]["created_count"], answer.body["dispatch"]["skipped_count"]) == (1, 3)
        assert (answer.body["task"]["status"], answer.body["task"]["completed_at"]) == ("running", None)
        # AND once the new node has run, the task is completed again and the statistics are exact
        cdn.settle()
        assert cdn.run_agents(["edge-4"]) == 1
        cdn.settle()
        done = cdn.task(task_id)
        assert (done["status"], done["node_counts"]["succeeded"]) == ("completed", 4)
        assert_statistics_equal_recount()

    def test_a_finished_release_with_nothing_new_stays_finished(self, cdn):
        task_id = cdn.submit(shell(target_selector={"labels": {"pool": "gpu"}})).body["task_id"]
        cdn.settle()
        cdn.run_agents(["gpu-1"])
        cdn.settle()
        answer = cdn.user("POST", f"/v1/tasks/{task_id}/dispatch", {"selector": True})
        assert (answer.body["dispatch"]["created_count"], answer.body["dispatch"]["skipped_count"]) == (0, 1)
        assert answer.body["task"]["status"] == "completed"

    def test_naming_nodes_for_a_finished_task_is_refused_as_the_contract_says(self, cdn):
        task_id = cdn.submit(shell(target_selector={"labels": {"pool": "gpu"}})).body["task_id"]
        cdn.settle()
        cdn.run_agents(["gpu-1"])
        cdn.settle()
        answer = cdn.user("POST", f"/v1/tasks/{task_id}/dispatch", {"target_nodes": ["edge-1"]})
        assert (answer.status, answer.body["error"]["code"]) == (409, "invalid_transition")

    def test_a_finished_task_with_a_concurrency_key_is_not_reopened(self, cdn):
        # its key went to the next task when it finished: running again would run two at once
        body = shell(target_selector={"labels": {"pool": "gpu"}}, concurrency_key="gpu-pool")
        task_id = cdn.submit(body).body["task_id"]
        cdn.settle()
        cdn.run_agents(["gpu-1"])
        cdn.settle()
        register(cdn, "gpu-2", {"pool": "gpu"})
        answer = cdn.user("POST", f"/v1/tasks/{task_id}/dispatch", {"selector": True})
        assert (answer.status, answer.body["error"]["code"]) == (409, "invalid_transition")


class TestNodesRegisteredBeforeTheIndex:
    def test_the_repair_indexes_them_once_and_selectors_then_see_them(self, cdn):
        # GIVEN a node registered before the label index existed: no index items, no selector_rev
        old = NodeItem(node_pk("edge-old"), "META", node_id="edge-old", labels={"pool": "cdn"}, status="idle",
                       token_hash="x", created_at="2026-11-01T00:00:00.000Z", list_pk="NODE", list_sk="edge-old")
        old.save()
        assert "edge-old" not in selected(CDN)
        # WHEN the repair runs (the daily reconcile, the local runtime's start), twice
        first, second = selectors.index_unindexed_nodes(), selectors.index_unindexed_nodes()
        # THEN it indexed that node once, and selectors see it
        assert (first, second) == (1, 0)
        assert selected(CDN) == ["edge-1", "edge-2", "edge-3", "edge-old"]
        assert nodes.get("edge-old").selector_rev == 1


class TestListingByLabel:
    def test_the_listing_pages_through_the_nodes_holding_every_pair(self, cdn):
        first = admin(cdn, "GET", "/v1/nodes?label=pool:cdn&limit=2")
        assert first.status == 200, first
        assert [n["node_id"] for n in first.body["items"]] == ["edge-1", "edge-2"]
        cursor = first.body["next_cursor"]
        rest = admin(cdn, "GET", f"/v1/nodes?label=pool:cdn&limit=2&cursor={cursor}").body
        assert [n["node_id"] for n in rest["items"]] == ["edge-3"]
        both = admin(cdn, "GET", "/v1/nodes?label=region:eu&label=pool:cdn&limit=50").body
        assert [n["node_id"] for n in both["items"]] == ["edge-1", "edge-2"]
        assert both["next_cursor"] is None

    def test_a_value_holding_a_colon_is_split_on_the_first_one(self, fleet):
        register(fleet, "u-1", {"url": "http://x"})
        listed = admin(fleet, "GET", "/v1/nodes?label=url:http://x").body["items"]
        assert [n["node_id"] for n in listed] == ["u-1"]

    def test_two_values_of_one_label_list_nothing(self, cdn):
        answer = admin(cdn, "GET", "/v1/nodes?label=pool:cdn&label=pool:gpu")
        assert (answer.status, answer.body["items"], answer.body["next_cursor"]) == (200, [], None)

    @pytest.mark.parametrize("query", ["label=pool", "label=:cdn", "label=pool:%07", "label=k:" + "v" * 257])
    def test_a_malformed_label_filter_is_a_validation_error(self, cdn, query):
        assert next(d["path"] for d in problems(admin(cdn, "GET", f"/v1/nodes?{query}"))) == "$query.label"

    def test_a_cursor_of_another_labels_listing_is_refused(self, cdn):
        cursor = admin(cdn, "GET", "/v1/nodes?label=pool:cdn&limit=1").body["next_cursor"]
        answer = admin(cdn, "GET", f"/v1/nodes?label=pool:gpu&limit=1&cursor={cursor}")
        assert [d["path"] for d in problems(answer)] == ["$query.cursor"]


@pytest.fixture
def dynamodb_requests(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every DynamoDB request PynamoDB sends, by operation."""
    sent: Counter[str] = Counter()
    dispatch = Connection.dispatch

    def counted(self: Connection, operation_name: str, operation_kwargs: dict[str, Any]) -> dict[str, Any]:
        sent[operation_name] += 1
        return dispatch(self, operation_name, operation_kwargs)

    monkeypatch.setattr(Connection, "dispatch", counted)
    return sent


@pytest.mark.slow
def test_a_resolution_of_2500_nodes_is_3_queries_and_reads_no_node_item(fleet, dynamodb_requests):
    # GIVEN 2,500 cdn nodes in the index (written as registration writes them), every 5th in eu
    with LabelItem.batch_write() as batch:
        for i in range(2500):
            labels = {"pool": "cdn", "region": "eu" if i % 5 == 0 else "us"}
            for key, value in labels.items():
                batch.save(LabelItem(label_index.label_pk(key, value), f"n-{i:05d}", node_id=f"n-{i:05d}",
                                     labels=labels, selectable=True))
    dynamodb_requests.clear()
    # WHEN the selector is resolved
    found = selectors.resolve({"region": "eu", "pool": "cdn"})
    # THEN it read the pool=cdn partition a page of 1,000 at a time, and nothing else
    assert len(found) == 500
    assert dict(dynamodb_requests) == {"Query": 3}
