"""`fleetrun dispatch`: a dispatch the service finishes in chunks is shown as in progress, and
`--wait` follows it until the task's counts are final."""

from __future__ import annotations

from typing import Any

from fleetrun.cli_selectors import wait_for_dispatch
from tests.unit.cli_answers import CannedApi, run

TASK = "01JDX4K2M8Q7R5T3V9W1Y6ZT"
IN_PROGRESS = {"triggered": True, "state": "in_progress", "target_node_count": 150, "created_count": 0,
               "skipped_count": 0}
DONE = {"triggered": True, "state": "done", "target_node_count": 152, "created_count": 152, "skipped_count": 0}


class Turns(CannedApi):
    """Each path answers its answers in turn, then the last one again."""

    def request(self, method: str, path: str, body: Any = None, **_: Any) -> tuple[int, Any, dict[str, str]]:
        self.sent.append((method, path, body))
        queue = self.answers[path]
        return 200, queue.pop(0) if len(queue) > 1 else queue[0], {}


def api(*task_dispatches: dict[str, Any]) -> Turns:
    return Turns({
        f"/v1/tasks/{TASK}/dispatch": [{"dispatch": IN_PROGRESS, "task": {"task_id": TASK}}],
        f"/v1/tasks/{TASK}": [{"task_id": TASK, "dispatch": d} for d in task_dispatches],
    })


def test_an_answer_in_progress_says_so_and_how_to_follow_it() -> None:
    printed = run(api(DONE), "dispatch", TASK, "--selector", width=None)
    assert printed.exit_code == 0
    assert "dispatch in progress" in printed.out
    assert "--wait" in printed.out


def test_wait_prints_the_final_counts_once_the_dispatch_is_done() -> None:
    printed = run(api(IN_PROGRESS, DONE), "dispatch", TASK, "-n", "m000", "--wait", width=None)
    assert printed.exit_code == 0
    assert "dispatch done" in printed.out
    assert "152 node run(s) created" in printed.out


def test_the_wait_reads_the_task_until_its_dispatch_is_no_longer_in_progress() -> None:
    reads = api(IN_PROGRESS, IN_PROGRESS, DONE)
    assert wait_for_dispatch(reads, TASK, every=0.0)["state"] == "done"
    assert [path for method, path, _ in reads.sent if method == "GET"] == [f"/v1/tasks/{TASK}"] * 3
