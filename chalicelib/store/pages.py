"""One page of a listing: `{"items": [...], "next_cursor": ...}`, and the opaque cursors it carries.

A cursor is the store's last evaluated key, as compact JSON in URL-safe base64 without padding.
A cursor that is not one (forged, garbled, too long) is a `validation_error` on `$query.cursor`.
Clients never see these as they are: the HTTP edge signs each one for the route, filters and
user of its listing (`chalicelib/api/cursors.py`) and verifies it before a service decodes it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import Any, Final

from chalicelib.errors import ValidationFailed

_MAX_CURSOR_CHARS: Final = 4096

Page = dict[str, Any]


def encode_cursor(key: dict[str, Any]) -> str:
    """An opaque, URL-safe cursor for a store's last evaluated key."""
    compact = json.dumps(key, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(compact.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    """The key a cursor was made from; raises ValidationFailed (path `$query.cursor`) for anything else."""
    try:
        if len(cursor) > _MAX_CURSOR_CHARS:
            raise ValueError("too long")
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error):  # UnicodeError and JSONDecodeError are ValueErrors
        key = None
    if not isinstance(key, dict):
        raise ValidationFailed(
            "invalid query parameter cursor",
            [{"path": "$query.cursor", "message": "not a cursor from a previous page; start over without it"}],
        )
    return key


def start_key(cursor: str | None) -> dict[str, Any] | None:
    """Where a listing resumes: the key of `cursor`, or None for the first page."""
    return decode_cursor(cursor) if cursor else None


def page(items: Iterable[Any], last_key: dict[str, Any] | None) -> Page:
    """A page whose `next_cursor` continues after `last_key` (null on the last page)."""
    return page_with_cursor(items, encode_cursor(last_key) if last_key else None)


def page_with_cursor(items: Iterable[Any], next_cursor: str | None) -> Page:
    """A page whose listing makes its own cursor (the events' `after` event id)."""
    return {"items": list(items), "next_cursor": next_cursor}
