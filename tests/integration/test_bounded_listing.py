"""GET /v1/tasks with a filter reads at most a fixed number of index entries per request
(store/tasks.py `LIST_READ_BUDGET`) and hands back a cursor to go on: a page may be short or
empty and still carry a `next_cursor` (API.md, lists)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.store import tasks
from chalicelib.store.models import TaskItem

BUDGET = 12
TASKS = 30


class IndexReads:
    """The index entries each DynamoDB Query on the task listing indexes read (`ScannedCount`)."""

    def __init__(self) -> None:
        self.scanned: list[int] = []
        self._index: str | None = None

    def before(self, params: dict[str, Any], **_: Any) -> None:
        body = params.get("body") or b"{}"
        self._index = json.loads(body if isinstance(body, str) else body.decode()).get("IndexName")

    def after(self, parsed: dict[str, Any], **_: Any) -> None:
        if self._index in ("list-index", "owner-index"):
            self.scanned.append(int(parsed.get("ScannedCount", 0)))


@pytest.fixture
def index_reads(fleet: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[IndexReads]:
    monkeypatch.setattr(tasks, "LIST_READ_BUDGET", BUDGET)
    reads = IndexReads()
    events = TaskItem._get_connection().connection.client.meta.events
    events.register("before-call.dynamodb.Query", reads.before)
    events.register("after-call.dynamodb.Query", reads.after)
    yield reads
    events.unregister("before-call.dynamodb.Query", reads.before)
    events.unregister("after-call.dynamodb.Query", reads.after)


def _submit(fleet: Any, tag: str) -> str:
    body = {"type": "shell", "target_nodes": ["l1"], "tags": [tag], "parameters": {"command": ["true"]}}
    answer = fleet.submit(body, who="alice")
    assert answer.status == 202, answer
    return str(answer.body["task_id"])


def _pages(fleet: Any, query: str, reads: IndexReads, **who: Any) -> Iterator[tuple[dict[str, Any], int]]:
    cursor = None
    for _ in range(TASKS):
        reads.scanned.clear()
        page = fleet.user("GET", f"/v1/tasks?{query}" + (f"&cursor={cursor}" if cursor else ""), **who).body
        yield page, sum(reads.scanned)
        cursor = page["next_cursor"]
        if not cursor:
            return
    raise AssertionError("the cursor never ended")


@pytest.mark.parametrize("who", [{}, {"who": "root", "roles": ("admin",)}], ids=["owner-index", "list-index"])
def test_a_filter_that_matches_nothing_reads_at_most_its_bound_per_request(fleet, index_reads, who):
    # GIVEN many tasks, none of them tagged `rare`
    for _ in range(TASKS):
        _submit(fleet, "common")
    # WHEN a client pages through `?tag=rare`
    pages = list(_pages(fleet, "tag=rare&limit=5", index_reads, **who))
    # THEN no request read more than the bound, each page is empty, and the cursor went on
    # until the whole partition was read (in about TASKS / BUDGET requests, not one)
    assert all(read <= BUDGET for _, read in pages), [read for _, read in pages]
    assert all(page["items"] == [] for page, _ in pages)
    assert len(pages) >= TASKS // BUDGET
    assert all(page["next_cursor"] for page, _ in pages[:-1])
    assert pages[-1][0]["next_cursor"] is None


def test_sparse_matches_come_through_the_cursor_newest_first_each_once(fleet, index_reads):
    # GIVEN two `rare` tasks among many
    ids = [_submit(fleet, "rare" if i in (3, 25) else "common") for i in range(TASKS)]
    # WHEN the client follows the cursor to the end
    pages = list(_pages(fleet, "tag=rare&limit=5", index_reads))
    # THEN it saw exactly those two, newest first, and no request read more than the bound
    seen = [t["task_id"] for page, _ in pages for t in page["items"]]
    assert seen == [ids[25], ids[3]]
    assert max(read for _, read in pages) <= BUDGET


def test_an_unfiltered_page_reads_only_its_limit(fleet, index_reads):
    for _ in range(6):
        _submit(fleet, "common")
    pages = list(_pages(fleet, "limit=4", index_reads))
    assert [len(page["items"]) for page, _ in pages] == [4, 2]
    assert [read for _, read in pages] == [4, 2]
