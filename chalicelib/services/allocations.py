"""Allocating a node to a user and releasing it; each allocation is recorded with start and end."""

from __future__ import annotations

from typing import Any

from ulid import ULID

from chalicelib import clock
from chalicelib.domain.node_states import NODE_TRANSITIONS
from chalicelib.domain.records import Node
from chalicelib.errors import InvalidTransition
from chalicelib.observability import logger
from chalicelib.services.views import node_view
from chalicelib.store import inventory, pages
from chalicelib.store.models import AllocationItem


def allocate(node_id: str, user: str) -> tuple[Node, AllocationItem]:
    """`idle` → `allocated`: the node and a new open allocation, in one transaction.

    Raises NotFound, InvalidTransition (the node is not idle), Conflict.
    """
    now = clock.now_iso()
    allocation = inventory.new_allocation(node_id, str(ULID()), user, now)
    opened = {"allocation_id": allocation.allocation_id, "allocated_to": user, "allocated_at": now,
              "allocation_sk": allocation.sk}
    node = inventory.transition(inventory.get(node_id), "allocate", now, allocation=opened,
                                parts=[inventory.open_allocation_part(allocation)])
    logger.info("node allocated", extra={"node": node_id, "user": user, "allocation_id": allocation.allocation_id})
    return node, allocation


def release(node_id: str) -> tuple[Node, AllocationItem]:
    """`allocated` → `idle`: the node and its allocation, ended now, in one transaction.

    Raises NotFound, InvalidTransition (the node is not allocated), Conflict.
    """
    node = inventory.get(node_id)
    if not node.allocation_sk:
        raise InvalidTransition("node", node.status, "release", NODE_TRANSITIONS["release"].sources)
    now = clock.now_iso()
    closed = inventory.close_allocation_part(node_id, node.allocation_sk, now, "release")
    released = inventory.transition(node, "release", now, parts=[closed])
    allocation = inventory.get_allocation(node_id, node.allocation_sk)
    assert allocation is not None  # written in the same transaction
    logger.info("node released", extra={"node": node_id, "allocation_id": allocation.allocation_id})
    return released, allocation


def allocation_view(item: AllocationItem, now: float | None = None) -> dict[str, Any]:
    end = clock.parse_rfc3339(item.ended_at) if item.ended_at else (clock.now_epoch() if now is None else now)
    return {
        "allocation_id": item.allocation_id,
        "node_id": item.node_id,
        "user": item.user,
        "started_at": item.started_at,
        "ended_at": item.ended_at,
        "ended_by": item.ended_by,
        "hours": round(max(0.0, end - clock.parse_rfc3339(item.started_at)) / 3600, 3),
    }


def answer(node: Node, allocation: AllocationItem) -> dict[str, Any]:
    return {"node": node_view(node), "allocation": allocation_view(allocation)}


def page_view(node_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
    """A node's allocations, newest first. Raises NotFound for an unknown node."""
    inventory.get(node_id, consistent=False)
    items, last_key = inventory.node_allocations(node_id, limit, pages.start_key(cursor))
    return pages.page((allocation_view(a) for a in items), last_key)
