"""Issue 13, item 2: a user-controlled string never reaches another user's item by spelling
the separators of a key. A JWT `sub` is any non-empty string, so a user can be called
`alice#k123` or `alice|type:shell`; every key component goes through `key_parts.part`."""

from __future__ import annotations

from typing import Any

from tests.harness import Fleet, assert_statistics_equal_recount

NODES = ["n1", "n2"]
#: `IDEM#alice#k123#1` is also how `IDEM#<alice#k123>#<1>` was spelled
VICTIM, VICTIM_KEY = "alice", "k123#1"
IMPOSTOR, IMPOSTOR_KEY = "alice#k123", "1"


def shell(command: str = "uptime") -> dict[str, Any]:
    return {"type": "shell", "target_nodes": NODES, "parameters": {"command": [command]}}


class TestIdempotencyKeys:
    def test_a_sub_containing_hash_cannot_replay_another_users_idempotency_key(self, fleet: Fleet) -> None:
        # GIVEN alice created a task with the key `k123#1`
        fleet.register(*NODES)
        victim = fleet.submit(shell(), who=VICTIM, key=VICTIM_KEY)
        assert victim.status == 202, victim

        # WHEN the user `alice#k123` sends the same body with the key `1`
        impostor = fleet.submit(shell(), who=IMPOSTOR, key=IMPOSTOR_KEY)

        # THEN they get a task of their own, not alice's replayed
        assert impostor.status == 202, impostor
        assert "Idempotent-Replayed" not in impostor.headers
        assert impostor.body["task_id"] != victim.body["task_id"]
        assert impostor.body["owner"] == IMPOSTOR

    def test_a_sub_containing_hash_learns_nothing_from_a_used_key_with_another_body(self, fleet: Fleet) -> None:
        # GIVEN alice created a task with the key `k123#1`
        fleet.register(*NODES)
        victim = fleet.submit(shell(), who=VICTIM, key=VICTIM_KEY)

        # WHEN the user `alice#k123` sends another body with the key `1`
        impostor = fleet.submit(shell("id"), who=IMPOSTOR, key=IMPOSTOR_KEY)

        # THEN it is created: no 422 naming alice's task
        assert impostor.status == 202, impostor
        assert victim.body["task_id"] not in str(impostor.body)

    def test_a_sub_containing_hash_cannot_take_a_key_before_its_owner_uses_it(self, fleet: Fleet) -> None:
        # GIVEN the user `alice#k123` used the key `1` first
        fleet.register(*NODES)
        impostor = fleet.submit(shell("id"), who=IMPOSTOR, key=IMPOSTOR_KEY)
        assert impostor.status == 202, impostor

        # WHEN alice sends her own request with the key `k123#1`
        victim = fleet.submit(shell(), who=VICTIM, key=VICTIM_KEY)

        # THEN alice's task is created as hers, not refused nor answered with the impostor's
        assert victim.status == 202, victim
        assert victim.body["owner"] == VICTIM
        assert victim.body["task_id"] != impostor.body["task_id"]

    def test_a_users_key_still_replays_their_own_task(self, fleet: Fleet) -> None:
        # GIVEN both users hold a key that spelled the same record before
        fleet.register(*NODES)
        victim = fleet.submit(shell(), who=VICTIM, key=VICTIM_KEY)
        impostor = fleet.submit(shell(), who=IMPOSTOR, key=IMPOSTOR_KEY)

        # WHEN each sends their request again
        again = fleet.submit(shell(), who=VICTIM, key=VICTIM_KEY)
        impostor_again = fleet.submit(shell(), who=IMPOSTOR, key=IMPOSTOR_KEY)

        # THEN each replays their own task
        assert (again.status, again.body["task_id"]) == (200, victim.body["task_id"])
        assert (impostor_again.status, impostor_again.body["task_id"]) == (200, impostor.body["task_id"])


class TestStatisticsScopes:
    def test_a_sub_containing_a_scope_separator_cannot_read_another_users_statistics(self, fleet: Fleet) -> None:
        # GIVEN alice finished a shell task
        task_id = fleet.started(shell(), who="alice")
        fleet.run_agents(NODES)
        assert fleet.task(task_id)["status"] == "completed"
        assert fleet.stats(who="alice", roles=("viewer",), query="?type=shell")["total_tasks"] == 1

        # WHEN a viewer whose sub is `alice|type:shell` reads their own statistics and hours
        spoof = "alice|type:shell"
        totals = fleet.stats(who=spoof, roles=("viewer",))
        hours = fleet.user("GET", "/v1/statistics/timeseries", who=spoof, roles=("viewer",))

        # THEN they see their own (nothing), not alice's shell figures
        assert totals["total_tasks"] == 0
        assert totals["type_stats"] == {}
        assert hours.status == 200, hours
        assert hours.body["buckets"][-1]["finished"] == 0

    def test_a_type_filter_cannot_reach_an_hourly_scope(self, fleet: Fleet) -> None:
        # GIVEN alice finished a shell task this hour
        task_id = fleet.started(shell(), who="alice")
        fleet.run_agents(NODES)
        hour = fleet.task(task_id)["completed_at"][:13]

        # WHEN alice asks for the "type" `shell|hour:<this hour>`
        totals = fleet.stats(who="alice", roles=("viewer",), query=f"?type=shell%7Chour:{hour}")

        # THEN that is a type of its own, with no tasks, not the hour's bucket
        assert totals["total_tasks"] == 0
        assert totals["by_status"]["completed"] == 0

    def test_users_with_separators_in_their_sub_read_their_own_counts_equal_to_a_recount(self, fleet: Fleet) -> None:
        # GIVEN users whose subs hold every separator and the escape character finished tasks
        for who in ("alice|type:shell", "bob#1", "carol%7C"):
            fleet.started(shell(), who=who)
        fleet.run_agents(NODES)

        # THEN each sees exactly their own task, and the counters equal a recount
        for who in ("alice|type:shell", "bob#1", "carol%7C"):
            assert fleet.stats(who=who, roles=("viewer",), query="?type=shell")["completed_tasks"] == 1
        assert fleet.stats(query="?owner=alice|type:shell")["total_tasks"] == 1
        assert_statistics_equal_recount()
