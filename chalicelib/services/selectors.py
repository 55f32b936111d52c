"""Label selectors (API.md `target_selector`): resolving one from the label index at submit and
at `dispatch {"selector": true}`, and listing nodes by label (`GET /v1/nodes?label=k:v`).

A resolution reads the index partition of one pair of the selector (store/label_index.py) and
filters on what its items carry; it never reads node items and never scans the table. What it
costs, in requests: ceil(m / 1000) strongly consistent Queries for the m nodes holding the
queried pair (at least one), nothing else - 1 Query at 10 nodes, 10 at 10,000 (11 when the last
page is exactly full); read units: one per started 4 KB of items read, 1 at 10 nodes and 210 at
10,000 with two short labels (`bench/selector_cost.py`). The bound: MAX_INDEX_READ items read,
50 Queries.
"""

from __future__ import annotations

import json
from typing import Any

from chalicelib.domain.records import Task
from chalicelib.domain.selectors import MAX_INDEX_READ, Labels, describe, matches, queried_pair
from chalicelib.domain.task_requests import MAX_TARGET_NODES
from chalicelib.errors import ValidationFailed
from chalicelib.observability import logger
from chalicelib.services import backfill
from chalicelib.services.views import node_view
from chalicelib.store import inventory, label_index, pages
from chalicelib.store.pages import Page


def resolve(selector: Labels, path: str = "$.target_selector") -> list[str]:
    """Every node whose labels hold all of `selector`, left out those in maintenance, in node
    id order.

    Raises ValidationFailed (at `path`) when more than MAX_TARGET_NODES nodes match, or when
    the pair the index is read by is held by more than MAX_INDEX_READ nodes (too broad to read
    in one request).
    """
    key, value = queried_pair(selector)
    selected: list[str] = []
    for read, member in enumerate(label_index.members(key, value), start=1):
        if read > MAX_INDEX_READ:
            raise _too_broad(path, f"more than {MAX_INDEX_READ} nodes carry {key}={value}; "
                                   "a selector reads at most that many")
        if member.selectable and matches(member.labels, selector):
            selected.append(member.node_id)
    if len(selected) > MAX_TARGET_NODES:
        raise _too_broad(path, f"{len(selected)} nodes match; a task has at most {MAX_TARGET_NODES}")
    return selected


def with_selected(nodes: list[str] | None, request: dict[str, Any] | None) -> list[str] | None:
    """The targets of a task request: its `target_nodes`, then the nodes its `target_selector`
    picks that are not among them (None: neither was given).

    Raises ValidationFailed: the selector matches no node, or more than MAX_TARGET_NODES in all.
    """
    if request is None:
        return nodes
    selector = request["labels"]
    selected = resolve(selector)
    if not selected:
        raise ValidationFailed(
            f"target_selector {describe(selector)} matches no node",
            [{"path": "$.target_selector", "message": "no registered node outside maintenance has all these labels"}],
        )
    targets = list(dict.fromkeys([*(nodes or []), *selected]))
    if len(targets) > MAX_TARGET_NODES:
        raise _too_broad("$.target_selector", f"{len(targets)} target nodes in all; at most {MAX_TARGET_NODES}")
    return targets


def stored(request: dict[str, Any] | None) -> str | None:
    """A `target_selector` as the task keeps it (compact JSON), None without one."""
    return json.dumps(request, sort_keys=True, separators=(",", ":")) if request else None


def dispatch_selected(task: Task) -> dict[str, Any]:
    """`POST /v1/tasks/{id}/dispatch {"selector": true}`: re-resolve the task's selector and
    make sure every node it picks now has a run (existing runs skipped, missing ones created).

    Raises ValidationFailed (the task has no selector, or it picks too many nodes),
    InvalidTransition unless the task is pending or running, or completed or partially failed
    without a concurrency key (it runs again when a node is added), Conflict (see backfill).
    """
    backfill.require_growable(task, reopen=True)  # before any read of the index
    if not task.target_selector:
        raise ValidationFailed(
            f"task {task.task_id} was created without a target_selector: there is nothing to re-resolve",
            [{"path": "$.selector", "message": "only for tasks created with a target_selector; "
                                               "give target_nodes instead"}],
        )
    nodes = resolve(json.loads(task.target_selector)["labels"], path="$.selector")
    return backfill.dispatch_nodes(task, nodes, reopen=True)


def labelled_page(selector: Labels, limit: int, cursor: str | None) -> Page:
    """`GET /v1/nodes?label=…`: the nodes carrying every pair, in id order (maintenance ones
    too: this lists, it does not select). One page reads `limit` index items of the first
    pair and the matching node items (BatchGetItem); with several pairs a page may hold fewer
    than `limit` nodes and still have a `next_cursor`.

    Raises ValidationFailed (path `$query.cursor`) for a cursor of another pair's listing.
    """
    key, value = queried_pair(selector)
    start = pages.start_key(cursor)
    if start is not None and start.get("pk") != {"S": label_index.label_pk(key, value)}:
        raise ValidationFailed("invalid query parameter cursor: it continues a listing of other labels",
                               [{"path": "$query.cursor", "message": "not a cursor of this listing"}])
    found, last_key = label_index.members_page(key, value, limit, start)
    chosen = [member.node_id for member in found if matches(member.labels, selector)]
    return pages.page((node_view(node) for node in inventory.get_many(chosen)), last_key)


def _too_broad(path: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"target_selector is too broad: {message}", [{"path": path, "message": message}])


def index_unindexed_nodes() -> int:
    """Give every node registered before the label index existed its index items, so selectors
    see it (the daily reconcile and the local runtime's start run this; a node already indexed
    costs nothing but its read). Returns how many nodes it indexed."""
    indexed = sum(inventory.index_if_unindexed(node) for node in inventory.iter_nodes()
                  if node.selector_rev is None)
    if indexed:
        logger.info("label index: nodes registered before it indexed", extra={"nodes": indexed})
    return indexed

