"""Node inventory on moto: allocations, reclaim (success, failure, retry), maintenance claims,
offline and back. Every status change goes through the node transition table."""

from __future__ import annotations

import pytest

from chalicelib import clock
from chalicelib.errors import Busy
from chalicelib.services import liveness, reclaim
from chalicelib.store import index_reads, inventory, retrying
from chalicelib.store.models import AllocationItem, NodeItem, node_pk
from tests.faults import fail_calls, throttled, transaction_conflict

ADMIN = ("admin",)


def admin(fleet, method, path, body=None):
    return fleet.user(method, path, body, who="root", roles=ADMIN)


def node(fleet, node_id):
    answer = admin(fleet, "GET", f"/v1/nodes/{node_id}")
    assert answer.status == 200, answer
    return answer.body


def names(fleet, task_id):
    return [e.get("name") for e in fleet.events(task_id, who="root")]


class TestAllocations:
    def test_allocate_and_release_record_one_allocation_with_start_and_end(self, fleet):
        # GIVEN an idle node
        fleet.register("gpu-1")
        # WHEN it is allocated to bob and released
        allocated = admin(fleet, "POST", "/v1/nodes/gpu-1/allocate", {"user": "bob"})
        # THEN it is allocated with an open allocation
        assert allocated.status == 200, allocated
        assert allocated.body["node"]["status"] == "allocated"
        opened = allocated.body["allocation"]
        assert allocated.body["node"]["allocation"]["allocation_id"] == opened["allocation_id"]
        assert opened["user"] == "bob"
        assert opened["ended_at"] is None
        released = admin(fleet, "POST", "/v1/nodes/gpu-1/release")
        assert released.status == 200, released
        assert released.body["node"]["status"] == "idle"
        assert released.body["node"]["allocation"] is None
        closed = released.body["allocation"]
        assert closed["allocation_id"] == opened["allocation_id"]
        assert closed["ended_at"] >= closed["started_at"]
        assert closed["ended_by"] == "release"
        # AND the node's history holds exactly that allocation, ended
        items = admin(fleet, "GET", "/v1/nodes/gpu-1/allocations").body["items"]
        assert [(a["allocation_id"], a["ended_at"]) for a in items] == [(opened["allocation_id"], closed["ended_at"])]

    def test_allocating_an_allocated_node_is_an_invalid_transition(self, fleet):
        fleet.register("gpu-2")
        assert admin(fleet, "POST", "/v1/nodes/gpu-2/allocate", {"user": "bob"}).status == 200
        answer = admin(fleet, "POST", "/v1/nodes/gpu-2/allocate", {"user": "carol"})
        assert answer.status == 409
        assert answer.body["error"]["code"] == "invalid_transition"
        assert answer.body["error"]["current_status"] == "allocated"
        assert answer.body["error"]["allowed_from"] == ["idle"]
        assert node(fleet, "gpu-2")["allocation"]["user"] == "bob"
        assert len(admin(fleet, "GET", "/v1/nodes/gpu-2/allocations").body["items"]) == 1

    def test_releasing_an_idle_node_is_an_invalid_transition(self, fleet):
        fleet.register("gpu-3")
        answer = admin(fleet, "POST", "/v1/nodes/gpu-3/release")
        assert answer.status == 409
        assert answer.body["error"]["current_status"] == "idle"

    def test_only_admins_allocate_and_unknown_nodes_are_not_found(self, fleet):
        fleet.register("gpu-4")
        assert fleet.user("POST", "/v1/nodes/gpu-4/allocate", {"user": "bob"}).status == 403
        assert admin(fleet, "POST", "/v1/nodes/nope/allocate", {"user": "bob"}).status == 404
        assert admin(fleet, "POST", "/v1/nodes/gpu-4/allocate", {"user": "Bob Smith"}).status == 400


class TestReclaim:
    def test_a_successful_reclaim_takes_the_node_through_maintenance_back_to_idle(self, fleet):
        # GIVEN a node allocated to bob
        fleet.register("rc-1")
        admin(fleet, "POST", "/v1/nodes/rc-1/allocate", {"user": "bob"})
        # WHEN an admin reclaims it
        answer = admin(fleet, "POST", "/v1/nodes/rc-1/reclaim")
        # THEN a machine.reclaim task for bob exists and the node is in maintenance, allocation ended
        assert answer.status == 202, answer
        task = answer.body
        assert task["type"] == "machine.reclaim"
        assert task["target_nodes"] == ["rc-1"]
        assert task["parameters"] == {"user": "bob"}
        assert answer.headers["Location"] == f"/v1/tasks/{task['task_id']}"
        during = node(fleet, "rc-1")
        assert during["status"] == "maintenance"
        assert during["allocation"] is None
        assert during["reclaim"] == {"task_id": task["task_id"], "user": "bob", "outcome": "running"}
        history = admin(fleet, "GET", "/v1/nodes/rc-1/allocations").body["items"]
        assert history[0]["ended_by"] == "reclaim"
        # WHEN the node's agent runs the reclaim successfully
        fleet.settle()
        assert fleet.run_agents(["rc-1"]) == 1
        # THEN the task completed and the node is idle again
        assert fleet.task(task["task_id"], who="root")["status"] == "completed"
        after = node(fleet, "rc-1")
        assert after["status"] == "idle"
        assert after["reclaim"] is None
        assert "node.reclaimed" in names(fleet, task["task_id"])

    def test_a_failed_reclaim_leaves_the_node_in_maintenance_with_an_event(self, fleet):
        fleet.register("rc-2")
        task_id = admin(fleet, "POST", "/v1/nodes/rc-2/reclaim", {"user": "carol"}).body["task_id"]
        fleet.settle()
        # WHEN the reclaim fails on the node
        fleet.run_agents(["rc-2"], fail=frozenset({"rc-2"}))
        # THEN the task failed (task.failed for subscribers) and the node stays in maintenance
        assert fleet.task(task_id, who="root")["status"] == "failed"
        after = node(fleet, "rc-2")
        assert after["status"] == "maintenance"
        assert after["reclaim"]["outcome"] == "failed"
        assert names(fleet, task_id).count("node.reclaim_failed") == 1
        assert "task.failed" in names(fleet, task_id)

    def test_a_new_reclaim_after_a_failure_can_bring_the_node_back(self, fleet):
        fleet.register("rc-3")
        first = admin(fleet, "POST", "/v1/nodes/rc-3/reclaim", {"user": "carol"}).body["task_id"]
        fleet.settle()
        fleet.run_agents(["rc-3"], fail=frozenset({"rc-3"}))
        # WHEN a second reclaim runs (for the failed one's user by default)
        second = admin(fleet, "POST", "/v1/nodes/rc-3/reclaim")
        assert second.status == 202, second
        assert second.body["parameters"] == {"user": "carol"}
        fleet.settle()
        fleet.run_agents(["rc-3"])
        # THEN the node is idle and the first task's late outcome changes nothing
        assert node(fleet, "rc-3")["status"] == "idle"
        reclaim.settled(first, "failed", "replayed")
        assert node(fleet, "rc-3")["status"] == "idle"

    def test_retrying_a_failed_reclaim_task_counts_its_new_outcome(self, fleet):
        fleet.register("rc-4")
        task_id = admin(fleet, "POST", "/v1/nodes/rc-4/reclaim", {"user": "dave"}).body["task_id"]
        fleet.settle()
        fleet.run_agents(["rc-4"], fail=frozenset({"rc-4"}))
        assert node(fleet, "rc-4")["reclaim"]["outcome"] == "failed"
        # WHEN the failed task is retried
        assert admin(fleet, "POST", f"/v1/tasks/{task_id}/retry", {"scope": "failed"}).status == 202
        fleet.settle()
        # THEN the node waits for the new outcome, and success makes it idle
        assert node(fleet, "rc-4")["reclaim"]["outcome"] == "running"
        fleet.run_agents(["rc-4"])
        assert fleet.task(task_id, who="root")["status"] == "completed"
        assert node(fleet, "rc-4")["status"] == "idle"

    def test_a_second_reclaim_while_one_runs_is_an_invalid_transition(self, fleet):
        fleet.register("rc-5")
        assert admin(fleet, "POST", "/v1/nodes/rc-5/reclaim", {"user": "erin"}).status == 202
        answer = admin(fleet, "POST", "/v1/nodes/rc-5/reclaim", {"user": "erin"})
        assert answer.status == 409
        assert answer.body["error"]["code"] == "invalid_transition"
        assert answer.body["error"]["current_status"] == "maintenance"

    def test_reclaiming_an_idle_node_needs_a_user(self, fleet):
        fleet.register("rc-6")
        answer = admin(fleet, "POST", "/v1/nodes/rc-6/reclaim")
        assert answer.status == 400
        assert answer.body["error"]["details"][0]["path"] == "$.user"
        assert node(fleet, "rc-6")["status"] == "idle"

    def test_a_lost_race_leaves_no_task_and_no_maintenance(self, fleet):
        # GIVEN a node that changes between the reclaim's read and its transaction
        fleet.register("rc-7")
        original = inventory.get

        def read_then_allocate(node_id, consistent=True):
            item = original(node_id, consistent)
            inventory.get = original  # (before the allocation, which reads the node too)
            assert admin(fleet, "POST", f"/v1/nodes/{node_id}/allocate", {"user": "zed"}).status == 200
            return item

        inventory.get = read_then_allocate
        try:
            answer = admin(fleet, "POST", "/v1/nodes/rc-7/reclaim", {"user": "bob"})
        finally:
            inventory.get = original
        # THEN the reclaim is refused as a conflict and nothing was created
        assert answer.status == 409, answer
        assert answer.body["error"]["code"] == "conflict"
        assert node(fleet, "rc-7")["status"] == "allocated"
        tasks_now = admin(fleet, "GET", "/v1/tasks?type=machine.reclaim").body["items"]
        assert not [t for t in tasks_now if t["target_nodes"] == ["rc-7"]]

    def test_replaying_the_outcome_changes_nothing(self, fleet):
        fleet.register("rc-8")
        task_id = admin(fleet, "POST", "/v1/nodes/rc-8/reclaim", {"user": "bob"}).body["task_id"]
        fleet.settle()
        fleet.run_agents(["rc-8"], fail=frozenset({"rc-8"}))
        before = node(fleet, "rc-8")
        reclaim.settled(task_id, "failed", "again")
        assert node(fleet, "rc-8") == before
        assert names(fleet, task_id).count("node.reclaim_failed") == 1


class TestMaintenanceClaims:
    def test_a_node_in_maintenance_runs_only_its_reclaim_and_other_work_waits(self, fleet):
        # GIVEN a shell task waiting for a node, and the node then reclaimed
        fleet.register("mc-1")
        shell = fleet.submit({"type": "shell", "target_nodes": ["mc-1"], "parameters": {"command": ["true"]}})
        fleet.settle()
        reclaim_id = admin(fleet, "POST", "/v1/nodes/mc-1/reclaim", {"user": "bob"}).body["task_id"]
        fleet.settle()
        # WHEN the node claims
        claimed = fleet.claim("mc-1", 10)
        # THEN it gets only the reclaim run
        assert [r["task_id"] for r in claimed] == [reclaim_id]
        fleet.finish("mc-1", claimed[0])
        fleet.settle()
        # AND once idle, the shell run
        assert node(fleet, "mc-1")["status"] == "idle"
        assert [r["task_id"] for r in fleet.claim("mc-1", 10)] == [shell.body["task_id"]]


    def test_when_recording_contact_fails_the_status_authentication_read_still_applies(self, fleet, monkeypatch):
        fleet.register("mc-2")
        fleet.submit({"type": "shell", "target_nodes": ["mc-2"], "parameters": {"command": ["true"]}})
        admin(fleet, "POST", "/v1/nodes/mc-2/reclaim", {"user": "bob"})
        fleet.settle()

        # WHEN DynamoDB throttles the write of the agent's contact
        contact = fail_calls(monkeypatch, "UpdateItem", throttled, matching=lambda params: (
            params["Key"]["pk"]["S"] == node_pk("mc-2")
            and "last_seen_at" in params.get("ExpressionAttributeNames", {}).values()))
        # THEN the claim still answers as for a node in maintenance: the reclaim only
        assert [r["type"] for r in fleet.claim("mc-2", 10)] == ["machine.reclaim"]
        assert len(contact) == 1


class TestOffline:
    def test_a_silent_node_goes_offline_and_returns_to_its_previous_status(self, fleet):
        # GIVEN an allocated node whose agent was last seen long ago
        fleet.register("off-1")
        allocation = admin(fleet, "POST", "/v1/nodes/off-1/allocate", {"user": "bob"}).body["allocation"]
        fleet.claim("off-1")
        later = clock.now_epoch() + 3600
        # WHEN the sweeper looks
        assert liveness.mark_silent_nodes_offline(later) == ["off-1"]
        # THEN it is offline and remembers it was allocated
        down = node(fleet, "off-1")
        assert down["status"] == "offline"
        assert down["offline_from"] == "allocated"
        assert down["allocation"]["allocation_id"] == allocation["allocation_id"]
        # WHEN the agent comes back
        assert fleet.claim("off-1") == []
        # THEN it is allocated again with the same allocation
        back = node(fleet, "off-1")
        assert back["status"] == "allocated"
        assert back["offline_from"] is None
        assert back["allocation"]["allocation_id"] == allocation["allocation_id"]

    def test_a_node_seen_recently_stays_online_and_a_never_seen_node_goes_offline(self, fleet):
        fleet.register("off-2", "off-3")
        fleet.claim("off-2")
        assert liveness.mark_silent_nodes_offline(clock.now_epoch() + 60) == []
        assert liveness.mark_silent_nodes_offline(clock.now_epoch() + 3600) == ["off-2", "off-3"]
        assert liveness.mark_silent_nodes_offline(clock.now_epoch() + 7200) == []  # already offline

    def test_allocating_an_offline_node_is_an_invalid_transition(self, fleet):
        fleet.register("off-4")
        liveness.mark_silent_nodes_offline(clock.now_epoch() + 3600)
        answer = admin(fleet, "POST", "/v1/nodes/off-4/allocate", {"user": "bob"})
        assert answer.status == 409
        assert answer.body["error"]["current_status"] == "offline"
        answer = admin(fleet, "POST", "/v1/nodes/off-4/reclaim", {"user": "bob"})
        assert answer.status == 409
        assert answer.body["error"]["current_status"] == "offline"

    def test_a_reclaim_that_succeeds_while_its_node_is_offline_returns_it_to_idle(self, fleet):
        fleet.register("off-5")
        task_id = admin(fleet, "POST", "/v1/nodes/off-5/reclaim", {"user": "bob"}).body["task_id"]
        fleet.settle()
        [run] = fleet.claim("off-5")
        liveness.mark_silent_nodes_offline(clock.now_epoch() + 3600)
        assert node(fleet, "off-5")["offline_from"] == "maintenance"
        # WHEN the outcome arrives while the node is (still) offline
        reclaim.settled(task_id, "completed", None)
        # THEN the node will come back idle
        assert node(fleet, "off-5")["offline_from"] == "idle"
        fleet.finish("off-5", run)  # its next contact
        assert node(fleet, "off-5")["status"] == "idle"


class TestSeen:
    def test_contacts_write_last_seen_at_only_when_it_is_stale(self, fleet):
        fleet.register("seen-1")
        fleet.claim("seen-1")
        first = node(fleet, "seen-1")["last_seen_at"]
        fleet.claim("seen-1")
        assert node(fleet, "seen-1")["last_seen_at"] == first  # fresh: no write
        # GIVEN a stored value older than the refresh interval
        stale = clock.rfc3339(clock.now_epoch() - liveness.refresh_seconds() - 1)
        NodeItem(node_pk("seen-1"), "META").update(actions=[NodeItem.last_seen_at.set(stale)])
        # WHEN the agent heartbeats or claims
        fleet.claim("seen-1")
        # THEN it is refreshed
        assert node(fleet, "seen-1")["last_seen_at"] > stale

    def test_heartbeats_count_as_contact(self, fleet):
        fleet.register("seen-2")
        fleet.submit({"type": "shell", "target_nodes": ["seen-2"], "parameters": {"command": ["true"]}})
        fleet.settle()
        [run] = fleet.claim("seen-2")
        liveness.mark_silent_nodes_offline(clock.now_epoch() + 3600)
        assert node(fleet, "seen-2")["status"] == "offline"
        answer = fleet.agent("seen-2", f"/v1/runs/{run['run_id']}/heartbeat", {"attempt": run["attempt"]})
        assert answer.status == 200, answer
        assert node(fleet, "seen-2")["status"] == "idle"


def test_allocation_items_are_listed_by_end_month(fleet):
    fleet.register("idx-1")
    admin(fleet, "POST", "/v1/nodes/idx-1/allocate", {"user": "bob"})
    [open_item] = index_reads.hydrate(AllocationItem, AllocationItem.list_index.query(inventory.OPEN))
    assert open_item.node_id == "idx-1"
    admin(fleet, "POST", "/v1/nodes/idx-1/release")
    assert list(AllocationItem.list_index.query(inventory.OPEN)) == []
    month = clock.now_iso()[:7]
    ended = AllocationItem.list_index.query(f"ALLOCEND#{month}")
    assert [a.node_id for a in index_reads.hydrate(AllocationItem, ended)] == ["idx-1"]


def test_a_reclaim_outcome_that_meets_a_concurrent_transaction_is_retried_not_lost(fleet, monkeypatch):
    # GIVEN a reclaim task that has completed
    fleet.register("busy-1")
    task_id = admin(fleet, "POST", "/v1/nodes/busy-1/reclaim", {"user": "bob"}).body["task_id"]
    fleet.settle()
    [run] = fleet.claim("busy-1")
    # WHEN the node's transaction is cancelled by concurrent ones more often than it is retried
    seen = fail_calls(monkeypatch, "TransactWriteItems", transaction_conflict, times=retrying.ATTEMPTS)
    with pytest.raises(Busy):
        reclaim.settled(task_id, "completed", None)
    assert seen
    assert node(fleet, "busy-1")["status"] == "maintenance"
    # THEN the redelivered outcome applies
    fleet.finish("busy-1", run)
    fleet.settle()
    assert node(fleet, "busy-1")["status"] == "idle"
    assert names(fleet, task_id).count("node.reclaimed") == 1
