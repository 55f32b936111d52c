"""Listing pages and their opaque cursors (store/pages.py): one shape for every list route."""

from __future__ import annotations

import base64
import re

import pytest

from chalicelib.errors import ValidationFailed
from chalicelib.store.pages import decode_cursor, encode_cursor, page, page_with_cursor, start_key


class TestCursor:
    def test_round_trip(self):
        key = {"pk": {"S": "TASK#01JD"}, "sk": {"S": "EVENT#0042"}, "n": {"N": "7"}}
        cursor = encode_cursor(key)
        assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)
        assert decode_cursor(cursor) == key

    @pytest.mark.parametrize(
        "cursor",
        [
            "",
            "not base64!!",
            "a",
            base64.urlsafe_b64encode(b"[1, 2]").decode(),
            base64.urlsafe_b64encode(b"\xff\xfe").decode(),
            base64.urlsafe_b64encode(b"{not json").decode(),
            encode_cursor({"k": "v" * 5000}),
        ],
    )
    def test_bad_cursor(self, cursor):
        with pytest.raises(ValidationFailed) as caught:
            decode_cursor(cursor)
        assert [d["path"] for d in caught.value.extra["details"]] == ["$query.cursor"]


class TestPage:
    def test_a_page_with_more_items_carries_the_cursor_of_its_last_key(self) -> None:
        key = {"pk": {"S": "NODE#edge-1"}}
        answer = page(iter([{"n": 1}]), key)
        assert answer == {"items": [{"n": 1}], "next_cursor": encode_cursor(key)}
        assert start_key(answer["next_cursor"]) == key

    def test_the_last_page_has_a_null_cursor(self) -> None:
        assert page([], None) == {"items": [], "next_cursor": None}

    def test_a_listing_with_its_own_cursor_keeps_it_as_it_is(self) -> None:
        assert page_with_cursor([1], "01JD-0042") == {"items": [1], "next_cursor": "01JD-0042"}

    def test_no_cursor_starts_at_the_beginning(self) -> None:
        assert start_key(None) is None
        assert start_key("") is None
