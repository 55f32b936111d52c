"""Node (machine) statuses and the one table of their transitions.

Like the task table: every writer of a node's `status` goes through `node_transition`, and
the store turns the result into one conditional update guarded by the allowed sources, so
DynamoDB enforces the rule. Fields that belong to a status are set and cleared in the same
write (an idle node has no allocation, a node back online has no `offline_from`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from chalicelib.domain.transitions import CLEAR, Transition
from chalicelib.errors import UnknownAction


class NodeStatus:
    #: free: no allocation, no maintenance; claims every kind of run
    IDLE: Final = "idle"
    #: allocated to a user (an open allocation is recorded on the node and as an ALLOC item)
    ALLOCATED: Final = "allocated"
    #: being reclaimed (or a reclaim failed): claims only `machine.reclaim` runs
    MAINTENANCE: Final = "maintenance"
    #: its agent has not been seen for `FLEETRUN_NODE_OFFLINE_SECONDS`; runs for it wait
    OFFLINE: Final = "offline"


NODE_STATUSES: Final = (NodeStatus.IDLE, NodeStatus.ALLOCATED, NodeStatus.MAINTENANCE, NodeStatus.OFFLINE)
#: statuses a node can go offline from (and return to: `offline_from` keeps which)
NODE_ONLINE: Final = frozenset({NodeStatus.IDLE, NodeStatus.ALLOCATED, NodeStatus.MAINTENANCE})
#: `come_back` returns a node to the status it went offline from
PREVIOUS: Final = "<previous>"

#: reclaim outcomes kept on a node in maintenance
RECLAIM_FAILED: Final = "failed"

N = NodeStatus


def _t(action: str, sources: set[str], target: str) -> Transition:
    return Transition(action, frozenset(sources), target)


NODE_TRANSITIONS: Final[dict[str, Transition]] = {
    t.action: t
    for t in (
        _t("allocate", {N.IDLE}, N.ALLOCATED),
        _t("release", {N.ALLOCATED}, N.IDLE),
        # from maintenance only once the previous reclaim failed (the store adds that guard)
        _t("reclaim", {N.IDLE, N.ALLOCATED, N.MAINTENANCE}, N.MAINTENANCE),
        _t("reclaim_succeeded", {N.MAINTENANCE}, N.IDLE),
        _t("reclaim_failed", {N.MAINTENANCE}, N.MAINTENANCE),
        _t("go_offline", set(NODE_ONLINE), N.OFFLINE),
        _t("come_back", {N.OFFLINE}, PREVIOUS),
    )
}

_ALLOCATION_FIELDS: Final = ("allocation_id", "allocated_to", "allocated_at", "allocation_sk")
_RECLAIM_FIELDS: Final = ("reclaim_task_id", "reclaim_user", "reclaim_outcome")


@dataclass(frozen=True)
class NodeChange:
    """What a node transition writes: the new status plus the fields that belong to it."""

    transition: Transition
    fields: dict[str, Any]

    @property
    def target(self) -> str:
        return str(self.fields["status"])


def node_transition(action: str, now: str, *, source: str | None = None, **values: Any) -> NodeChange:
    """The write of `action`. `come_back` needs `previous` (the status it went offline from);
    `go_offline` needs `source`; `allocate` and `reclaim` take their new fields as `values`.

    Raises UnknownAction.
    """
    transition = NODE_TRANSITIONS.get(action)
    if transition is None:
        raise UnknownAction(f"unknown node action {action!r}")
    target = values.pop("previous") if transition.target == PREVIOUS else transition.target
    if transition.target == PREVIOUS and target not in NODE_ONLINE:
        raise UnknownAction(f"cannot {action} a node to {target!r}")
    fields: dict[str, Any] = {"status": target, "status_changed_at": now}
    if action == "allocate":
        fields.update({name: values[name] for name in _ALLOCATION_FIELDS})
    elif action == "reclaim":
        fields.update(dict.fromkeys(_ALLOCATION_FIELDS, CLEAR))
        fields.update(reclaim_task_id=values["reclaim_task_id"], reclaim_user=values["reclaim_user"],
                      reclaim_outcome=CLEAR)
    elif action == "reclaim_failed":
        fields["reclaim_outcome"] = RECLAIM_FAILED
    elif action == "go_offline":
        if source not in NODE_ONLINE:
            raise UnknownAction(f"cannot go offline from {source!r}")
        fields.update(offline_from=source, offline_since=now)
    elif action == "come_back":
        fields.update(offline_from=CLEAR, offline_since=CLEAR)
    if target == N.IDLE:
        fields.update(dict.fromkeys(_ALLOCATION_FIELDS + _RECLAIM_FIELDS, CLEAR))
    return NodeChange(transition, fields)


def allowed_node_actions(source: str) -> frozenset[str]:
    return frozenset(t.action for t in NODE_TRANSITIONS.values() if source in t.sources)
