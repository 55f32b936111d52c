"""The HTTP side of validation: request bodies by their contract schema name, headers, paging.

The machinery (JSON loading, the strict JSON Schema validator, the problem details) lives in
`chalicelib/validation.py`, below the services that validate documents of their own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from chalicelib import validation
from chalicelib.errors import ValidationFailed

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 200


#: query parameters and headers are names, ids, filters and keys: no control character
#: (C0, DEL, C1) and no lone surrogate in any of them
_UNSAFE_PARAMETER: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def parse(schema_name: str, raw_body: bytes | str | None, *, nul_allowed: bool = False) -> dict[str, Any]:
    """The JSON object of a request body, valid against `SCHEMAS[schema_name]`; NUL only where
    `nul_allowed` (see `validation.parse_document`).

    An empty body reads as `{}`. Raises PayloadTooLarge over 256 KiB, ValidationFailed otherwise.
    """
    from chalicelib.api.schemas import SCHEMAS  # the request schemas, built on the first body parsed

    return validation.parse_document(SCHEMAS[schema_name], raw_body, nul_allowed=nul_allowed)


def check_query(query: Mapping[str, str] | None) -> dict[str, str]:
    """The query parameters as a dict; raises ValidationFailed (path `$query.<name>`) for a value
    holding a control character or a lone surrogate."""
    checked = dict(query or {})
    bad = sorted(_query_path(name) for name, value in checked.items() if _UNSAFE_PARAMETER.search(name + value))
    if bad:
        raise ValidationFailed(
            f"query parameters must not contain control characters or lone surrogates: {', '.join(bad)}",
            [{"path": path, "message": "must not contain control characters or lone surrogates"} for path in bad],
        )
    return checked


def request_validator(schema_name: str) -> Validator:
    """The cached validator `parse` uses for `SCHEMAS[schema_name]`."""
    from chalicelib.api.schemas import SCHEMAS

    return validation.validator(SCHEMAS[schema_name])


def check_header(name: str, schema: Mapping[str, Any], value: str) -> None:
    """Raises ValidationFailed (path `$header.<name>`) when a header breaks its schema or holds
    a control character or a lone surrogate."""
    minimum, maximum = schema.get("minLength", 0), schema.get("maxLength", 10**9)
    if not minimum <= len(value) <= maximum:
        raise ValidationFailed(
            f"header {name} must be {minimum}-{maximum} characters",
            [{"path": f"$header.{name}", "message": f"must be {minimum}-{maximum} characters"}],
        )
    if _UNSAFE_PARAMETER.search(value):
        raise ValidationFailed(
            f"header {name} must not contain control characters or lone surrogates",
            [{"path": f"$header.{name}", "message": "must not contain control characters or lone surrogates"}],
        )


def _query_path(name: str) -> str:
    """`$query.tag`, or `$query["<JSON escape>"]` for a name that is not a plain word."""
    return f"$query.{name}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name) else f"$query[{json.dumps(name)}]"


def page_params(query: Mapping[str, str] | None) -> tuple[int, str | None]:
    """`(limit, cursor)` of a list request: limit 1-200 (default 50), cursor as sent (still signed:
    `api/cursors.py` verifies it) or None."""
    query = query or {}
    raw_limit = query.get("limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        if not re.fullmatch(r"[0-9]{1,4}", raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise ValidationFailed(
                "invalid query parameter limit",
                [{"path": "$query.limit", "message": f"must be an integer from 1 to {MAX_LIMIT}"}],
            )
        limit = int(raw_limit)
    return limit, query.get("cursor") or None
