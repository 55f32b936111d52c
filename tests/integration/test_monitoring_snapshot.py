"""GET /v1/monitoring/snapshot: node counts kept by the stream, task and run figures at most
10 s old, replays harmless, a daily repair that fixes drift."""

from __future__ import annotations

import copy
from typing import Any

import boto3
import pytest

from chalicelib import clock, config
from chalicelib.services import snapshot
from chalicelib.store import snapshot as snapshot_store
from chalicelib.store.models import NodeItem, node_pk
from fleetrun.local.pumps import LambdaContext
from tests.harness import Fleet, assert_statistics_equal_recount, token


def read(fleet: Fleet, bearer: str | None = None) -> dict[str, Any]:
    """The snapshot as a viewer sees it (mint `bearer` before moving the clock: a token from
    the future is not valid yet)."""
    answer = fleet.call("GET", "/v1/monitoring/snapshot", bearer=bearer or token("vera", ("viewer",)))
    assert answer.status == 200, answer
    return answer.body  # type: ignore[no-any-return]


def set_status(node_id: str, status: str) -> None:
    """What the node routes (allocate, release, reclaim) write: a status change on NODE#<id>/META."""
    NodeItem(node_pk(node_id), "META").update(actions=[NodeItem.status.set(status)], condition=NodeItem.pk.exists())


def later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    now = clock.now_epoch() + seconds
    monkeypatch.setattr(clock, "now_epoch", lambda: now)


def counted_items() -> dict[str, dict[str, Any]]:
    client = boto3.client("dynamodb")
    items = client.query(
        TableName=config.table_name(), KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": snapshot_store.PK}}, ConsistentRead=True,
    )["Items"]
    return {item["sk"]["S"]: item for item in items}


class Recorder:
    """Every stream event the pump delivered, to deliver again."""

    def __init__(self, fleet: Fleet) -> None:
        self.events: list[dict[str, Any]] = []
        handler = fleet.stream.handler

        def recording(event: dict[str, Any], context: Any) -> Any:
            self.events.append(copy.deepcopy(event))
            return handler(event, context)

        fleet.stream.handler = recording

    def replay(self, fleet: Fleet, events: list[dict[str, Any]] | None = None) -> None:
        for event in events if events is not None else self.events:
            answer = fleet.app_module.stream_aggregator(copy.deepcopy(event), LambdaContext("fleetrun-stream"))
            assert answer == {"batchItemFailures": []}


class TestNodeCounts:
    def test_counts_registered_nodes_by_status_once_the_stream_drains(self, fleet):
        # GIVEN three registered nodes
        fleet.register("gpu-1", "gpu-2", "gpu-3")
        fleet.settle()
        # WHEN a viewer reads the snapshot
        body = read(fleet)
        # THEN every node is idle
        assert body["nodes"] == {"idle": 3, "allocated": 0, "maintenance": 0, "offline": 0}
        assert body["total_nodes"] == 3

    def test_reflects_node_status_changes_after_the_stream_drains(self, fleet):
        fleet.register("gpu-1", "gpu-2", "gpu-3")
        fleet.settle()
        assert read(fleet)["nodes"]["idle"] == 3
        # WHEN nodes change status, one of them twice within a batch
        set_status("gpu-1", "allocated")
        set_status("gpu-2", "maintenance")
        set_status("gpu-2", "offline")
        fleet.settle()
        # THEN the snapshot counts their newest statuses, with no wait for the 10 s refresh
        assert read(fleet)["nodes"] == {"idle": 1, "allocated": 1, "maintenance": 0, "offline": 1}

    def test_counts_a_status_it_has_never_heard_of(self, fleet):
        fleet.register("gpu-1", "gpu-2")
        set_status("gpu-2", "draining")
        fleet.settle()
        assert read(fleet)["nodes"] == {"idle": 1, "allocated": 0, "maintenance": 0, "offline": 0, "draining": 1}

    def test_a_deleted_node_is_no_longer_counted(self, fleet):
        fleet.register("gpu-1", "gpu-2")
        fleet.settle()
        NodeItem(node_pk("gpu-1"), "META").delete()
        fleet.settle()
        assert read(fleet)["nodes"]["idle"] == 1
        assert "expires_at" in counted_items()["NODE#gpu-1"]  # its record expires after the stream's retention

    def test_last_seen_touches_do_not_write_the_snapshot(self, fleet):
        fleet.register("gpu-1")
        fleet.settle()
        before = counted_items()
        # WHEN the agent polls (a claim refreshes last_seen_at: a NODE META change without a status change)
        NodeItem(node_pk("gpu-1"), "META").update(actions=[NodeItem.last_seen_at.set(clock.now_iso())])
        fleet.settle()
        # THEN nothing of the snapshot was written
        assert counted_items() == before


class TestReplays:
    def test_replaying_every_batch_changes_nothing(self, fleet):
        recorder = Recorder(fleet)
        fleet.register("gpu-1", "gpu-2", "gpu-3")
        fleet.settle()
        set_status("gpu-1", "allocated")
        set_status("gpu-3", "maintenance")
        fleet.settle()
        set_status("gpu-1", "idle")
        fleet.settle()
        expected = read(fleet)["nodes"]
        assert expected == {"idle": 2, "allocated": 0, "maintenance": 1, "offline": 0}
        assert len(recorder.events) >= 3
        # WHEN every batch is delivered again, in order, then the first ones once more
        recorder.replay(fleet)
        recorder.replay(fleet, recorder.events[:2])
        # THEN the counts are the same
        assert read(fleet)["nodes"] == expected

    def test_an_older_batch_delivered_after_a_newer_one_does_not_revert_a_node(self, fleet):
        recorder = Recorder(fleet)
        fleet.register("gpu-1")
        fleet.settle()
        set_status("gpu-1", "allocated")
        fleet.settle()
        # (the first delivery of it: the stream may have replayed it already)
        allocated_batch = next(event for event in recorder.events if any(
            r["dynamodb"].get("NewImage", {}).get("status") == {"S": "allocated"} for r in event["Records"]))
        set_status("gpu-1", "idle")
        fleet.settle()
        # WHEN the batch that allocated the node arrives again after its release (a bisected retry)
        recorder.replay(fleet, [allocated_batch])
        # THEN the node stays counted idle
        assert read(fleet)["nodes"]["idle"] == 1
        assert read(fleet)["nodes"]["allocated"] == 0


class TestFreshness:
    def test_task_and_run_figures_are_cached_then_refreshed_when_older_than_10_s(self, fleet, monkeypatch):
        # GIVEN a snapshot read before any task existed
        fleet.register("gpu-1", "gpu-2")
        fleet.settle()
        viewer = token("vera", ("viewer",))
        first = read(fleet)
        assert (first["running_tasks"], first["node_runs_in_flight"]) == (0, 0)
        # WHEN a task starts on both nodes and one of them claims its run
        answer = fleet.submit({"type": "shell", "target_nodes": ["gpu-1", "gpu-2"], "parameters": {"command": ["id"]}})
        assert answer.status == 202, answer
        fleet.settle()
        assert len(fleet.claim("gpu-1")) == 1
        fleet.settle()
        # THEN within 10 s the cached figures are served as they were
        cached = read(fleet)
        assert cached["as_of"] == first["as_of"]
        assert cached["running_tasks"] == 0
        # AND once the copy is older than 10 s, the next read refreshes it
        later(monkeypatch, snapshot.MAX_AGE_SECONDS + 1)
        fresh = read(fleet, viewer)
        assert fresh["as_of"] > first["as_of"]
        assert clock.parse_rfc3339(fresh["as_of"]) >= clock.now_epoch() - snapshot.MAX_AGE_SECONDS
        assert fresh["running_tasks"] == 1
        assert fresh["active_tasks"]["running"] == 1
        assert fresh["node_runs"] == {"pending": 1, "running": 1, "apply_pending": 0}
        # the claimed run is in flight, the unclaimed one waits
        assert (fresh["node_runs_in_flight"], fresh["node_runs_waiting"]) == (1, 1)
        assert fresh["nodes"]["idle"] == 2

    def test_finished_runs_leave_the_in_flight_count_and_statistics_still_equal_a_recount(self, fleet, monkeypatch):
        fleet.register("gpu-1", "gpu-2")
        answer = fleet.submit({"type": "shell", "target_nodes": ["gpu-1", "gpu-2"], "parameters": {"command": ["id"]},
                               "max_errors": 1})
        fleet.settle()
        fleet.run_agents(["gpu-1", "gpu-2"], fail=frozenset({"gpu-2"}))
        assert fleet.task(answer.body["task_id"])["status"] == "partial_failure"
        assert fleet.user("POST", f"/v1/tasks/{answer.body['task_id']}/retry", {"scope": "failed"}).status == 202
        fleet.settle()
        viewer = token("vera", ("viewer",))
        later(monkeypatch, snapshot.MAX_AGE_SECONDS + 1)
        body = read(fleet, viewer)
        assert body["node_runs"] == {"pending": 1, "running": 0, "apply_pending": 0}
        assert (body["node_runs_in_flight"], body["node_runs_waiting"]) == (0, 1)
        assert body["active_tasks"]["pending"] + body["active_tasks"]["running"] == 1
        assert_statistics_equal_recount()
        monkeypatch.undo()
        fleet.run_agents(["gpu-1", "gpu-2"])
        viewer = token("vera", ("viewer",))
        later(monkeypatch, 2 * (snapshot.MAX_AGE_SECONDS + 1))
        body = read(fleet, viewer)
        assert (body["running_tasks"], body["node_runs_in_flight"]) == (0, 0)
        assert_statistics_equal_recount()

    def test_a_slower_reader_does_not_overwrite_a_newer_copy(self, fleet):
        # GIVEN a copy stored at T
        now = clock.now_epoch()
        snapshot.read(now=now)
        # WHEN a reader that read the counters earlier stores its copy afterwards
        stored = snapshot_store.save_figures({"st_running": 7}, now - 5)
        # THEN the newer copy stays
        assert stored is False
        assert snapshot_store.number(snapshot_store.get(), "st_running") == 0


class TestRepair:
    def test_repair_counts_nodes_the_stream_never_counted_and_drops_deleted_ones(self, fleet):
        # GIVEN nodes written while nothing counted them (registered before the feature existed)
        fleet.register("gpu-1", "gpu-2", "gpu-3")
        fleet.settle()
        boto3.client("dynamodb").delete_item(TableName=config.table_name(), Key={"pk": {"S": snapshot_store.PK},
                                                                        "sk": {"S": "NODE#gpu-2"}})
        boto3.client("dynamodb").put_item(TableName=config.table_name(), Item={
            "pk": {"S": snapshot_store.PK}, "sk": {"S": "NODE#ghost"}, "node_id": {"S": "ghost"},
            "counted": {"S": "offline"}})
        boto3.client("dynamodb").update_item(
            TableName=config.table_name(), Key={"pk": {"S": snapshot_store.PK}, "sk": {"S": "META"}},
            UpdateExpression="ADD ns_offline :one, ns_idle :minus", ExpressionAttributeValues={
                ":one": {"N": "1"}, ":minus": {"N": "-1"}})
        fleet.settle()
        assert read(fleet)["nodes"] == {"idle": 2, "allocated": 0, "maintenance": 0, "offline": 1}
        # WHEN the daily job runs
        report = snapshot.repair()
        # THEN the counts equal the nodes again, and a second repair finds nothing
        assert report.fixed == {"gpu-2": "None -> idle", "ghost": "offline -> None"}
        assert read(fleet)["nodes"] == {"idle": 3, "allocated": 0, "maintenance": 0, "offline": 0}
        assert snapshot.repair().fixed == {}

    def test_the_stream_after_a_repair_does_not_count_a_node_twice(self, fleet):
        fleet.register("gpu-1")
        # the repair runs before the stream delivered the registration
        snapshot.repair()
        fleet.settle()
        assert read(fleet)["nodes"]["idle"] == 1


class TestAccess:
    def test_needs_a_user_token(self, fleet):
        answer = fleet.call("GET", "/v1/monitoring/snapshot")
        assert answer.status == 401
        assert answer.body["error"]["code"] == "unauthenticated"

    def test_the_answer_matches_its_published_schema(self, fleet):
        from chalicelib.api.validation import request_validator

        fleet.register("gpu-1")
        fleet.settle()
        errors = list(request_validator("MonitoringSnapshot").iter_errors(read(fleet)))
        assert errors == []
