"""Node lifecycle on moto (API.md "Agents and nodes"): PATCH replaces labels and slots, a rotated
token is refused at once, a deregistered node's token is refused, its waiting runs fail and its
running runs are asked to cancel — and each of these racing an agent's claim."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib import auth, clock, config
from chalicelib.services import claims, deregistration, jobs, nodes, sweeper
from chalicelib.store import inventory, run_partitions, runs
from chalicelib.store.models import NodeItem, node_pk
from tests.harness import Answer, Fleet, assert_statistics_equal_recount

ADMIN = ("admin",)


def admin(fleet: Fleet, method: str, path: str, body: Any = None) -> Answer:
    return fleet.user(method, path, body, who="root", roles=ADMIN)


def shell(*targets: str, **extra: Any) -> dict[str, Any]:
    return {"type": "shell", "target_nodes": list(targets), "parameters": {"command": ["true"]}, **extra}


def claim_with(fleet: Fleet, node: str, token: str, max_runs: int = 1) -> Answer:
    return fleet.call("POST", f"/v1/agents/{node}/claim", {"max": max_runs}, bearer=token)


def after_each_lease(monkeypatch: pytest.MonkeyPatch, action: Any) -> None:
    """Run `action()` once, right after the claim's first lease write: the claim was authenticated
    before it, and answers after it."""
    lease, done = claims._lease, []

    def leased_then(*args: Any) -> Any:
        run = lease(*args)
        if run is not None and not done:
            done.append(action())
        return run

    monkeypatch.setattr(claims, "_lease", leased_then)


class TestUpdate:
    def test_patch_replaces_the_labels_and_the_slots_and_keeps_what_is_left_out(self, fleet):
        # GIVEN a node with two labels and one slot
        registered = admin(fleet, "POST", "/v1/nodes", {"node_id": "edge-1", "labels": {"pool": "cdn", "region": "eu"}})
        assert registered.status == 201, registered
        # WHEN its labels are replaced
        answer = admin(fleet, "PATCH", "/v1/nodes/edge-1", {"labels": {"pool": "gpu"}})
        # THEN they are exactly the new ones; its slots are kept
        assert answer.status == 200, answer
        assert (answer.body["labels"], answer.body["slots"]) == ({"pool": "gpu"}, 1)
        # WHEN its slots change alone / THEN the labels stay
        answer = admin(fleet, "PATCH", "/v1/nodes/edge-1", {"slots": 4})
        assert (answer.body["labels"], answer.body["slots"]) == ({"pool": "gpu"}, 4)
        assert admin(fleet, "GET", "/v1/nodes/edge-1").body == answer.body
        # AND an empty map removes every label
        assert admin(fleet, "PATCH", "/v1/nodes/edge-1", {"labels": {}}).body["labels"] == {}

    @pytest.mark.parametrize("body", [{}, {"status": "idle"}, {"slots": 0}, {"labels": {"a": 1}}, {"labels": []}])
    def test_a_patch_with_nothing_to_change_or_a_bad_field_is_a_validation_error(self, fleet, body):
        fleet.register("edge-2")
        answer = admin(fleet, "PATCH", "/v1/nodes/edge-2", body)
        assert answer.status == 400, answer
        assert answer.body["error"]["code"] == "validation_error"

    @pytest.mark.parametrize(("method", "path", "body"), [
        ("PATCH", "/v1/nodes/edge-3", {"slots": 2}),
        ("POST", "/v1/nodes/edge-3/token", None),
        ("DELETE", "/v1/nodes/edge-3", None),
    ])
    def test_only_admins_administer_nodes_and_unknown_nodes_are_not_found(self, fleet, method, path, body):
        fleet.register("edge-3")
        assert fleet.user(method, path, body).status == 403
        assert admin(fleet, method, path.replace("edge-3", "nope"), body).status == 404
        assert admin(fleet, "GET", "/v1/nodes/edge-3").status == 200


    @pytest.mark.parametrize(("method", "path", "body"), [
        ("PATCH", "/v1/nodes/no%20such%23node", {"slots": 2}),
        ("POST", "/v1/nodes/no%20such%23node/token", None),
        ("DELETE", "/v1/nodes/no%20such%23node", None),
        ("GET", "/v1/nodes/no%20such%23node", None),
    ])
    def test_an_id_no_node_can_have_is_not_found_not_a_server_error(self, fleet, method, path, body):
        # the fuzzer's find: rotating the token of such an id made a token before looking the node up
        answer = admin(fleet, method, path, body)
        assert (answer.status, answer.body["error"]["code"]) == (404, "not_found"), answer


class TestRotation:
    def test_a_rotated_token_is_refused_at_once_and_only_the_new_ones_hash_is_stored(self, fleet):
        # GIVEN a registered node whose agent uses its token
        fleet.register("edge-1")
        old = fleet.node_tokens["edge-1"]
        assert claim_with(fleet, "edge-1", old).status == 200
        # WHEN an admin rotates it
        answer = admin(fleet, "POST", "/v1/nodes/edge-1/token")
        # THEN the answer shows the new token once, the old one is refused from now on
        assert answer.status == 200, answer
        assert set(answer.body) == {"node_id", "token"}
        new = answer.body["token"]
        assert answer.body["node_id"] == "edge-1"
        assert new != old
        refused = claim_with(fleet, "edge-1", old)
        assert refused.status == 401, refused
        assert old not in json.dumps(refused.body)
        assert new not in json.dumps(refused.body)
        assert claim_with(fleet, "edge-1", new).status == 200
        # AND the table holds the new token's hash, never the token
        stored = NodeItem.get(node_pk("edge-1"), "META", consistent_read=True)
        assert stored.token_hash == auth.hash_node_token(new)
        assert new not in json.dumps(stored.attribute_values, default=str)

    def test_a_claim_racing_a_rotation_answers_401_and_gives_its_lease_back_to_the_new_token(self, fleet, monkeypatch):
        # GIVEN a run waiting for edge-1
        task_id = fleet.started(shell("edge-1"))
        old, rotated = fleet.node_tokens["edge-1"], []
        # WHEN the token is rotated after the old token's claim leased the run, before it answered
        after_each_lease(monkeypatch, lambda: rotated.append(nodes.rotate_token("edge-1")))
        answer = claim_with(fleet, "edge-1", old)
        # THEN the old token's holder gets nothing: 401, and the run waits again
        assert answer.status == 401, answer
        run = runs.find(task_id, "edge-1")
        assert run is not None
        assert (run.status, run.lease_owner) == ("pending", None)
        # AND the agent with the new token claims it
        [claimed] = claim_with(fleet, "edge-1", rotated[0]).body["runs"]
        assert claimed["task_id"] == task_id


class TestDeregistration:
    @pytest.fixture
    def busy_node(self, fleet: Fleet) -> dict[str, str]:
        """`gone` runs a run of task `running` and has one waiting in task `waiting` (with `stays`)."""
        running = fleet.started(shell("gone"))
        [claimed] = fleet.claim("gone")
        assert claimed["task_id"] == running
        waiting = fleet.started(shell("gone", "stays", max_errors=1))
        return {"running": running, "waiting": waiting, "run_id": claimed["run_id"]}

    def test_deregistering_refuses_the_token_fails_waiting_runs_and_asks_running_runs_to_cancel(
            self, fleet, busy_node):
        token = fleet.node_tokens["gone"]
        # WHEN an admin deregisters the node
        answer = admin(fleet, "DELETE", "/v1/nodes/gone")
        # THEN it is gone, and its runs in the two active tasks end in the background
        assert answer.status == 200, answer
        assert answer.body == {"node_id": "gone", "deleted": True, "tasks_to_check": 2}
        assert admin(fleet, "GET", "/v1/nodes/gone").status == 404
        # AND its token is refused on every agent route at once
        assert claim_with(fleet, "gone", token).status == 401
        heartbeat = fleet.call("POST", f"/v1/runs/{busy_node['run_id']}/heartbeat", {"attempt": 1}, bearer=token)
        assert heartbeat.status == 401
        # AND once the jobs ran, the run waiting for it failed, the one it runs was asked to cancel
        fleet.settle()
        waiting = fleet.runs(busy_node["waiting"])
        assert (waiting["gone"]["status"], waiting["gone"]["error_message"]) == ("failed", "node deregistered")
        assert waiting["stays"]["status"] == "pending"
        running = runs.find(busy_node["running"], "gone")
        assert running is not None
        assert (running.status, running.cancel_requested) == ("running", True)
        assert "node.deregistered" in [e.get("name") for e in fleet.events(busy_node["waiting"])]
        # AND deregistering it again finds nothing
        assert admin(fleet, "DELETE", "/v1/nodes/gone").status == 404

    def test_statistics_equal_a_recount_after_a_deregistration_failed_waiting_runs(self, fleet, busy_node):
        # GIVEN the node deregistered and the other node's work done
        assert admin(fleet, "DELETE", "/v1/nodes/gone").status == 200
        fleet.settle()
        fleet.run_agents(["stays"])
        # THEN the task of the failed run ends partially failed, counted exactly once
        task = fleet.task(busy_node["waiting"])
        assert task["status"] == "partial_failure"
        assert task["node_counts"] == {"pending": 0, "running": 0, "apply_pending": 0, "succeeded": 1, "failed": 1,
                                       "cancelled": 0, "timed_out": 0}
        assert fleet.stats()["node_runs"]["failed"] == 1
        assert_statistics_equal_recount()

    def test_a_run_asked_to_cancel_by_a_deregistration_times_out_when_its_lease_lapses_and_is_never_offered_again(
            self, fleet, busy_node):
        # GIVEN the node deregistered while it ran a run of a one-node task
        assert admin(fleet, "DELETE", "/v1/nodes/gone").status == 200
        fleet.settle()
        # WHEN its lease lapses and the sweeper passes
        sweeper.sweep(now=clock.now_epoch() + config.lease_seconds() + 1)
        fleet.settle()
        # THEN the run timed out on its first attempt, and the task ended
        run = fleet.runs(busy_node["running"])["gone"]
        assert (run["status"], run["attempt"]) == ("timed_out", 1)
        assert run["error_message"] == "lease expired after it was asked to cancel"
        assert fleet.task(busy_node["running"])["status"] == "failed"
        assert_statistics_equal_recount()

    def test_deregistering_a_delegate_reads_none_of_its_runs_in_the_request(self, fleet, monkeypatch):
        # GIVEN a delegate runner serving a task of many targets
        fleet.register("salt-master")
        task_id = fleet.started(shell(*(f"edge-{i}" for i in range(40)), runner_node="salt-master"))
        # WHEN it is deregistered while reading runs is impossible
        real = runs.iter_runs
        monkeypatch.setattr(runs, "iter_runs", lambda *a, **k: pytest.fail("the request read the task's runs"))
        answer = admin(fleet, "DELETE", "/v1/nodes/salt-master")
        # THEN the request answers without them, and the job ends every run of the task
        assert (answer.status, answer.body["tasks_to_check"]) == (200, 1), answer
        monkeypatch.setattr(runs, "iter_runs", real)
        fleet.settle()
        assert {run["status"] for run in fleet.runs(task_id).values()} == {"failed"}
        assert fleet.task(task_id)["status"] == "failed"
        assert_statistics_equal_recount()

    def test_the_runs_of_a_deregistered_delegate_end_a_group_of_partitions_per_job(self, fleet, monkeypatch):
        # GIVEN a delegate runner serving a task of 40 targets over 4 run partitions, 10 runs a job
        monkeypatch.setattr(run_partitions, "RUNS_PER_PARTITION", 10)
        monkeypatch.setattr(jobs, "RUNS_PER_JOB", 10)
        fleet.register("salt-master")
        task_id = fleet.started(shell(*(f"edge-{i}" for i in range(40)), runner_node="salt-master"))
        assert runs.run_shards(task_id) == 4
        groups: list[range | None] = []
        iter_runs = runs.iter_runs

        def read(*args: Any, partitions: range | None = None, **kwargs: Any) -> Any:
            groups.append(partitions)
            return iter_runs(*args, partitions=partitions, **kwargs)

        monkeypatch.setattr(runs, "iter_runs", read)
        # WHEN it is deregistered and the jobs run
        assert admin(fleet, "DELETE", "/v1/nodes/salt-master").status == 200
        fleet.settle()
        # THEN each job read one partition (a job delivered again reads its own again) and handed
        # on the next; every run ended
        assert set(groups) == {range(i, i + 1) for i in range(4)}
        monkeypatch.setattr(runs, "iter_runs", iter_runs)
        assert {run["status"] for run in fleet.runs(task_id).values()} == {"failed"}
        assert fleet.task(task_id)["status"] == "failed"
        assert_statistics_equal_recount()

    def test_the_node_id_may_be_registered_again_with_a_new_token(self, fleet):
        fleet.register("edge-1")
        old = fleet.node_tokens["edge-1"]
        assert admin(fleet, "DELETE", "/v1/nodes/edge-1").status == 200
        fleet.register("edge-1")
        assert claim_with(fleet, "edge-1", old).status == 401
        assert claim_with(fleet, "edge-1", fleet.node_tokens["edge-1"]).status == 200

    def test_deregistering_an_allocated_node_ends_its_allocation(self, fleet):
        fleet.register("gpu-1")
        assert admin(fleet, "POST", "/v1/nodes/gpu-1/allocate", {"user": "bob"}).status == 200
        assert admin(fleet, "DELETE", "/v1/nodes/gpu-1").status == 200
        [allocation], _ = inventory.node_allocations("gpu-1", 10, None)
        assert allocation.ended_by == "deregister"
        assert allocation.ended_at is not None

    def test_a_claim_racing_a_deregistration_never_leaves_a_run_leased_to_the_deleted_node(self, fleet, monkeypatch):
        # GIVEN a run waiting for edge-1
        task_id = fleet.started(shell("edge-1"))
        # WHEN the node is deregistered after its claim leased the run, before the claim answered
        after_each_lease(monkeypatch, lambda: deregistration.deregister("edge-1"))
        answer = fleet.agent("edge-1", "/v1/agents/edge-1/claim", {"max": 1})
        # THEN the claim answers 401 and the run is not leased to the deleted node: it failed
        assert answer.status == 401, answer
        run = runs.find(task_id, "edge-1")
        assert run is not None
        assert (run.status, run.lease_expires_at, run.error_message) == ("failed", None, "node deregistered")
        fleet.settle()
        assert fleet.task(task_id)["status"] == "failed"
        assert_statistics_equal_recount()

    def test_a_waiting_run_failed_before_its_turn_does_not_let_one_more_run_start(self, fleet):
        # GIVEN three nodes of a one-at-a-time task, the first one running
        task_id = fleet.started(shell("a", "b", "c", max_concurrency=1, max_errors=1))
        by_ordinal = sorted("abc", key=lambda node: int(runs.find(task_id, node).ordinal))  # type: ignore[union-attr]
        first, second, last = by_ordinal
        [running] = fleet.claim(first)
        # WHEN the node of the last run is deregistered (its run fails before its turn)
        assert admin(fleet, "DELETE", f"/v1/nodes/{last}").status == 200
        fleet.settle()
        # THEN the second run still waits for the first to finish
        assert fleet.claim(second) == []
        assert fleet.finish(first, running).status == 200
        fleet.settle()
        assert len(fleet.claim(second)) == 1
