"""Node (machine) statuses and the one table of their transitions.

Like the task and run tables: every write of a node item goes through `node_change`, which
states the allowed sources, the guard (the node unchanged since it was read) and every field
the write sets or clears; the node repository (store/inventory.py) applies it as one
conditional update, so DynamoDB enforces the rule. Fields that belong to a status are set
and cleared in the same write (an idle node has no allocation or reclaim, a node back online
has no `offline_from`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from chalicelib.domain.writes import CLEAR, Change, Predicate, Transition, eq, transition_of
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


class NodeRef(Protocol):
    """What a transition needs to know of the node it changes (the node as read)."""

    @property
    def node_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def allocation_id(self) -> str | None: ...
    @property
    def offline_from(self) -> str | None: ...
    @property
    def last_seen_at(self) -> str | None: ...
    @property
    def reclaim_outcome(self) -> str | None: ...


@dataclass(frozen=True)
class NodeInputs:
    """The data only a caller knows."""

    now: str = ""
    #: `allocate`: allocation_id, allocated_to, allocated_at, allocation_sk
    allocation: dict[str, Any] = field(default_factory=dict)
    #: `reclaim`: the task that cleans the node and whose account it cleans
    reclaim_task_id: str | None = None
    reclaim_user: str | None = None
    #: the reclaim outcomes: the task whose outcome it is
    task_id: str | None = None
    #: `update`: the labels and slots that replace the node's (None: keep them)
    labels: dict[str, str] | None = None
    slots: int | None = None
    #: `rotate_token`: the hash of the node's new agent token
    token_hash: str | None = None


Builder = Callable[[NodeRef, NodeInputs], tuple[dict[str, Any], tuple[Predicate, ...]]]

_ALLOCATION_FIELDS: Final = ("allocation_id", "allocated_to", "allocated_at", "allocation_sk")
_RECLAIM_FIELDS: Final = ("reclaim_task_id", "reclaim_user", "reclaim_outcome")
_IDLE_CLEARS: Final = dict.fromkeys(_ALLOCATION_FIELDS + _RECLAIM_FIELDS, CLEAR)


def _same_allocation(node: NodeRef) -> Predicate:
    return eq("allocation_id", node.allocation_id)


def _allocate(node: NodeRef, given: NodeInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    return {name: given.allocation[name] for name in _ALLOCATION_FIELDS}, ()


def _release(node: NodeRef, given: NodeInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    return {}, (_same_allocation(node),)


def _reclaim(node: NodeRef, given: NodeInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    fields = {**dict.fromkeys(_ALLOCATION_FIELDS, CLEAR), "reclaim_task_id": given.reclaim_task_id,
              "reclaim_user": given.reclaim_user, "reclaim_outcome": CLEAR}
    # the node is as read; from maintenance only once the previous reclaim failed
    guard: tuple[Predicate, ...] = (eq("status", node.status), _same_allocation(node))
    if node.status == N.MAINTENANCE:
        guard += (eq("reclaim_outcome", RECLAIM_FAILED),)
    return fields, guard


def _reclaimed_by(given: NodeInputs) -> Predicate:
    return eq("reclaim_task_id", given.task_id)


def _reclaim_succeeded(node: NodeRef, given: NodeInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    return {}, (_reclaimed_by(given),)


def _reclaim_failed(node: NodeRef, given: NodeInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    return {"reclaim_outcome": RECLAIM_FAILED}, (_reclaimed_by(given), eq("reclaim_outcome", None))


def _offline_reclaim_succeeded(node: NodeRef, given: NodeInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    """An offline node whose reclaim succeeded comes back `idle`, not in maintenance."""
    fields = {"offline_from": N.IDLE, **dict.fromkeys(_RECLAIM_FIELDS, CLEAR)}
    return fields, (eq("offline_from", N.MAINTENANCE), _reclaimed_by(given))


def _offline_reclaim_failed(node: NodeRef, given: NodeInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    guard = (eq("offline_from", N.MAINTENANCE), _reclaimed_by(given), eq("reclaim_outcome", None))
    return {"reclaim_outcome": RECLAIM_FAILED}, guard


def _reclaim_reopened(node: NodeRef, given: NodeInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    """The failed reclaim task was retried: the node waits for the new outcome."""
    return {"reclaim_outcome": CLEAR}, (_reclaimed_by(given),)


def _go_offline(node: NodeRef, given: NodeInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    # a contact in between (a newer last_seen_at) wins
    return {"offline_from": node.status, "offline_since": given.now}, (
        eq("status", node.status), eq("last_seen_at", node.last_seen_at))


def _come_back(node: NodeRef, given: NodeInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    fields = {"status": node.offline_from or N.IDLE, "offline_from": CLEAR, "offline_since": CLEAR,
              "last_seen_at": given.now}
    return fields, (eq("offline_from", node.offline_from),)


def _seen(node: NodeRef, given: NodeInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    return {"last_seen_at": given.now}, ()


def _update(node: NodeRef, given: NodeInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    given_fields = {"labels": given.labels, "slots": given.slots}
    return {name: value for name, value in given_fields.items() if value is not None}, ()


def _rotate_token(node: NodeRef, given: NodeInputs) -> tuple[dict[str, Any], tuple[Predicate, ...]]:
    assert given.token_hash is not None
    return {"token_hash": given.token_hash}, ()


def _t(action: str, sources: set[str], target: str | None, build: Builder) -> Transition:
    return Transition(action, frozenset(sources), target, build)


NODE_TRANSITIONS: Final[dict[str, Transition]] = {
    t.action: t
    for t in (
        _t("allocate", {N.IDLE}, N.ALLOCATED, _allocate),
        _t("release", {N.ALLOCATED}, N.IDLE, _release),
        _t("reclaim", {N.IDLE, N.ALLOCATED, N.MAINTENANCE}, N.MAINTENANCE, _reclaim),
        _t("reclaim_succeeded", {N.MAINTENANCE}, N.IDLE, _reclaim_succeeded),
        _t("reclaim_failed", {N.MAINTENANCE}, N.MAINTENANCE, _reclaim_failed),
        _t("go_offline", set(NODE_ONLINE), N.OFFLINE, _go_offline),
        _t("come_back", {N.OFFLINE}, PREVIOUS, _come_back),
        # the status stays
        _t("offline_reclaim_succeeded", {N.OFFLINE}, None, _offline_reclaim_succeeded),
        _t("offline_reclaim_failed", {N.OFFLINE}, None, _offline_reclaim_failed),
        _t("reclaim_reopened", set(NODE_STATUSES), None, _reclaim_reopened),
        _t("seen", set(NODE_STATUSES), None, _seen),
        # administration: labels and slots replaced, a new agent token (the old one fails at once)
        _t("update", set(NODE_STATUSES), None, _update),
        _t("rotate_token", set(NODE_STATUSES), None, _rotate_token),
    )
}


def node_change(action: str, node: NodeRef, given: NodeInputs) -> Change:
    """The one conditional write of `action` on `node` (as read). Raises UnknownAction."""
    transition = transition_of(NODE_TRANSITIONS, "node", action)
    assert transition.build is not None
    fields, guard = transition.build(node, given)
    if transition.target is not None:
        target = fields.get("status", transition.target)
        if target not in (NODE_ONLINE if transition.target == PREVIOUS else NODE_STATUSES):
            raise UnknownAction(f"cannot {action} a node to {target!r}")
        fields = {**(_IDLE_CLEARS if target == N.IDLE else {}), **fields, "status": target,
                  "status_changed_at": given.now}
    return Change("node", (node.node_id,), action, transition.sources, fields, guard)


def allowed_node_actions(source: str) -> frozenset[str]:
    return frozenset(t.action for t in NODE_TRANSITIONS.values() if source in t.sources and t.target is not None)
