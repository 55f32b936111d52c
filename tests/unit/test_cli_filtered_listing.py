"""`fleetrun tasks` with a filter follows the cursor past short and empty pages (the service reads
a bounded number of tasks per request: API.md, `GET /v1/tasks`) until a screen is full or the
listing ends."""

from __future__ import annotations

from typing import Any

from fleetrun.client import Api
from tests.unit.cli_answers import run, tasks


class PagedApi(Api):
    """Serves `GET /v1/tasks` as the given pages, one per request, chained by cursors."""

    def __init__(self, pages: list[list[dict[str, Any]]]) -> None:
        super().__init__("http://fleetrun.test", "token")
        self.pages = pages
        self.asked: list[dict[str, Any]] = []

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
        params = kwargs.get("params") or {}
        self.asked.append(params)
        at = int(params.get("cursor") or 0)
        more = str(at + 1) if at + 1 < len(self.pages) else None
        return 200, {"items": self.pages[at], "next_cursor": more}, {}


def test_a_filtered_listing_follows_empty_pages_until_the_screen_is_full():
    # GIVEN a service answering two empty pages, then one task, then two, then more
    found = tasks()
    api = PagedApi([[], [], found[:1], found[1:3], found[3:]])
    # WHEN the user lists failed tasks, three at a time
    printed = run(api, "tasks", "--status", "failed", "--limit", "3", width=None)
    # THEN the command asked four times, each for what was still missing, and printed three
    assert printed.exit_code == 0
    assert [a.get("limit") for a in api.asked] == [3, 3, 3, 2]
    assert all(a.get("status") == "failed" for a in api.asked)
    assert sum(t["task_id"] in printed.out for t in found[:3]) == 3
    assert "--cursor 4" in printed.err  # and it says where to go on


def test_a_filtered_listing_stops_at_the_end_of_the_listing():
    api = PagedApi([[], [], []])
    printed = run(api, "tasks", "--tag", "rare", width=None)
    assert printed.exit_code == 0
    assert len(api.asked) == 3
    assert "no tasks" in printed.out
    assert "--cursor" not in printed.err


def test_an_unfiltered_listing_asks_once():
    api = PagedApi([[], tasks()])
    run(api, "tasks", width=None)
    assert len(api.asked) == 1
