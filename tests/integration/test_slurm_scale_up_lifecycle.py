"""Acceptance (a): a `slurm.scale_up` task from creation to completion, its events, its
statistics (equal to a recount) and its secret parameter (never in clear outside the claim)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3

from chalicelib.services import statistics
from tests.harness import Fleet, assert_statistics_equal_recount

PASSWORD = "hunter2"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl"
PROJECT = Path(__file__).resolve().parents[2]
PARAMETERS = {"ssh_user": "root", "salt_master": "salt-1", "partition": "gpu", "password": PASSWORD}
NODES = ["gpu-1", "gpu-2", "gpu-3"]
STEPS = ["deploy-minion", "register-node", "slurm-scale"]


def scale_up(nodes: list[str] = NODES, **extra: Any) -> dict[str, Any]:
    return {"type": "slurm.scale_up", "name": "add gpu hosts", "target_nodes": nodes,
            "parameters": dict(PARAMETERS), **extra}


def all_items(fleet: Fleet) -> list[dict[str, Any]]:
    client = boto3.client("dynamodb")
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": fleet.provisioned.table_name}
    while True:
        page = client.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def heartbeat(fleet: Fleet, node: str, run: dict[str, Any], **fields: Any) -> Any:
    return fleet.agent(node, f"/v1/runs/{run['run_id']}/heartbeat", {"attempt": run["attempt"], **fields})


def post_events(fleet: Fleet, node: str, run: dict[str, Any], *events: dict[str, Any]) -> Any:
    return fleet.agent(node, f"/v1/runs/{run['run_id']}/events", {"attempt": run["attempt"], "events": list(events)})


def claim_all(fleet: Fleet, nodes: list[str] = NODES) -> dict[str, dict[str, Any]]:
    claimed = {node: fleet.claim(node) for node in nodes}
    assert all(len(runs) == 1 for runs in claimed.values()), claimed
    return {node: runs[0] for node, runs in claimed.items()}


def completed_task(fleet: Fleet) -> str:
    task_id = fleet.started(scale_up())
    assert fleet.run_agents(NODES) == 3
    assert fleet.task(task_id)["status"] == "completed"
    return task_id


class TestCreation:
    def test_task_is_persisted_pending_right_after_post_with_the_password_masked(self, fleet):
        # GIVEN three registered nodes
        fleet.register(*NODES)

        # WHEN the task is submitted, and read back before anything else happens
        answer = fleet.submit(scale_up())
        task = fleet.task(answer.body["task_id"])

        # THEN it is durable, pending, first attempt, with its targets and masked parameters
        assert answer.status == 202
        assert answer.headers["Location"] == f"/v1/tasks/{answer.body['task_id']}"
        assert task["status"] == "pending"
        assert task["attempt"] == 1
        assert task["target_nodes"] == NODES
        assert task["parameters"] == {**PARAMETERS, "password": "***"}
        assert task["completed_at"] is None
        assert answer.body["parameters"]["password"] == "***"

    def test_after_settle_the_task_is_running_with_one_pending_run_per_node(self, fleet):
        # GIVEN / WHEN a submitted task whose stream and dispatch queue have caught up
        task_id = fleet.started(scale_up())

        # THEN
        task = fleet.task(task_id)
        runs = fleet.runs(task_id)
        assert task["status"] == "running"
        assert task["started_at"] is not None
        assert task["node_counts"]["pending"] == 3
        assert task["dispatch"] == {"triggered": True, "state": "done", "target_node_count": 3, "created_count": 3,
                                    "skipped_count": 0}
        assert sorted(runs) == NODES
        assert {run["status"] for run in runs.values()} == {"pending"}
        assert {run["attempt"] for run in runs.values()} == {1}


class TestAgentProtocol:
    def test_claim_reveals_the_password_to_the_agent_and_only_there(self, fleet):
        # GIVEN a running task
        task_id = fleet.started(scale_up())

        # WHEN each node claims its run
        claimed = claim_all(fleet)

        # THEN the claim carries the clear password; the task, its runs and its events do not
        for node, run in claimed.items():
            assert run["node"] == node
            assert run["task_id"] == task_id
            assert run["type"] == "slurm.scale_up"
            assert run["step"] == "deploy-minion"
            assert run["attempt"] == 1
            assert run["parameters"] == PARAMETERS
        fleet.settle()
        assert fleet.task(task_id)["parameters"]["password"] == "***"
        assert PASSWORD not in repr(fleet.task(task_id))
        assert PASSWORD not in repr(fleet.runs(task_id))
        assert PASSWORD not in repr(fleet.events(task_id))

    def test_heartbeat_progress_and_step_show_in_the_task_progress_and_stage(self, fleet):
        # GIVEN claimed runs
        task_id = fleet.started(scale_up())
        claimed = claim_all(fleet)

        # WHEN one node reports half its work done in register-node
        answer = heartbeat(fleet, "gpu-1", claimed["gpu-1"], progress=50, step="register-node")
        fleet.settle()

        # THEN the lease is extended, no stop is requested, and the task shows it
        assert answer.status == 200, answer
        assert answer.body["cancel_requested"] is False
        assert answer.body["lease_expires_at"]
        task = fleet.task(task_id)
        assert 0 < task["progress"] < 100
        assert task["stage"] == "register-node"
        assert task["node_counts"]["running"] == 3
        run = fleet.runs(task_id)["gpu-1"]
        assert (run["progress"], run["step"], run["status"]) == (50, "register-node", "running")

    def test_agent_events_are_listed_oldest_first_with_node_and_step(self, fleet):
        # GIVEN claimed runs
        task_id = fleet.started(scale_up())
        claimed = claim_all(fleet)

        # WHEN two nodes post events, one after the other
        first = post_events(fleet, "gpu-1", claimed["gpu-1"],
                            {"type": "info", "step": "deploy-minion", "message": "minion installed", "progress": 30},
                            {"type": "success", "step": "register-node", "message": "registered", "progress": 60})
        second = post_events(fleet, "gpu-2", claimed["gpu-2"],
                             {"type": "warning", "step": "deploy-minion", "message": "slow mirror", "data": {"ms": 9}})

        # THEN they come back oldest first, after the service's own events, with node and step
        assert (first.status, second.status) == (202, 202)
        agent_events = [e for e in fleet.events(task_id) if e["node"] is not None]
        assert [(e["node"], e["step"], e["message"]) for e in agent_events] == [
            ("gpu-1", "deploy-minion", "minion installed"),
            ("gpu-1", "register-node", "registered"),
            ("gpu-2", "deploy-minion", "slow mirror"),
        ]
        assert [e["type"] for e in agent_events] == ["info", "success", "warning"]
        assert agent_events[0]["progress"] == 30
        assert agent_events[2]["data"] == {"ms": 9}
        ids = [e["event_id"] for e in fleet.events(task_id)]
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)

    def test_events_after_cursor_returns_only_later_events(self, fleet):
        # GIVEN a task with service events and three agent events
        task_id = fleet.started(scale_up())
        claimed = claim_all(fleet)
        for message in ("one", "two", "three"):
            post_events(fleet, "gpu-1", claimed["gpu-1"], {"type": "info", "step": "deploy-minion", "message": message})
        everything = fleet.events(task_id)
        one = next(e for e in everything if e["message"] == "one")

        # WHEN the events after the first agent event are read
        answer = fleet.user("GET", f"/v1/tasks/{task_id}/events?after={one['event_id']}")

        # THEN exactly the later ones come back, in order
        assert answer.status == 200, answer
        assert [e["event_id"] for e in answer.body["items"]] == [
            e["event_id"] for e in everything[everything.index(one) + 1:]
        ]
        assert [e["message"] for e in answer.body["items"] if e["node"]] == ["two", "three"]

    def test_events_pages_follow_next_cursor_without_gaps_or_repeats(self, fleet):
        # GIVEN a task with several event items, some holding more than one event
        task_id = fleet.started(scale_up())
        claimed = claim_all(fleet)
        for i in range(3):
            post_events(fleet, "gpu-1", claimed["gpu-1"], *[{"type": "info", "message": f"{i}.{j}"} for j in range(3)])
        everything = fleet.events(task_id)

        # WHEN read two at a time
        seen: list[str] = []
        cursor = ""
        for _ in range(50):
            answer = fleet.user("GET", f"/v1/tasks/{task_id}/events?limit=2{cursor}")
            assert answer.status == 200, answer
            seen.extend(e["event_id"] for e in answer.body["items"])
            if answer.body["next_cursor"] is None:
                break
            cursor = f"&cursor={answer.body['next_cursor']}"

        # THEN every event comes exactly once, in order
        assert seen == [e["event_id"] for e in everything]


class TestCompletion:
    def test_all_nodes_succeed_and_the_task_completes_at_100(self, fleet):
        # GIVEN claimed runs, one halfway
        task_id = fleet.started(scale_up())
        claimed = claim_all(fleet)
        heartbeat(fleet, "gpu-1", claimed["gpu-1"], progress=50, step="register-node")
        fleet.settle()

        # WHEN every node reports success
        for node, run in claimed.items():
            assert fleet.finish(node, run).status == 200
        fleet.settle()

        # THEN
        task = fleet.task(task_id)
        assert task["status"] == "completed"
        assert task["progress"] == 100
        assert task["completed_at"] is not None
        assert task["error_message"] is None
        assert task["node_counts"]["succeeded"] == 3
        assert sum(task["node_counts"].values()) == 3
        assert {run["status"] for run in fleet.runs(task_id).values()} == {"succeeded"}
        assert {run["progress"] for run in fleet.runs(task_id).values()} == {100}

    def test_service_events_record_creation_dispatch_and_completion_in_order(self, fleet):
        # GIVEN / WHEN a task that ran to completion
        task_id = completed_task(fleet)

        # THEN
        names = [e.get("name") for e in fleet.events(task_id) if e.get("name")]
        assert names.index("task.created") < names.index("task.dispatched") < names.index("task.completed")
        assert names.count("task.completed") == 1
        assert names.count("task.dispatched") == 1


class TestStatistics:
    def test_a_running_task_counts_as_running_in_every_view(self, fleet):
        # GIVEN a running task with claimed runs
        fleet.started(scale_up())
        claim_all(fleet)
        fleet.settle()

        # WHEN / THEN admin, per-type and owner views all see one running task
        own = fleet.stats(who="alice", roles=("operator",))
        views = (fleet.stats(), fleet.stats(query="?type=slurm.scale_up"), own)
        for stats in views:
            assert stats["total_tasks"] == 1
            assert stats["running_tasks"] == 1
            assert stats["completed_tasks"] == 0
            assert stats["success_rate"] is None
            assert stats["avg_duration_seconds"] is None
        assert_statistics_equal_recount()

    def test_a_completed_task_is_counted_in_every_view_and_equals_a_recount(self, fleet):
        # GIVEN / WHEN a completed task
        completed_task(fleet)

        # THEN
        views = {
            "admin": fleet.stats(),
            "type": fleet.stats(query="?type=slurm.scale_up"),
            "owner": fleet.stats(who="alice", roles=("operator",)),
        }
        for name, stats in views.items():
            assert stats["total_tasks"] == 1, name
            assert stats["running_tasks"] == 0, name
            assert stats["completed_tasks"] == 1, name
            assert stats["failed_tasks"] == 0, name
            assert stats["by_status"]["completed"] == 1, name
            assert stats["type_stats"] == {"slurm.scale_up": 1}, name
            assert stats["success_rate"] == 100.0, name
            assert stats["avg_duration_seconds"] is not None, name
            assert stats["avg_duration_seconds"] >= 0, name
            assert stats["node_runs"] == {"succeeded": 3, "failed": 0, "timed_out": 0, "cancelled": 0}, name
        assert fleet.stats(query="?type=shell")["total_tasks"] == 0
        assert fleet.stats(who="bob", roles=("operator",))["total_tasks"] == 0
        assert_statistics_equal_recount()

    def test_admin_statistics_match_the_recount_of_scope_all(self, fleet):
        # GIVEN a completed task
        completed_task(fleet)

        # WHEN
        stats = fleet.stats()
        expected = statistics.render(dict(statistics.recount()["all"]))

        # THEN every figure of the answer is the recount's
        stats.pop("as_of")
        expected.pop("as_of")
        assert stats == expected

    def test_mixed_run_with_max_errors_1_ends_partial_failure_and_lowers_the_success_rate(self, fleet):
        # GIVEN a completed task, and a second one that tolerates one failed node
        completed_task(fleet)
        second = fleet.started(scale_up(max_errors=1))

        # WHEN one node of the second task fails
        fleet.run_agents(NODES, fail=frozenset({"gpu-2"}))

        # THEN the second task ends partial_failure and the statistics account for it
        task = fleet.task(second)
        assert task["status"] == "partial_failure"
        assert task["completed_at"] is not None
        assert task["error_message"]
        assert task["node_counts"]["succeeded"] == 2
        assert task["node_counts"]["failed"] == 1
        stats = fleet.stats()
        assert stats["total_tasks"] == 2
        assert stats["by_status"]["partial_failure"] == 1
        assert stats["completed_tasks"] == 1
        assert stats["success_rate"] == 50.0
        assert stats["node_runs"] == {"succeeded": 5, "failed": 1, "timed_out": 0, "cancelled": 0}
        assert fleet.stats(query="?type=slurm.scale_up")["success_rate"] == 50.0
        assert_statistics_equal_recount()

    def test_more_failures_than_max_errors_fail_the_task(self, fleet):
        # GIVEN a task that tolerates no failed node
        task_id = fleet.started(scale_up(max_errors=0, max_concurrency=1))

        # WHEN its first node fails
        fleet.run_agents(NODES, fail=frozenset({"gpu-1"}))

        # THEN no further node starts, the rest are cancelled and the task failed
        task = fleet.task(task_id)
        assert task["status"] == "failed"
        assert task["node_counts"]["failed"] == 1
        assert task["node_counts"]["cancelled"] == 2
        assert fleet.stats()["failed_tasks"] == 1
        assert fleet.stats()["success_rate"] == 0.0
        assert_statistics_equal_recount()


class TestSecrets:
    def test_password_is_never_in_clear_in_any_table_item(self, fleet):
        # GIVEN a task that ran through claim, heartbeat, events and completion
        task_id = fleet.started(scale_up())
        claimed = claim_all(fleet)
        heartbeat(fleet, "gpu-1", claimed["gpu-1"], progress=50, step="register-node")
        post_events(fleet, "gpu-1", claimed["gpu-1"],
                    {"type": "info", "step": "deploy-minion", "message": f"sshpass -p {PASSWORD} ssh root@gpu-1"})
        for node, run in claimed.items():
            fleet.finish(node, run)
        fleet.settle()
        assert fleet.task(task_id)["status"] == "completed"

        # WHEN every item of the table is read
        items = all_items(fleet)

        # THEN the clear password is nowhere (the sealed blob is encrypted), nor in the answers
        assert any("sealed_secrets" in item for item in items)
        assert [item["pk"] for item in items if PASSWORD in repr(item)] == []
        assert PASSWORD not in repr(fleet.task(task_id))
        assert PASSWORD not in repr(fleet.events(task_id))
        assert PASSWORD not in repr(fleet.runs(task_id))
        assert PASSWORD not in repr(fleet.stats())

    def test_password_echoed_in_an_agent_event_is_redacted(self, fleet):
        # GIVEN a claimed run
        task_id = fleet.started(scale_up())
        run = claim_all(fleet)["gpu-1"]

        # WHEN the agent's step echoes the password in an event message and its data
        post_events(fleet, "gpu-1", run, {"type": "error", "step": "deploy-minion",
                                          "message": f"login with {PASSWORD} refused", "data": {"cmd": PASSWORD}})

        # THEN the event reads "***"
        event = next(e for e in fleet.events(task_id) if e["node"] == "gpu-1")
        assert event["message"] == "login with *** refused"
        assert event["data"] == {"cmd": "***"}

    def test_password_echoed_in_a_failure_message_is_redacted(self, fleet):
        # GIVEN a claimed run
        task_id = fleet.started(scale_up())
        run = claim_all(fleet)["gpu-1"]

        # WHEN the agent fails it with a message that echoes the password
        answer = fleet.finish("gpu-1", run, "failed", f"sshpass -p {PASSWORD} ssh root@gpu-1: exit 255")
        fleet.settle()

        # THEN the run's error message never shows it
        assert answer.status == 200
        assert PASSWORD not in repr(fleet.runs(task_id))
        assert [item["sk"] for item in all_items(fleet) if PASSWORD in repr(item)] == []

    def test_password_echoed_in_the_output_is_not_stored_in_clear(self, fleet):
        # GIVEN a claimed run
        fleet.started(scale_up())
        run = claim_all(fleet)["gpu-1"]

        # WHEN the agent completes with an output that echoes the password
        answer = fleet.agent("gpu-1", f"/v1/runs/{run['run_id']}/complete", {
            "attempt": run["attempt"], "status": "succeeded", "output": f"+ sshpass -p {PASSWORD} ssh root@gpu-1\nok",
        })
        fleet.settle()

        # THEN no item holds it in clear
        assert answer.status == 200
        assert [item["sk"] for item in all_items(fleet) if PASSWORD in repr(item)] == []

    def test_password_echoed_in_a_heartbeat_step_is_not_the_task_stage_nor_the_run_step(self, fleet):
        # GIVEN a claimed run
        task_id = fleet.started(scale_up())
        run = claim_all(fleet)["gpu-1"]

        # WHEN the agent reports a step that echoes the password
        answer = heartbeat(fleet, "gpu-1", run, progress=10, step=f"login with {PASSWORD}")
        fleet.settle()

        # THEN the run's step and the task's stage read "***", and no item holds it
        assert answer.status == 200
        assert fleet.runs(task_id)["gpu-1"]["step"] == "login with ***"
        assert PASSWORD not in repr(fleet.task(task_id))
        assert [item["sk"] for item in all_items(fleet) if PASSWORD in repr(item)] == []

    def test_password_used_as_a_key_of_event_data_is_redacted(self, fleet):
        task_id = fleet.started(scale_up())
        run = claim_all(fleet)["gpu-1"]
        post_events(fleet, "gpu-1", run, {"type": "info", "step": "deploy-minion", "message": "tried",
                                          "data": {PASSWORD: 1, "nested": {f"user:{PASSWORD}": [PASSWORD]}}})
        event = next(e for e in fleet.events(task_id) if e["node"] == "gpu-1")
        assert event["data"] == {"***": 1, "nested": {"user:***": ["***"]}}

    def test_a_secret_shorter_than_four_characters_is_refused_at_submit(self, fleet):
        answer = fleet.submit(scale_up(parameters={**PARAMETERS, "password": "abc"}))
        assert answer.status == 400
        error = answer.body["error"]
        assert error["code"] == "validation_error"
        assert error["details"] == [{"path": "$.parameters.password", "message": "must be at least 4 characters long"}]
        assert "abc" not in error["message"]


class TestLogLines:
    def test_service_log_lines_survive_importing_the_app_and_stay_scrubbed(self):
        # Chalice(app_name="fleetrun") configures the logger Powertools uses too: unless told
        # not to, it sets it to ERROR and adds a plain stdout handler that bypasses the scrubber
        # GIVEN a fresh interpreter that imports the app as Lambda does, then logs as the services do
        script = (
            "import app\n"
            "from chalicelib.observability import logger\n"
            "logger.info('task created')\n"
            f"logger.error('token refused: Bearer {JWT}')\n"
        )

        # WHEN it runs
        result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, capture_output=True, text=True,
                                timeout=120, check=True)

        # THEN the info line is logged, and no line carries the token in clear
        output = result.stdout + result.stderr
        assert "task created" in output
        assert JWT not in output
