"""Node inventory: registration with a one-time token, changes, token rotation, listing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chalicelib import auth, clock
from chalicelib.domain.records import Node
from chalicelib.domain.selectors import label_filters
from chalicelib.domain.task_types import refuse_service_node
from chalicelib.services import selectors
from chalicelib.services.views import node_view
from chalicelib.store import inventory, pages


def register(node_id: str, labels: dict[str, str], slots: int) -> tuple[Node, str]:
    """Register a node and issue its token (shown once; only its hash is stored).

    Raises Conflict when the node exists, ValidationFailed for the reserved id `service`.
    """
    refuse_service_node([node_id], "$.node_id")
    token, token_hash = auth.new_node_token(node_id)
    return inventory.create(node_id, labels, slots, token_hash, clock.now_iso()), token


def update(node_id: str, labels: dict[str, str] | None, slots: int | None) -> Node:
    """Replace the node's labels and/or slots (None: keep). Raises NotFound, Busy."""
    return inventory.transition(inventory.get(node_id), "update", clock.now_iso(), labels=labels, slots=slots)


def rotate_token(node_id: str) -> str:
    """Issue the node a new token (shown once); the old one is refused from this write on.

    A request authenticated with the old token just before answers as if it came before the
    rotation; only a claim, whose answer carries secrets, checks the token again after its
    writes (services/claims.py). Raises NotFound, Busy.
    """
    node = inventory.get(node_id)  # first: an id no node can have is a 404, not a token for nothing
    token, token_hash = auth.new_node_token(node_id)
    inventory.transition(node, "rotate_token", clock.now_iso(), token_hash=token_hash)
    return token


def get(node_id: str) -> Node:
    """Raises NotFound."""
    return inventory.get(node_id, consistent=False)


def page_view(limit: int, cursor: str | None, labels: Sequence[str] = ()) -> dict[str, Any]:
    """A page of nodes in id order; `labels` (`pool:cdn`, all must hold) reads them from the
    label index. Raises ValidationFailed for a malformed label filter or cursor."""
    if labels:
        selector = label_filters(labels)
        return selectors.labelled_page(selector, limit, cursor) if selector else pages.page([], None)
    items, last_key = inventory.page(limit, pages.start_key(cursor))
    return pages.page((node_view(n) for n in items), last_key)


def require_self(caller: str, node_id: str) -> None:
    """A node token acts only for its own node."""
    auth.require_node(caller, node_id)
