"""Signed cursors: a `next_cursor` is valid only for the route, filters and user that produced it.

A service pages with a cursor of its own (`store/pages.py`: the store's last evaluated key; the
events listing: an event id). The HTTP edge hands it out as `<that cursor>.<tag>`, the tag an
HMAC-SHA256 over the operation, its path parameters, its filters (every query parameter but
`limit` and `cursor`), the caller's user id and the service's cursor. A cursor whose tag does
not verify - forged, garbled, another user's, another listing's, the same listing's under other
filters - is a `400 validation_error` before any service sees it, so a store is only ever handed
a start key it made itself for this very query.

The key is `config.cursor_secret()` (AWS: a Secrets Manager secret the stack generates). Where
no such secret is configured but HS256 user tokens are accepted (local mode, tests), it is
derived from the JWT secret: whoever holds that key can mint an admin token anyway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from chalicelib import config
from chalicelib.errors import FleetrunError, ValidationFailed

#: 128 bits of tag: a forger's odds are nil, and a cursor stays short in a URL
_TAG_BYTES: Final = 16
_TAG_CHARS: Final = 22  # unpadded base64url of 16 bytes
_VERSION: Final = "fleetrun-cursor/1"
#: query parameters that move through a listing rather than choose it
PAGING_PARAMETERS: Final = frozenset({"limit", "cursor"})


@dataclass(frozen=True)
class CursorScope:
    """What a cursor is bound to: one listing (operation, path, filters) seen by one user."""

    operation_id: str
    user: str
    path: Mapping[str, str] = field(default_factory=dict)
    filters: Mapping[str, str] = field(default_factory=dict)

    def message(self, cursor: str) -> bytes:
        # JSON, not concatenation: no user id, filter or path value can be shaped to pass for another
        bound = [_VERSION, self.operation_id, sorted(self.path.items()), sorted(self.filters.items()), self.user]
        return json.dumps([*bound, cursor], separators=(",", ":")).encode()


def sign(cursor: str, scope: CursorScope) -> str:
    """The cursor a client receives: the service's `cursor`, bound to `scope`."""
    return f"{cursor}.{_tag(cursor, scope)}"


def verify(signed: str, scope: CursorScope) -> str:
    """The service's cursor inside `signed`. Raises ValidationFailed (path `$query.cursor`) unless
    `sign` made it for this very scope."""
    cursor, _, tag = signed.rpartition(".")
    # compare_digest refuses non-ASCII str: compare the tags as bytes
    sent = tag.encode("utf-8", "surrogatepass")
    if not cursor or len(tag) != _TAG_CHARS or not hmac.compare_digest(sent, _tag(cursor, scope).encode()):
        raise ValidationFailed(
            "invalid query parameter cursor: not the next_cursor of a previous page of this listing, with these "
            "filters, for this user",
            [{"path": "$query.cursor", "message": "not a cursor of this listing; start over without it"}],
        )
    return cursor


def _tag(cursor: str, scope: CursorScope) -> str:
    digest = hmac.new(_key(), scope.message(cursor), hashlib.sha256).digest()[:_TAG_BYTES]
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def _key() -> bytes:
    secret = config.cursor_secret()
    if secret:
        return secret.encode()
    if config.jwt_secret():
        # a key of its own: a cursor's tag is never a MAC under the token key itself
        return hmac.new(config.jwt_secret().encode(), b"fleetrun cursor key", hashlib.sha256).digest()
    raise FleetrunError("no key to sign cursors with: set FLEETRUN_CURSOR_SECRET_ARN (or FLEETRUN_CURSOR_SECRET)")
