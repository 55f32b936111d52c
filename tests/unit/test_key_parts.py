"""`key_parts.part` and the keys built with it: different user strings never spell one key."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.store import counters
from chalicelib.store.dynamo import idempotency_pk
from chalicelib.store.key_parts import part
from chalicelib.store.subscriptions import SCOPE_OWN, event_pk

#: strings made mostly of the separators and the escape, where collisions would hide
adversarial = st.text(alphabet="#|%:2357CcA3a", max_size=12) | st.text(max_size=12)
optional = st.none() | adversarial.filter(bool)


@pytest.mark.parametrize(("one", "other"), [
    ("alice#k123", "alice%23k123"),
    ("a|b", "a%7Cb"),
    ("%", "%25"),
    ("%2", "%252"),
    ("#", "|"),
    ("", "%"),
])
def test_a_string_and_its_escaped_spelling_are_two_components(one, other):
    assert part(one) != part(other)


@given(adversarial)
def test_a_component_holds_no_separator_and_decodes_back(value):
    component = part(value)
    assert "#" not in component
    assert "|" not in component
    assert unquote(component) == value


@given(adversarial, adversarial)
def test_different_strings_are_different_components(one, other):
    assert (part(one) == part(other)) == (one == other)


@given(adversarial, adversarial, adversarial, adversarial)
def test_an_idempotency_record_belongs_to_exactly_one_owner_and_key(owner, key, other_owner, other_key):
    same_key = idempotency_pk(owner, key) == idempotency_pk(other_owner, other_key)
    assert same_key == ((owner, key) == (other_owner, other_key))


def test_a_sub_holding_hash_does_not_share_alices_idempotency_record():
    assert idempotency_pk("alice#k123", "1") != idempotency_pk("alice", "k123#1")


@given(optional, optional, optional, optional)
def test_a_statistics_scope_belongs_to_exactly_one_owner_and_type(owner, task_type, other_owner, other_type):
    same_scope = counters.stats_scope(owner, task_type) == counters.stats_scope(other_owner, other_type)
    assert same_scope == ((owner, task_type) == (other_owner, other_type))


def test_a_sub_spelling_a_type_scope_has_a_scope_of_its_own():
    assert counters.stats_scope(owner="alice|type:shell") != counters.stats_scope(owner="alice", task_type="shell")
    assert counters.stats_scope(task_type="shell|hour:2026-11-22T18") != counters.hour_scope(
        counters.stats_scope(task_type="shell"), "2026-11-22T18")


def test_the_scopes_a_task_counts_in_are_the_ones_its_readers_build():
    assert counters.scopes_of("a|b", "shell") == (
        "all", "type:shell", "owner:a%7Cb", "owner:a%7Cb|type:shell",
    )


@given(adversarial, adversarial)
def test_a_users_subscription_index_never_is_another_users(owner, other):
    assert (event_pk("task.completed", SCOPE_OWN, owner) == event_pk("task.completed", SCOPE_OWN, other)) == (
        owner == other)
