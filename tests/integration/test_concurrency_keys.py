"""`concurrency_key` on moto: tasks with one key run one at a time in creation order; the next
starts when the holder reaches a terminal status (cancel included); a release lost to a crash
is repaired by the sweeper; other keys and key-less tasks are not held up."""

from __future__ import annotations

from typing import Any

from chalicelib import clock
from chalicelib.services import concurrency, stream, sweeper
from chalicelib.store import tasks
from chalicelib.store.stream_records import Record
from tests.harness import Fleet, assert_statistics_equal_recount

NODE = "n1"


def keyed(key: str | None = "ws-1", **extra: Any) -> dict[str, Any]:
    return {"type": "shell", "target_nodes": [NODE], "parameters": {"command": ["true"]},
            "concurrency_key": key, **extra}


def submitted(fleet: Fleet, *bodies: dict[str, Any]) -> list[str]:
    if NODE not in fleet.node_tokens:
        fleet.register(NODE)
    ids = []
    for body in bodies:
        answer = fleet.submit(body)
        assert answer.status == 202, answer
        ids.append(str(answer.body["task_id"]))
    fleet.settle()
    return ids


def statuses(fleet: Fleet, ids: list[str]) -> list[str]:
    return [fleet.task(i)["status"] for i in ids]


def finish_claimed(fleet: Fleet) -> list[str]:
    """The node claims what it may and succeeds it; returns the task ids it ran."""
    done = []
    for run in fleet.claim(NODE, 10):
        assert fleet.finish(NODE, run).status == 200
        done.append(run["task_id"])
    fleet.settle()
    return done


class TestReplays:
    def test_a_terminal_record_delivered_again_releases_nothing_and_fails_nothing(self, fleet):
        # GIVEN a key's first task completed, and the second holding the key since
        first, second = submitted(fleet, keyed(), keyed())
        assert finish_claimed(fleet) == [first]
        assert statuses(fleet, [first, second]) == ["completed", "running"]
        # WHEN the first task's terminal record comes again (a stream batch retried whole)
        image = {"concurrency_key": {"S": "ws-1"}, "status": {"S": "completed"}, "attempt": {"N": "1"},
                 "created_at": {"S": tasks.get(first).created_at}}
        again = Record({"eventName": "MODIFY", "dynamodb": {
            "SequenceNumber": "1", "Keys": {"pk": {"S": f"TASK#{first}"}, "sk": {"S": "META"}},
            "OldImage": {**image, "status": {"S": "running"}}, "NewImage": image}})
        concurrency.release_on_terminal([again])  # (a failed condition used to raise: the batch failed)
        # THEN the second keeps the key, and runs
        assert finish_claimed(fleet) == [second]
        assert statuses(fleet, [first, second]) == ["completed", "completed"]


class TestOneAtATime:
    def test_three_tasks_of_one_key_run_strictly_one_after_another(self, fleet):
        first, second, third = submitted(fleet, keyed(), keyed(), keyed())
        # only the first holds the key; the others wait in pending without node runs
        assert statuses(fleet, [first, second, third]) == ["running", "pending", "pending"]
        assert fleet.runs(second) == {}
        assert fleet.runs(third) == {}
        order = []
        for _ in range(3):
            order += finish_claimed(fleet)
        assert order == [first, second, third]
        assert statuses(fleet, [first, second, third]) == ["completed"] * 3
        assert_statistics_equal_recount()

    def test_cancelling_the_holder_releases_the_next(self, fleet):
        first, second, third = submitted(fleet, keyed(), keyed(), keyed())
        (run,) = fleet.claim(NODE)
        assert fleet.user("POST", f"/v1/tasks/{first}/cancel").status == 202
        fleet.settle()
        assert fleet.finish(NODE, run, "failed", "stopped").status == 200
        fleet.settle()
        assert statuses(fleet, [first, second, third]) == ["cancelled", "running", "pending"]
        assert finish_claimed(fleet) == [second]
        assert finish_claimed(fleet) == [third]
        assert_statistics_equal_recount()

    def test_cancelling_a_waiting_task_leaves_the_holder_alone_and_skips_it(self, fleet):
        first, second, third = submitted(fleet, keyed(), keyed(), keyed())
        assert fleet.user("POST", f"/v1/tasks/{second}/cancel").status == 202
        fleet.settle()
        assert statuses(fleet, [first, second, third]) == ["running", "cancelled", "pending"]
        assert finish_claimed(fleet) == [first]
        assert finish_claimed(fleet) == [third]

    def test_other_keys_and_tasks_without_a_key_are_not_held_up(self, fleet):
        ids = submitted(fleet, keyed("a"), keyed("b"), keyed(None), keyed("a"))
        assert statuses(fleet, ids) == ["running", "running", "running", "pending"]

    def test_a_retried_task_queues_behind_the_tasks_already_waiting(self, fleet):
        first, second = submitted(fleet, keyed(), keyed())
        (run,) = fleet.claim(NODE)
        assert fleet.finish(NODE, run, "failed", "exit 1").status == 200
        fleet.settle()
        assert statuses(fleet, [first, second]) == ["failed", "running"]
        assert fleet.user("POST", f"/v1/tasks/{first}/retry", {"scope": "failed"}).status == 202
        fleet.settle()
        assert statuses(fleet, [first, second]) == ["pending", "running"]
        assert finish_claimed(fleet) == [second]
        assert finish_claimed(fleet) == [first]
        assert statuses(fleet, [first, second]) == ["completed", "completed"]


class TestCrashSafety:
    def test_the_sweeper_repairs_a_key_whose_release_was_lost(self, fleet, monkeypatch):
        first, second = submitted(fleet, keyed(), keyed())
        # GIVEN the holder finishes while the release consumer is down (a crash between writes)
        consumers = stream.CONSUMERS
        monkeypatch.setattr(stream, "CONSUMERS", ())
        assert finish_claimed(fleet) == [first]
        assert statuses(fleet, [first, second]) == ["completed", "pending"]
        monkeypatch.setattr(stream, "CONSUMERS", consumers)
        # WHEN the sweeper finds the waiting task stale THEN its dispatch repairs the key
        report = sweeper.sweep(clock.now_epoch() + 3600)
        assert second in report.redispatched
        fleet.settle()
        assert statuses(fleet, [first, second]) == ["completed", "running"]
        assert finish_claimed(fleet) == [second]
