"""Many nodes read at once by id (BatchGetItem, 100 keys a request, the requests in parallel):
which runners of a task are registered nodes, and what state they are in.

Cost: a node item is a few hundred bytes, so each key is half a read unit (eventually
consistent) whatever the projection; 10,000 runners are 100 requests and ~5,000 RCU, about
0.3 s with the requests 16 at a time — within API Gateway's 29 s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from chalicelib.domain.records import Node
from chalicelib.store.dynamo import run_concurrently
from chalicelib.store.models import NodeItem, node_pk

BATCH_KEYS = 100
#: what a runner's state needs (services/runner_state.py); token hashes never leave the table
STATE_ATTRIBUTES = ("pk", "sk", "node_id", "status", "slots", "last_seen_at", "offline_since", "created_at")


def registered(node_ids: Iterable[str]) -> set[str]:
    """The ids among `node_ids` that are registered nodes (keys only)."""
    return set(_read(node_ids, ["pk", "node_id"]))


def nodes(node_ids: Iterable[str]) -> dict[str, Node]:
    """The registered nodes among `node_ids`, with the attributes of their state."""
    return _read(node_ids, list(STATE_ATTRIBUTES))


def _read(node_ids: Iterable[str], attributes: list[str]) -> dict[str, Node]:
    wanted = sorted(set(node_ids))
    chunks = [wanted[start:start + BATCH_KEYS] for start in range(0, len(wanted), BATCH_KEYS)]
    found: dict[str, Node] = {}
    for part in run_concurrently([lambda chunk=chunk: _batch(chunk, attributes) for chunk in chunks]):
        found.update(part)
    return found


def _batch(node_ids: Sequence[str], attributes: list[str]) -> dict[str, Node]:
    # PynamoDB's batch_get re-sends unprocessed keys itself
    items = NodeItem.batch_get([(node_pk(node_id), "META") for node_id in node_ids], attributes_to_get=attributes)
    found = {}
    for item in items:
        node_id = item.node_id or item.pk.removeprefix("NODE#")
        found[node_id] = _state_of(item, node_id)
    return found


def _state_of(item: NodeItem, node_id: str) -> Node:
    """The node as far as it was read (never its token hash: the record holds an empty one)."""
    return Node(node_id=node_id, token_hash="", created_at=item.created_at or "", status=item.status or "idle",
                slots=int(item.slots or 1), last_seen_at=item.last_seen_at, offline_since=item.offline_since)
