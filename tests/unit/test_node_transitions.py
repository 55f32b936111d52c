"""The node transition table: which action may follow which status, and what each writes."""

from __future__ import annotations

import itertools

import pytest

from chalicelib.domain.node_states import (
    NODE_STATUSES,
    NODE_TRANSITIONS,
    RECLAIM_FAILED,
    NodeInputs,
    NodeStatus,
    allowed_node_actions,
    node_change,
)
from chalicelib.domain.writes import CLEAR
from chalicelib.errors import UnknownAction
from chalicelib.services import liveness
from chalicelib.store.inventory import NodeKey

IDLE, ALLOC, MAINT, OFF = NodeStatus.IDLE, NodeStatus.ALLOCATED, NodeStatus.MAINTENANCE, NodeStatus.OFFLINE
NOW = "2026-11-22T10:00:00.000Z"

#: (action, sources, target) as the issue describes them
EXPECTED = {
    "allocate": ({IDLE}, ALLOC),
    "release": ({ALLOC}, IDLE),
    "reclaim": ({IDLE, ALLOC, MAINT}, MAINT),
    "reclaim_succeeded": ({MAINT}, IDLE),
    "reclaim_failed": ({MAINT}, MAINT),
    "go_offline": ({IDLE, ALLOC, MAINT}, OFF),
    "come_back": ({OFF}, "<previous>"),
}
ALLOCATION = {"allocation_id": "a1", "allocated_to": "bob", "allocated_at": NOW, "allocation_sk": "ALLOC#x"}
#: the status-keeping changes (reclaim outcomes of an offline node, contacts, administration)
KEEPING = {"offline_reclaim_succeeded", "offline_reclaim_failed", "reclaim_reopened", "seen", "update", "rotate_token"}


def node_transition(action: str, now: str, *, source: str = IDLE, previous: str | None = None, **values):
    """The change of `action` on a node read in `source` (that went offline from `previous`)."""
    node = NodeKey("n1", status=source, offline_from=previous)
    return node_change(action, node, NodeInputs(now=now, allocation=dict(ALLOCATION), **values))


def test_the_table_holds_exactly_the_expected_transitions():
    assert {a: (set(t.sources), t.target) for a, t in NODE_TRANSITIONS.items() if a not in KEEPING} == EXPECTED
    assert all(NODE_TRANSITIONS[a].target is None for a in KEEPING)


@pytest.mark.parametrize(("action", "source"), list(itertools.product(EXPECTED, NODE_STATUSES)))
def test_an_action_is_allowed_only_from_its_sources(action, source):
    assert (action in allowed_node_actions(source)) == (source in EXPECTED[action][0])


def test_allocate_records_the_open_allocation_on_the_node():
    change = node_transition("allocate", NOW)
    assert change.target == ALLOC
    assert {k: change.fields[k] for k in ALLOCATION} == ALLOCATION
    assert change.fields["status_changed_at"] == NOW


@pytest.mark.parametrize("action", ["release", "reclaim_succeeded"])
def test_becoming_idle_clears_the_allocation_and_the_reclaim(action):
    change = node_transition(action, NOW)
    assert change.target == IDLE
    for name in (*ALLOCATION, "reclaim_task_id", "reclaim_user", "reclaim_outcome"):
        assert name in change.fields, name
        assert change.fields[name] is CLEAR, name


def test_reclaim_ends_the_allocation_and_names_its_task():
    change = node_transition("reclaim", NOW, source=ALLOC, reclaim_task_id="T1", reclaim_user="bob")
    assert change.target == MAINT
    assert change.fields["reclaim_task_id"] == "T1"
    assert change.fields["reclaim_user"] == "bob"
    assert change.fields["reclaim_outcome"] is CLEAR  # a new reclaim is running, not failed
    assert all(change.fields[name] is CLEAR for name in ALLOCATION)


def test_a_failed_reclaim_keeps_maintenance_and_records_the_outcome():
    change = node_transition("reclaim_failed", NOW, source=MAINT, task_id="T1")
    assert change.target == MAINT
    assert change.fields["reclaim_outcome"] == RECLAIM_FAILED


@pytest.mark.parametrize("source", [IDLE, ALLOC, MAINT])
def test_going_offline_remembers_the_status_to_return_to(source):
    change = node_transition("go_offline", NOW, source=source)
    assert change.target == OFF
    assert change.fields["offline_from"] == source
    assert change.fields["offline_since"] == NOW


@pytest.mark.parametrize("previous", [IDLE, ALLOC, MAINT])
def test_coming_back_restores_the_previous_status(previous):
    change = node_transition("come_back", NOW, source=OFF, previous=previous)
    assert change.target == previous
    assert change.fields["offline_from"] is CLEAR
    assert change.fields["offline_since"] is CLEAR
    if previous == ALLOC:  # an allocated node that returns keeps its allocation
        assert not any(name in change.fields for name in ALLOCATION)


def test_coming_back_to_offline_is_refused():
    with pytest.raises(UnknownAction):
        node_transition("come_back", NOW, source=OFF, previous=OFF)


def test_going_offline_is_guarded_by_the_contact_it_was_decided_from():
    change = node_change("go_offline", NodeKey("n1", status=ALLOC, last_seen_at=NOW), NodeInputs(now=NOW))
    assert {p.attribute: p.value for p in change.guard} == {"status": ALLOC, "last_seen_at": NOW}
    assert change.sources == frozenset({IDLE, ALLOC, MAINT})


def test_a_reclaim_from_maintenance_needs_the_previous_one_failed():
    change = node_transition("reclaim", NOW, source=MAINT, reclaim_task_id="T1", reclaim_user="bob")
    assert {p.attribute: p.value for p in change.guard}["reclaim_outcome"] == RECLAIM_FAILED


def test_an_offline_nodes_successful_reclaim_makes_it_return_idle():
    change = node_transition("offline_reclaim_succeeded", NOW, source=OFF, task_id="T1")
    assert "status" not in change.fields
    assert change.fields["offline_from"] == IDLE
    assert change.fields["reclaim_task_id"] is CLEAR


def test_an_update_writes_only_what_it_is_given_and_keeps_the_status():
    change = node_transition("update", NOW, source=ALLOC, labels={"pool": "gpu"})
    assert change.fields == {"labels": {"pool": "gpu"}}
    assert change.sources == frozenset(NODE_STATUSES)
    assert node_transition("update", NOW, slots=4).fields == {"slots": 4}


def test_a_token_rotation_writes_only_the_new_hash_in_any_status():
    change = node_transition("rotate_token", NOW, source=OFF, token_hash="ab12")
    assert change.fields == {"token_hash": "ab12"}
    assert change.sources == frozenset(NODE_STATUSES)


def test_an_unknown_action_is_refused():
    with pytest.raises(UnknownAction):
        node_transition("explode", NOW)


@pytest.mark.parametrize(("status", "task_type", "allowed"), [
    (IDLE, "shell", True), (ALLOC, "shell", True), (MAINT, "shell", False), (MAINT, "machine.reclaim", True),
    (OFF, "machine.reclaim", False), (None, "shell", True),
])
def test_a_node_in_maintenance_claims_only_reclaim_runs(status, task_type, allowed):
    assert liveness.may_claim(status, task_type) is allowed


def test_last_seen_is_refreshed_at_a_sixth_of_the_offline_threshold(monkeypatch):
    from chalicelib import config

    monkeypatch.setenv("FLEETRUN_NODE_OFFLINE_SECONDS", "180")
    config.reset()
    assert liveness.refresh_seconds() == 30
