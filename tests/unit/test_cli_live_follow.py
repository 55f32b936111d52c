"""`fleetrun … --watch` following pushes (fleetrun/cli_live.py): what it shows of the task."""

from __future__ import annotations

from typing import Any

from fleetrun.cli_live import _pushed_events, _Watched


class Reads:
    """The REST reads of a watch: the task as `task`, no runs, no events."""

    def __init__(self, task: dict[str, Any]) -> None:
        self.task = task

    def get(self, path: str) -> dict[str, Any]:
        return dict(self.task)

    def pages(self, path: str, **query: Any) -> list[dict[str, Any]]:
        return []


class Pushes:
    """A subscription receiving `messages` in turn."""

    def __init__(self, *messages: dict[str, Any]) -> None:
        self.messages = list(messages)

    def receive(self, timeout: float) -> dict[str, Any] | None:
        return self.messages.pop(0)


def task(status: str, updated_at: str) -> dict[str, Any]:
    return {"task_id": "T1", "status": status, "updated_at": updated_at, "progress": 0}


def test_a_push_older_than_the_task_read_is_not_shown():
    # GIVEN a watch that read the task running at :02
    watched = _Watched(Reads(task("running", "2026-12-07T09:00:02.000Z")), "T1", None)
    # WHEN the subscription's older answer (pending at :01) arrives, then the task's end
    pushes = Pushes({"type": "task", "task": task("pending", "2026-12-07T09:00:01.000Z")},
                    {"type": "task", "task": task("completed", "2026-12-07T09:00:03.000Z")})
    shown = [snapshot.task["status"] for snapshot in watched.pushed(pushes)]
    # THEN the watch never goes back to pending
    assert shown == ["running", "completed"]


def test_events_follow_is_not_ended_by_an_old_terminal_push_of_a_retried_task():
    # GIVEN a retried task, read pending at :05 (it had been cancelled at :03)
    reads = Reads(task("pending", "2026-12-07T09:00:05.000Z"))
    state = _Watched(reads, "T1", None)
    # WHEN the push of its cancellation is delivered again, then the retry's end
    pushes = Pushes({"type": "task", "task": task("cancelled", "2026-12-07T09:00:03.000Z")},
                    {"type": "task", "task": task("completed", "2026-12-07T09:00:09.000Z")})
    followed = _pushed_events(state, pushes)
    assert next(followed) == []
    reads.task = task("completed", "2026-12-07T09:00:09.000Z")
    # THEN the follow ends at the retry's end only
    assert next(followed) == []
    assert pushes.messages == []


def test_a_push_of_older_counts_with_the_same_updated_at_is_not_shown():
    # GIVEN a watch that read the task at revision 5, one node done
    shown = {**task("running", "2026-12-07T09:00:02.000Z"), "revision": 5, "node_counts": {"succeeded": 1}}
    watched = _Watched(Reads(shown), "T1", None)
    # WHEN a batch delivered again pushes revision 4 (no node done; counts leave updated_at as it is)
    older = {**shown, "revision": 4, "node_counts": {"succeeded": 0}}
    done = {**task("completed", "2026-12-07T09:00:03.000Z"), "revision": 6, "node_counts": {"succeeded": 2}}
    pushes = Pushes({"type": "task", "task": older}, {"type": "task", "task": done})
    # THEN the watch never shows the older counts
    assert [s.task["node_counts"] for s in watched.pushed(pushes)] == [{"succeeded": 1}, {"succeeded": 2}]
