"""The node transition table: which action may follow which status, and what each writes."""

from __future__ import annotations

import itertools

import pytest

from chalicelib.domain.node_states import (
    NODE_STATUSES,
    NODE_TRANSITIONS,
    RECLAIM_FAILED,
    NodeStatus,
    allowed_node_actions,
    node_transition,
)
from chalicelib.errors import UnknownAction
from chalicelib.services import liveness

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


def test_the_table_holds_exactly_the_expected_transitions():
    assert {a: (set(t.sources), t.target) for a, t in NODE_TRANSITIONS.items()} == EXPECTED


@pytest.mark.parametrize(("action", "source"), list(itertools.product(EXPECTED, NODE_STATUSES)))
def test_an_action_is_allowed_only_from_its_sources(action, source):
    assert (action in allowed_node_actions(source)) == (source in EXPECTED[action][0])


def test_allocate_records_the_open_allocation_on_the_node():
    change = node_transition("allocate", NOW, **ALLOCATION)
    assert change.target == ALLOC
    assert {k: change.fields[k] for k in ALLOCATION} == ALLOCATION
    assert change.fields["status_changed_at"] == NOW


@pytest.mark.parametrize("action", ["release", "reclaim_succeeded"])
def test_becoming_idle_clears_the_allocation_and_the_reclaim(action):
    change = node_transition(action, NOW)
    assert change.target == IDLE
    for name in (*ALLOCATION, "reclaim_task_id", "reclaim_user", "reclaim_outcome"):
        assert name in change.fields, name
        assert change.fields[name] is None, name


def test_reclaim_ends_the_allocation_and_names_its_task():
    change = node_transition("reclaim", NOW, reclaim_task_id="T1", reclaim_user="bob")
    assert change.target == MAINT
    assert change.fields["reclaim_task_id"] == "T1"
    assert change.fields["reclaim_user"] == "bob"
    assert change.fields["reclaim_outcome"] is None  # a new reclaim is running, not failed
    assert all(change.fields[name] is None for name in ALLOCATION)


def test_a_failed_reclaim_keeps_maintenance_and_records_the_outcome():
    change = node_transition("reclaim_failed", NOW)
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
    change = node_transition("come_back", NOW, previous=previous)
    assert change.target == previous
    assert change.fields["offline_from"] is None
    assert change.fields["offline_since"] is None
    if previous == ALLOC:  # an allocated node that returns keeps its allocation
        assert not any(name in change.fields for name in ALLOCATION)


def test_going_offline_from_offline_and_coming_back_to_offline_are_refused():
    with pytest.raises(UnknownAction):
        node_transition("go_offline", NOW, source=OFF)
    with pytest.raises(UnknownAction):
        node_transition("come_back", NOW, previous=OFF)


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
