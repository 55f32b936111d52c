"""Signed cursors (api/cursors.py): a next_cursor continues only the listing, filters and user it came from."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

from chalicelib import config
from chalicelib.api import cursors
from chalicelib.api.contract import CURSOR, OPERATIONS
from chalicelib.api.cursors import CursorScope, sign, verify
from chalicelib.errors import FleetrunError, ValidationFailed
from chalicelib.store.pages import encode_cursor

SCOPE = CursorScope("listTasks", "alice", filters={"type": "shell"})
INNER = encode_cursor({"pk": {"S": "TASKS#alice"}, "sk": {"S": "01JD"}})


def refused(cursor: str, scope: CursorScope = SCOPE) -> list[str]:
    with pytest.raises(ValidationFailed) as caught:
        verify(cursor, scope)
    return [detail["path"] for detail in caught.value.extra["details"]]


class TestSignedCursor:
    def test_a_signed_cursor_opens_to_the_services_cursor_in_its_own_scope(self) -> None:
        assert verify(sign(INNER, SCOPE), SCOPE) == INNER

    def test_a_cursor_stays_url_safe(self) -> None:
        assert sign(INNER, SCOPE).replace(".", "").replace("-", "").replace("_", "").isalnum()

    @pytest.mark.parametrize(
        "other",
        [
            CursorScope("listSchedules", "alice", filters={"type": "shell"}),  # another route
            CursorScope("listTasks", "bob", filters={"type": "shell"}),  # another user
            CursorScope("listTasks", "alice", filters={"type": "config.release"}),  # another filter value
            CursorScope("listTasks", "alice"),  # the filter dropped
            CursorScope("listTasks", "alice", filters={"type": "shell", "tag": "cdn"}),  # a filter added
            CursorScope("listTasks", "alice", path={"task_id": "01JD"}, filters={"type": "shell"}),  # another path
        ],
        ids=["route", "user", "filter-value", "filter-dropped", "filter-added", "path"],
    )
    def test_a_cursor_replayed_on_another_listing_is_a_400(self, other: CursorScope) -> None:
        assert refused(sign(INNER, SCOPE), other) == ["$query.cursor"]

    def test_a_user_id_shaped_like_a_filter_cannot_borrow_another_users_cursor(self) -> None:
        # GIVEN alice's cursor, and a user whose id spells alice's id followed by her filter
        mine = CursorScope("listTasks", "alice", filters={"type": "shell"})
        crafted = CursorScope("listTasks", 'alice","type","shell', filters={})
        # THEN the two scopes never share a tag
        assert refused(sign(INNER, mine), crafted) == ["$query.cursor"]

    @pytest.mark.parametrize(
        "forge",
        [
            lambda: "eyJ4IjoxfQ",  # {"x":1}: a decodable key nobody signed
            lambda: INNER,  # the service's cursor without its tag
            lambda: "",
            lambda: ".",
            lambda: "." + sign(INNER, SCOPE).rpartition(".")[2],  # a tag without its cursor
            lambda: sign(INNER, SCOPE)[:-1],  # a tag cut short
            lambda: sign(INNER, SCOPE)[:-1] + "é",  # a non-ASCII tag (compare_digest refuses such str)
            lambda: sign(INNER, SCOPE).replace(INNER, encode_cursor({"pk": {"S": "TASKS#bob"}, "sk": {"S": "01"}})),
        ],
        ids=["forged-key", "unsigned", "empty", "dot", "tag-only", "short-tag", "non-ascii-tag", "swapped-key"],
    )
    def test_a_forged_or_garbled_cursor_is_a_400(self, forge: Callable[[], str]) -> None:
        assert refused(forge()) == ["$query.cursor"]


class TestCursorKey:
    def test_a_configured_cursor_secret_signs_instead_of_the_jwt_derived_key(self, monkeypatch) -> None:
        # GIVEN a cursor signed while only the JWT secret is set
        derived = sign(INNER, SCOPE)
        # WHEN the deployment configures a cursor secret of its own
        monkeypatch.setenv("FLEETRUN_CURSOR_SECRET", "a-cursor-secret-of-32-characters")
        config.reset()
        # THEN old cursors no longer verify, new ones do
        assert refused(derived) == ["$query.cursor"]
        assert verify(sign(INNER, SCOPE), SCOPE) == INNER

    def test_the_derived_key_is_not_the_jwt_secret_itself(self) -> None:
        assert cursors._key() != config.jwt_secret().encode()

    def test_without_any_secret_cursors_are_not_signed_with_a_made_up_key(self, monkeypatch) -> None:
        # GIVEN a deployment with neither a cursor secret nor an HS256 secret (AWS, Cognito tokens)
        monkeypatch.delenv("FLEETRUN_JWT_SECRET")
        config.reset()
        # THEN signing fails loudly (a 500 that is logged) rather than with a guessable key
        with pytest.raises(FleetrunError, match="FLEETRUN_CURSOR_SECRET_ARN"):
            sign(INNER, SCOPE)


def test_every_paged_view_answers_through_call_paged() -> None:
    """A view that read `call.page()` but answered the service's cursor unsigned would break page 2."""
    import app

    paged = [op for op in OPERATIONS if CURSOR in op.query]
    assert len(paged) >= 9
    for operation in paged:
        view = app.app.routes[operation.path][operation.method].view_function
        source = inspect.getsource(inspect.unwrap(view))
        assert "call.page()" in source, operation.operation_id
        assert "call.paged(" in source, operation.operation_id
