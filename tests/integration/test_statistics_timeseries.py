"""GET /v1/statistics/timeseries: tasks per hour by terminal status, success rate and average
duration per hour, from hourly statistics scopes the aggregator writes in its transaction."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import boto3
import pytest

from chalicelib import clock
from chalicelib.services import statistics
from chalicelib.store import counters
from tests.harness import Fleet, assert_statistics_equal_recount

NODES = ["n1", "n2"]


def shell(**extra: Any) -> dict[str, Any]:
    return {"type": "shell", "target_nodes": NODES, "parameters": {"command": ["patch"]}, **extra}


def series(fleet: Fleet, query: str = "", who: str = "alice", roles: tuple[str, ...] = ("operator",)) -> dict[str, Any]:
    answer = fleet.user("GET", f"/v1/statistics/timeseries{query}", who=who, roles=roles)
    assert answer.status == 200, answer
    return answer.body  # type: ignore[no-any-return]


def current_hour(fleet: Fleet, **kwargs: Any) -> dict[str, Any]:
    bucket: dict[str, Any] = series(fleet, **kwargs)["buckets"][-1]
    return bucket


def finish(fleet: Fleet, fail: frozenset[str] = frozenset(), body: dict[str, Any] | None = None) -> str:
    task_id = fleet.started(body or shell(max_errors=1))
    fleet.run_agents(NODES, fail=fail)
    return task_id


class TestHourlyBuckets:
    def test_a_finished_task_counts_in_the_hour_of_its_completion(self, fleet):
        # GIVEN a task that ends partial_failure (n2 fails)
        task_id = finish(fleet, fail=frozenset({"n2"}))
        task = fleet.task(task_id)
        assert task["status"] == "partial_failure"
        # WHEN the last 24 hours are read
        body = series(fleet)
        # THEN there are 24 hourly buckets, oldest first, the last one being the hour it completed in
        assert body["hours"] == 24
        assert len(body["buckets"]) == 24
        hours = [b["hour"] for b in body["buckets"]]
        assert hours == sorted(hours)
        assert body["buckets"][-1]["hour"] == task["completed_at"][:13] + ":00:00Z"
        last = body["buckets"][-1]
        assert last["by_status"] == {"completed": 0, "partial_failure": 1, "failed": 0, "cancelled": 0, "discarded": 0}
        assert last["finished"] == 1
        assert last["success_rate"] == 0
        expected = clock.parse_rfc3339(task["completed_at"]) - clock.parse_rfc3339(task["started_at"])
        assert last["avg_duration_seconds"] == pytest.approx(expected, abs=0.01)
        assert all(b["finished"] == 0 and b["success_rate"] is None for b in body["buckets"][:-1])
        assert_statistics_equal_recount()

    def test_a_retried_task_leaves_its_hour_and_counts_again_when_it_finishes(self, fleet):
        # GIVEN a partial_failure task
        task_id = finish(fleet, fail=frozenset({"n2"}))
        # WHEN it is retried
        assert fleet.user("POST", f"/v1/tasks/{task_id}/retry", {"scope": "failed"}).status == 202
        fleet.settle()
        # THEN it no longer counts in any hour
        assert current_hour(fleet)["finished"] == 0
        assert_statistics_equal_recount()
        # WHEN it completes
        fleet.run_agents(NODES)
        assert fleet.task(task_id)["status"] == "completed"
        # THEN it counts once, as completed
        last = current_hour(fleet)
        assert last["by_status"]["completed"] == 1
        assert last["by_status"]["partial_failure"] == 0
        assert last["success_rate"] == 100
        assert_statistics_equal_recount()

    def test_a_cancelled_task_counts_but_not_in_success_rate_or_duration(self, fleet):
        # GIVEN a task cancelled before any node ran
        fleet.register(*NODES)
        task_id = fleet.submit(shell()).body["task_id"]
        fleet.settle()
        assert fleet.user("POST", f"/v1/tasks/{task_id}/cancel").status == 202
        fleet.settle()
        assert fleet.task(task_id)["status"] == "cancelled"
        # THEN it is in its hour as cancelled, with no success rate nor duration
        last = current_hour(fleet)
        assert last["by_status"]["cancelled"] == 1
        assert last["finished"] == 0
        assert last["success_rate"] is None
        assert last["avg_duration_seconds"] is None
        assert_statistics_equal_recount()


class TestScopes:
    def test_each_user_sees_their_own_hours_and_admins_choose(self, fleet):
        # GIVEN alice finished a task
        finish(fleet)
        # THEN alice sees it, bob does not, an admin sees it overall and by owner and type
        assert current_hour(fleet)["by_status"]["completed"] == 1
        assert current_hour(fleet, who="bob")["finished"] == 0
        admin = ("admin",)
        assert current_hour(fleet, who="root", roles=admin)["finished"] == 1
        assert current_hour(fleet, query="?owner=alice", who="root", roles=admin)["finished"] == 1
        assert current_hour(fleet, query="?type=config.release", who="root", roles=admin)["finished"] == 0
        assert current_hour(fleet, query="?type=shell&hours=3", who="root", roles=admin)["finished"] == 1

    def test_another_users_hours_are_forbidden_to_a_non_admin(self, fleet):
        answer = fleet.user("GET", "/v1/statistics/timeseries?owner=bob")
        assert answer.status == 403
        assert answer.body["error"]["code"] == "forbidden"

    @pytest.mark.parametrize("hours", ["0", "169", "x", "-1", "2.5"])
    def test_hours_outside_1_to_168_are_a_validation_error(self, fleet, hours):
        answer = fleet.user("GET", f"/v1/statistics/timeseries?hours={hours}")
        assert answer.status == 400
        assert answer.body["error"]["code"] == "validation_error"
        assert answer.body["error"]["details"][0]["path"] == "$query.hours"

    def test_a_week_is_read_in_batches(self, fleet):
        body = series(fleet, "?hours=168")
        assert len(body["buckets"]) == 168


class TestReconcile:
    def test_reconcile_repairs_a_lost_hourly_item(self, fleet):
        # GIVEN a finished task whose hourly statistics items were lost
        task_id = finish(fleet)
        hour = counters.hour_of(fleet.task(task_id)["completed_at"])
        table = boto3.client("dynamodb")
        scope = counters.hour_scope("all", hour)
        for shard in range(counters.STATS_SHARDS):
            table.delete_item(TableName=fleet.provisioned.table_name,
                              Key={"pk": {"S": f"STATS#{scope}"}, "sk": {"S": str(shard)}})
        assert current_hour(fleet, who="root", roles=("admin",))["finished"] == 0
        # WHEN the reconcile job runs
        drift = statistics.reconcile()
        # THEN it found and repaired exactly that
        assert drift[scope]["st_completed"] == "1"
        assert counters.read_stats(scope)["st_completed"] == Decimal(1)
        assert current_hour(fleet, who="root", roles=("admin",))["finished"] == 1
        assert_statistics_equal_recount()
