"""Reading tasks, their node runs and events, scoped to what the actor may see."""

from __future__ import annotations

from typing import Any

from ulid import ULID

from chalicelib.auth import Actor
from chalicelib.domain.records import Task
from chalicelib.domain.statuses import TASK_STATUSES
from chalicelib.errors import Forbidden, TaskNotFound
from chalicelib.services.views import run_view, task_view
from chalicelib.store import events, pages, runs, tasks
from chalicelib.validation import query_enum, query_timestamp


def visible_task(actor: Actor, task_id: str) -> Task:
    """The task, when the actor may see it. Another user's task is reported as not found."""
    task = tasks.find(task_id)
    if task is None or (not actor.is_admin and task.owner != actor.user_id):
        raise TaskNotFound(task_id)
    return task


def get_task(actor: Actor, task_id: str) -> dict[str, Any]:
    task = visible_task(actor, task_id)
    return task_view(task, tasks.load_targets(task_id))


def present(task: Task) -> dict[str, Any]:
    return task_view(task, tasks.load_targets(task.task_id))


def list_tasks(actor: Actor, query: dict[str, str], limit: int, cursor: str | None) -> dict[str, Any]:
    owner = query.get("owner")
    if owner is not None and not actor.is_admin and owner != actor.user_id:
        raise Forbidden("only admins may list other users' tasks")
    if not actor.is_admin:
        owner = actor.user_id
    query_enum("status", query.get("status"), TASK_STATUSES)
    # task ids are ULIDs: a creation-time range is a range of ids
    wanted = tasks.TaskFilter(
        owner=owner, status=query.get("status"), type=query.get("type"), tag=query.get("tag"),
        ids_from=_ulid_bound("created_after", query.get("created_after")),
        ids_to=_ulid_bound("created_before", query.get("created_before")),
    )
    items, last_key = tasks.query_page(wanted, limit, pages.start_key(cursor))
    targets = tasks.load_targets_of(items)
    return pages.page((task_view(t, targets[t.task_id]) for t in items), last_key)


def _ulid_bound(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    edge = ULID.from_timestamp(query_timestamp(name, value))  # ULIDs start in 1970: no earlier bound exists
    prefix = str(edge)[:10]
    return prefix + ("0" * 16 if name == "created_after" else "Z" * 16)


def list_runs(actor: Actor, task_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
    visible_task(actor, task_id)
    found, last_key = runs.page(task_id, pages.start_key(cursor), limit)
    return pages.page((run_view(run) for run in found), last_key)


def list_events(actor: Actor, task_id: str, after: str | None, limit: int) -> dict[str, Any]:
    visible_task(actor, task_id)
    items, next_cursor = events.page(task_id, after, limit)
    return pages.page_with_cursor(items, next_cursor)
