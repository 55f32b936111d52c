"""Acceptance (b): idempotent creation (also under a race), the dispatch route (backfill),
and which runs an agent may claim: max_concurrency, priority, runner_node."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chalicelib.services import submit
from chalicelib.store import index_reads
from chalicelib.store.models import IdempotencyItem, TaskItem

NODES = ["n1", "n2", "n3"]


def shell(nodes: list[str] = NODES, **extra: Any) -> dict[str, Any]:
    return {"type": "shell", "name": "uptime", "target_nodes": nodes, "parameters": {"command": ["uptime"]}, **extra}


def all_tasks() -> list[TaskItem]:
    found: Any = TaskItem.list_index.query("TASK")
    return index_reads.hydrate(TaskItem, found)


class TestIdempotentCreate:
    def test_same_request_twice_with_one_key_replays_the_first_task(self, fleet):
        # GIVEN registered nodes and a first request with an Idempotency-Key
        fleet.register(*NODES)
        first = fleet.submit(shell(), key="release-41")

        # WHEN the same request is sent again with the same key
        second = fleet.submit(shell(), key="release-41")

        # THEN the first was accepted, the second replays it
        assert first.status == 202, first
        assert first.headers["Location"] == f"/v1/tasks/{first.body['task_id']}"
        assert second.status == 200, second
        assert second.headers.get("Idempotent-Replayed") == "true"
        assert "Idempotent-Replayed" not in first.headers
        assert second.body["task_id"] == first.body["task_id"]

    def test_a_replay_creates_no_second_task_and_no_duplicate_runs(self, fleet):
        # GIVEN the same request sent twice with one key, before and after dispatch
        fleet.register(*NODES)
        first = fleet.submit(shell(), key="k1")
        fleet.submit(shell(), key="k1")
        fleet.settle()
        third = fleet.submit(shell(), key="k1")
        fleet.settle()

        # THEN one task with exactly one run per node, and the replay shows its current state
        task_id = first.body["task_id"]
        assert third.status == 200
        assert third.body["status"] == "running"
        assert sorted(fleet.runs(task_id)) == NODES
        assert fleet.task(task_id)["dispatch"]["created_count"] == 3
        assert [t.task_id for t in all_tasks()] == [task_id]
        assert fleet.stats()["total_tasks"] == 1

    def test_twenty_concurrent_identical_requests_create_one_task(self, fleet):
        # GIVEN 20 threads ready to send the same request with the same key
        # (chalice.test.Client is not thread-safe: the app keeps `current_request` in one
        # attribute, so the threads call the service the route calls)
        fleet.register(*NODES)
        barrier = threading.Barrier(20)

        def send(_: int) -> submit.Submitted:
            barrier.wait()
            return submit.submit("alice", shell(), "race-key")

        # WHEN they all submit at once
        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(send, range(20)))
        fleet.settle()

        # THEN exactly one was created, the others replay it; one run per node
        created = [r for r in results if not r.replayed]
        assert len(created) == 1
        task_id = created[0].task.task_id
        assert {r.task.task_id for r in results} == {task_id}
        assert [t.task_id for t in all_tasks()] == [task_id]
        assert sorted(fleet.runs(task_id)) == NODES
        assert fleet.task(task_id)["node_counts"]["pending"] == 3
        assert fleet.stats()["total_tasks"] == 1

    def test_same_key_with_a_different_body_is_rejected(self, fleet):
        # GIVEN a task created with a key
        fleet.register(*NODES, "n4")
        first = fleet.submit(shell(), key="k2")

        # WHEN another body comes with the same key
        answer = fleet.submit(shell(["n4"]), key="k2")

        # THEN 422, naming the code, and nothing new was created
        assert answer.status == 422, answer
        assert answer.body["error"]["code"] == "idempotency_key_reused"
        assert [t.task_id for t in all_tasks()] == [first.body["task_id"]]

    def test_different_users_with_the_same_key_get_two_tasks(self, fleet):
        # GIVEN alice created a task with a key
        fleet.register(*NODES)
        alice = fleet.submit(shell(), who="alice", key="shared")

        # WHEN bob sends the same request with the same key
        bob = fleet.submit(shell(), who="bob", key="shared")
        fleet.settle()

        # THEN two tasks, each owned by its user
        assert (alice.status, bob.status) == (202, 202)
        assert alice.body["task_id"] != bob.body["task_id"]
        assert fleet.task(bob.body["task_id"], who="bob")["owner"] == "bob"
        assert fleet.stats()["total_tasks"] == 2
        assert IdempotencyItem.count("IDEM#alice#shared") == 1
        assert IdempotencyItem.count("IDEM#bob#shared") == 1


class TestDispatchRoute:
    def test_dispatch_skips_an_existing_node_and_creates_a_new_one(self, fleet):
        # GIVEN a running task on n1..n3
        task_id = fleet.started(shell())
        fleet.register("n4")

        # WHEN one existing and one new node are dispatched
        answer = fleet.user("POST", f"/v1/tasks/{task_id}/dispatch", {"target_nodes": ["n1", "n4"]})
        fleet.settle()

        # THEN n4 got a run, n1 kept its own, and the task's targets grew
        assert answer.status == 200, answer
        assert answer.body["dispatch"]["triggered"] is True
        assert answer.body["dispatch"]["created_count"] == 1
        assert answer.body["dispatch"]["skipped_count"] == 1
        assert answer.body["task"]["target_nodes"] == [*NODES, "n4"]
        task = fleet.task(task_id)
        assert task["target_nodes"] == [*NODES, "n4"]
        assert task["dispatch"]["target_node_count"] == 4
        assert task["node_counts"]["pending"] == 4
        runs = fleet.runs(task_id)
        assert sorted(runs) == [*NODES, "n4"]
        assert runs["n4"]["status"] == "pending"
        assert runs["n4"]["attempt"] == 1

    def test_the_task_finishes_only_once_the_dispatched_node_completes(self, fleet):
        # GIVEN a task whose original nodes all succeeded after n4 was dispatched into it
        task_id = fleet.started(shell())
        fleet.register("n4")
        fleet.user("POST", f"/v1/tasks/{task_id}/dispatch", {"target_nodes": ["n1", "n4"]})
        fleet.settle()
        for node in NODES:
            (run,) = fleet.claim(node)
            fleet.finish(node, run)
        fleet.settle()
        assert fleet.task(task_id)["status"] == "running"

        # WHEN n4 claims and completes its run
        (run,) = fleet.claim("n4")
        assert run["node"] == "n4"
        assert fleet.finish("n4", run).status == 200
        fleet.settle()

        # THEN the task completed with four succeeded nodes
        task = fleet.task(task_id)
        assert task["status"] == "completed"
        assert task["node_counts"]["succeeded"] == 4
        assert task["dispatch"]["target_node_count"] == 4
        assert fleet.stats()["node_runs"]["succeeded"] == 4

    def test_dispatching_the_same_new_node_twice_creates_one_run(self, fleet):
        # GIVEN a running task into which n4 was dispatched
        task_id = fleet.started(shell())
        fleet.register("n4")
        fleet.user("POST", f"/v1/tasks/{task_id}/dispatch", {"target_nodes": ["n4"]})

        # WHEN n4 is dispatched again
        again = fleet.user("POST", f"/v1/tasks/{task_id}/dispatch", {"target_nodes": ["n4"]})
        fleet.settle()

        # THEN it is skipped: still one run, four targets
        assert again.status == 200, again
        assert (again.body["dispatch"]["created_count"], again.body["dispatch"]["skipped_count"]) == (0, 1)
        assert fleet.task(task_id)["target_nodes"] == [*NODES, "n4"]
        assert len(fleet.runs(task_id)) == 4

    def test_dispatch_on_a_completed_task_is_an_invalid_transition(self, fleet):
        # GIVEN a completed task
        task_id = fleet.started(shell())
        fleet.run_agents(NODES)
        assert fleet.task(task_id)["status"] == "completed"
        fleet.register("n4")

        # WHEN
        answer = fleet.user("POST", f"/v1/tasks/{task_id}/dispatch", {"target_nodes": ["n4"]})

        # THEN
        assert answer.status == 409, answer
        assert answer.body["error"]["code"] == "invalid_transition"
        assert answer.body["error"]["current_status"] == "completed"
        assert set(answer.body["error"]["allowed_from"]) == {"pending", "running"}
        assert sorted(fleet.runs(task_id)) == NODES

    def test_dispatch_into_another_users_task_is_not_found(self, fleet):
        # GIVEN alice's running task
        task_id = fleet.started(shell())

        # WHEN bob dispatches into it
        answer = fleet.user("POST", f"/v1/tasks/{task_id}/dispatch", {"target_nodes": ["n9"]}, who="bob")

        # THEN
        assert answer.status == 404, answer
        assert sorted(fleet.runs(task_id)) == NODES

    def test_a_node_dispatched_into_a_halted_task_does_not_keep_it_running_forever(self, fleet):
        # GIVEN a task with no error budget: n1 failed (the task is halted) while n2 still runs
        task_id = fleet.started(shell(max_errors=0))
        (run1,) = fleet.claim("n1")
        (run2,) = fleet.claim("n2")
        fleet.finish("n1", run1, "failed", "exit 1")
        fleet.settle()
        fleet.register("n4")

        # WHEN a new node is dispatched into it, then n2 finishes
        answer = fleet.user("POST", f"/v1/tasks/{task_id}/dispatch", {"target_nodes": ["n4"]})
        fleet.settle()
        fleet.finish("n2", run2)
        fleet.settle()

        # THEN nothing may start any more, and the task still ends failed
        assert fleet.claim("n4") == []
        task = fleet.task(task_id)
        assert task["status"] == "failed", (answer, task["node_counts"])


class TestMaxConcurrency:
    def test_never_more_than_max_concurrency_runs_are_running(self, fleet):
        # GIVEN a task on five nodes with max_concurrency 2
        nodes = [f"m{i}" for i in range(1, 6)]
        task_id = fleet.started(shell(nodes, max_concurrency=2))
        in_flight: dict[str, dict[str, Any]] = {}
        peak = 0

        # WHEN every node claims repeatedly, and one run finishes after each round
        for _ in range(20):
            for _ in range(2):
                for node in nodes:
                    for run in fleet.claim(node, 5):
                        assert run["node"] not in in_flight
                        in_flight[run["node"]] = run
                running = fleet.task(task_id)["node_counts"]["running"]
                peak = max(peak, len(in_flight))
                assert len(in_flight) <= 2, sorted(in_flight)
                fleet.settle()
                assert fleet.task(task_id)["node_counts"]["running"] <= 2, running
            if not in_flight:
                break
            node, run = next(iter(in_flight.items()))
            assert fleet.finish(node, run).status == 200
            del in_flight[node]
            fleet.settle()

        # THEN all five ran, two at a time at most
        assert peak == 2
        task = fleet.task(task_id)
        assert task["status"] == "completed"
        assert task["node_counts"]["succeeded"] == 5

    def test_finishing_a_run_releases_the_next_one(self, fleet):
        # GIVEN a task on five nodes with max_concurrency 2, two runs claimed
        nodes = [f"m{i}" for i in range(1, 6)]
        task_id = fleet.started(shell(nodes, max_concurrency=2))
        claimed = {node: fleet.claim(node) for node in nodes}
        holders = [node for node, runs in claimed.items() if runs]
        assert len(holders) == 2
        waiting = [node for node in nodes if node not in holders]
        assert all(fleet.claim(node) == [] for node in waiting)

        # WHEN one of them finishes (and the stream catches up)
        fleet.finish(holders[0], claimed[holders[0]][0])
        fleet.settle()

        # THEN exactly one more node can claim
        newly = {node: fleet.claim(node) for node in waiting}
        fleet.settle()
        assert sum(len(runs) for runs in newly.values()) == 1
        assert fleet.task(task_id)["node_counts"]["running"] == 2


class TestPriority:
    def test_the_higher_priority_run_is_claimed_first(self, fleet):
        # GIVEN one delegate runner with a pending run of a priority-2 task, then of a priority-9 task
        low = fleet.started(shell(["x1"], priority=2, runner_node="delegate"))
        high = fleet.started(shell(["x2"], priority=9, runner_node="delegate"))

        # WHEN the delegate claims one run at a time
        first = fleet.claim("delegate")
        second = fleet.claim("delegate")

        # THEN the priority-9 run comes first
        assert [r["task_id"] for r in first] == [high]
        assert [r["task_id"] for r in second] == [low]
        assert fleet.claim("delegate") == []

    def test_a_batch_claim_is_ordered_by_priority(self, fleet):
        # GIVEN runs of priorities 2, 9 and 5 for one delegate
        tasks = {p: fleet.started(shell([f"y{p}"], priority=p, runner_node="delegate")) for p in (2, 9, 5)}

        # WHEN the delegate claims all at once
        runs = fleet.claim("delegate", 10)

        # THEN best priority first
        assert [r["task_id"] for r in runs] == [tasks[9], tasks[5], tasks[2]]


class TestRunnerNode:
    def test_only_the_runner_node_claims_the_runs_of_its_targets(self, fleet):
        # GIVEN a task on n1..n3 executed by salt-master
        task_id = fleet.started(shell(runner_node="salt-master"))

        # WHEN a target node and then the runner claim
        by_target = fleet.claim("n1", 10)
        by_runner = fleet.claim("salt-master", 10)
        fleet.settle()

        # THEN only the runner gets them, each for its target node
        assert by_target == []
        assert sorted(r["node"] for r in by_runner) == NODES
        assert {r["task_id"] for r in by_runner} == {task_id}
        runs = fleet.runs(task_id)
        assert {run["runner"] for run in runs.values()} == {"salt-master"}
        assert {run["status"] for run in runs.values()} == {"running"}

    def test_a_target_node_cannot_act_on_a_run_the_runner_holds(self, fleet):
        # GIVEN salt-master holds the run of n1
        task_id = fleet.started(shell(runner_node="salt-master"))
        run = next(r for r in fleet.claim("salt-master", 10) if r["node"] == "n1")

        # WHEN n1's own agent heartbeats and completes it
        beat = fleet.agent("n1", f"/v1/runs/{run['run_id']}/heartbeat", {"attempt": 1})
        done = fleet.finish("n1", run)

        # THEN both are refused and the run is untouched
        assert beat.status == 404, beat
        assert done.status == 404, done
        assert fleet.runs(task_id)["n1"]["status"] == "running"

    def test_the_runner_completes_the_task(self, fleet):
        # GIVEN a task on n1..n3 executed by salt-master
        task_id = fleet.started(shell(runner_node="salt-master"))

        # WHEN the runner works through its runs
        done = fleet.run_agents(["salt-master", *NODES])

        # THEN
        assert done == 3
        assert fleet.task(task_id)["status"] == "completed"
