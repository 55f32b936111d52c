"""`fleetrun node reclaim --watch`: the node follows its task a moment after the task ends."""

from __future__ import annotations

from typing import Any

from fleetrun.cli_inventory import _after_reclaim


class NodeReads:
    """GET /v1/nodes/{id} answering each of `answers` in turn, then the last one."""

    def __init__(self, *answers: dict[str, Any]) -> None:
        self.answers, self.reads = list(answers), 0

    def get(self, path: str) -> dict[str, Any]:
        self.reads += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


RUNNING = {"status": "maintenance", "reclaim": {"task_id": "T1", "user": "carol", "outcome": "running"}}


def test_the_watch_reads_the_node_again_until_it_has_followed_its_reclaim_task():
    api = NodeReads(RUNNING, RUNNING, {"status": "idle", "reclaim": None})
    assert _after_reclaim(api, "gpu-7", "T1")["status"] == "idle"
    assert api.reads == 3


def test_a_failed_reclaim_is_reported_as_soon_as_the_node_says_so():
    failed = {"status": "maintenance", "reclaim": {"task_id": "T1", "user": "carol", "outcome": "failed"}}
    api = NodeReads(failed)
    assert _after_reclaim(api, "gpu-7", "T1")["reclaim"]["outcome"] == "failed"
    assert api.reads == 1


def test_a_node_that_never_follows_is_reported_after_the_timeout():
    api = NodeReads(RUNNING)
    assert _after_reclaim(api, "gpu-7", "T1", timeout=0.3)["reclaim"]["outcome"] == "running"
