"""Node inventory: registration with a one-time token, listing, liveness."""

from __future__ import annotations

from typing import Any

from pynamodb.exceptions import DoesNotExist, PynamoDBException

from chalicelib import auth, clock
from chalicelib.errors import Conflict, NotFound
from chalicelib.services.views import node_view
from chalicelib.store import pages
from chalicelib.store.models import NodeItem, node_pk
from chalicelib.store.writes import is_condition_failure


def register(node_id: str, labels: dict[str, str], slots: int) -> tuple[NodeItem, str]:
    """Register a node and issue its token (shown once; only its hash is stored).

    Raises Conflict when the node exists.
    """
    token, token_hash = auth.new_node_token(node_id)
    now = clock.now_iso()
    node = NodeItem(
        node_pk(node_id), "META", node_id=node_id, labels=labels, slots=slots, status="idle",
        token_hash=token_hash, created_at=now, list_pk="NODE", list_sk=node_id,
    )
    try:
        node.save(condition=NodeItem.pk.does_not_exist())
    except PynamoDBException as error:
        if is_condition_failure(error):
            raise Conflict(f"node {node_id} is already registered") from None
        raise
    return node, token


def get(node_id: str) -> NodeItem:
    try:
        return NodeItem.get(node_pk(node_id), "META")
    except DoesNotExist:
        raise NotFound(f"node {node_id} not found") from None


def page(limit: int, start_key: dict[str, Any] | None) -> tuple[list[NodeItem], dict[str, Any] | None]:
    result: Any = NodeItem.list_index.query("NODE", limit=limit, last_evaluated_key=start_key)
    items: list[NodeItem] = list(result)
    return items, result.last_evaluated_key


def page_view(limit: int, cursor: str | None) -> dict[str, Any]:
    items, last_key = page(limit, pages.start_key(cursor))
    return pages.page((node_view(n) for n in items), last_key)


def require_self(caller: str, node_id: str) -> None:
    """A node token acts only for its own node."""
    auth.require_node(caller, node_id)
