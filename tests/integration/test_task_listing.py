"""GET /v1/tasks: newest first, filters, pages that fill up across filtered-out items, owner scope."""

from __future__ import annotations


def _submit(fleet, who: str, task_type: str = "shell", tag: str = "x") -> str:
    body = {"type": task_type, "target_nodes": ["l1"], "tags": [tag]}
    body["parameters"] = {"command": ["true"]} if task_type == "shell" else {"website_id": 1}
    answer = fleet.submit(body, who=who)
    assert answer.status == 202, answer
    return str(answer.body["task_id"])


def test_pages_are_newest_first_filtered_and_complete(fleet):
    # GIVEN alice's tasks of two types, interleaved, and one of bob's
    ids = [_submit(fleet, "alice", "shell" if i % 2 else "config.release", tag=f"t{i % 2}") for i in range(7)]
    _submit(fleet, "bob")
    # WHEN alice pages through her shell tasks two at a time
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        query = "?type=shell&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = fleet.user("GET", f"/v1/tasks{query}").body
        seen.extend(t["task_id"] for t in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    # THEN she sees exactly her shell tasks, newest first, each once
    assert seen == [t for i, t in reversed(list(enumerate(ids))) if i % 2]
    # AND tag filters work, and only admins may ask for another owner
    tagged = fleet.user("GET", "/v1/tasks?tag=t0").body["items"]
    assert {t["task_id"] for t in tagged} == {t for i, t in enumerate(ids) if i % 2 == 0}
    assert fleet.user("GET", "/v1/tasks?owner=bob").status == 403
    bobs = fleet.user("GET", "/v1/tasks?owner=bob", who="root", roles=("admin",)).body["items"]
    assert [t["owner"] for t in bobs] == ["bob"]


def test_created_after_and_before_select_by_creation_time(fleet):
    first = _submit(fleet, "alice")
    created = fleet.task(first)["created_at"]
    later = _submit(fleet, "alice")
    after = fleet.user("GET", f"/v1/tasks?created_after={created}").body["items"]
    assert later in {t["task_id"] for t in after}
    before = fleet.user("GET", "/v1/tasks?created_before=2000-01-01T00:00:00Z").body["items"]
    assert before == []
    assert fleet.user("GET", "/v1/tasks?created_after=yesterday").status == 400
