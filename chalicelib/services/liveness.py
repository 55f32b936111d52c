"""Node liveness: every agent request counts as "seen"; silence makes a node `offline`; the
next contact brings it back to the status it had (an allocated node stays allocated).

"Seen" costs no read: authentication has just read the node item strongly consistently, and
that item is what `seen` looks at. It writes `last_seen_at` only when the stored value is
older than a sixth of the offline threshold (30 s with the default 180 s), so an agent
polling every second costs one small write per 30 s, not one per request.
"""

from __future__ import annotations

from chalicelib import clock, config
from chalicelib.domain.node_states import NodeStatus
from chalicelib.domain.records import Node
from chalicelib.errors import Conflict, InvalidTransition, NotFound
from chalicelib.observability import logger
from chalicelib.store import inventory

#: task types a node in maintenance may still claim (its own reclaim)
MAINTENANCE_TYPES = frozenset({"machine.reclaim"})
_SWEEP_ATTRIBUTES = ("pk", "sk", "node_id", "status", "last_seen_at", "created_at")


def refresh_seconds() -> int:
    """How stale `last_seen_at` may get before a contact rewrites it."""
    return max(1, config.node_offline_seconds() // 6)


def seen(node: Node, now: float | None = None) -> str:
    """Record a contact from `node`'s agent (`node` as authentication read it). Returns the
    node's status after the contact (an offline node is back)."""
    now = clock.now_epoch() if now is None else now
    stamp = clock.rfc3339(now)
    if node.status == NodeStatus.OFFLINE:
        return _come_back(node, stamp)
    last = node.last_seen_at
    if last is None or now - clock.parse_rfc3339(last) >= refresh_seconds():
        inventory.update_quietly(node, "seen", stamp)
    return str(node.status)


def _come_back(node: Node, stamp: str) -> str:
    previous = node.offline_from or NodeStatus.IDLE
    try:
        back = inventory.transition(node, "come_back", stamp)
    except (InvalidTransition, Conflict, NotFound):
        current = inventory.find(node.node_id)  # a racing request brought it back first
        return str(current.status) if current is not None else previous
    logger.info("node is back", extra={"node": node.node_id, "status": back.status})
    return str(back.status)


def claimable_types(status: str) -> frozenset[str] | None:
    """Task types a node in `status` may claim runs of (None: every type)."""
    if status == NodeStatus.MAINTENANCE:
        return MAINTENANCE_TYPES
    if status == NodeStatus.OFFLINE:
        return frozenset()
    return None


def may_claim(status: str | None, task_type: str) -> bool:
    allowed = claimable_types(status) if status is not None else None
    return allowed is None or task_type in allowed


def mark_silent_nodes_offline(now: float | None = None) -> list[str]:
    """The sweeper's part: every online node whose agent has been silent for longer than
    `FLEETRUN_NODE_OFFLINE_SECONDS` goes `offline` (remembering its status). Each write is
    conditional on the `last_seen_at` it was decided from, so a contact in between wins."""
    now = clock.now_epoch() if now is None else now
    threshold = now - config.node_offline_seconds()
    stamp = clock.rfc3339(now)
    marked: list[str] = []
    for node in inventory.iter_nodes(_SWEEP_ATTRIBUTES):
        if node.status == NodeStatus.OFFLINE:
            continue
        last = node.last_seen_at or node.created_at
        if clock.parse_rfc3339(last) > threshold:
            continue
        try:
            inventory.transition(node, "go_offline", stamp)
        except (InvalidTransition, Conflict, NotFound):
            continue
        marked.append(node.node_id)
        logger.warning("node offline", extra={"node": node.node_id, "was": node.status, "last_seen_at": last})
    return marked
