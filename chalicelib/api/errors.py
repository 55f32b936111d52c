"""How each domain error reads over HTTP: the one table of statuses and headers (API.md "Errors").

Errors carry their data (`code`, `message`, `extra`); this table adds what only HTTP has. A
class not listed takes the row of its nearest listed base class, so a new subclass of
`NotFound` answers 404 without a new row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final

from chalicelib.errors import (
    Busy,
    Conflict,
    FleetrunError,
    Forbidden,
    IdempotencyKeyReused,
    InvalidTransition,
    MethodNotAllowed,
    NotConfigured,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    Unauthenticated,
    UnknownTaskType,
    ValidationFailed,
)

Headers = dict[str, str]


@dataclass(frozen=True)
class HttpError:
    status: HTTPStatus
    #: response headers, each the value of a field of the error's `extra` (header name → field)
    headers: Mapping[str, str] = field(default_factory=dict)


#: every error class with its HTTP answer; the `code` in the body is the class's own
HTTP_ERRORS: Final[dict[type[FleetrunError], HttpError]] = {
    ValidationFailed: HttpError(HTTPStatus.BAD_REQUEST),
    UnknownTaskType: HttpError(HTTPStatus.BAD_REQUEST),
    Unauthenticated: HttpError(HTTPStatus.UNAUTHORIZED),
    Forbidden: HttpError(HTTPStatus.FORBIDDEN),
    NotFound: HttpError(HTTPStatus.NOT_FOUND),
    MethodNotAllowed: HttpError(HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": "allow"}),
    InvalidTransition: HttpError(HTTPStatus.CONFLICT),
    Conflict: HttpError(HTTPStatus.CONFLICT),
    Busy: HttpError(HTTPStatus.SERVICE_UNAVAILABLE, {"Retry-After": "retry_after"}),
    NotConfigured: HttpError(HTTPStatus.CONFLICT),
    PayloadTooLarge: HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
    IdempotencyKeyReused: HttpError(HTTPStatus.UNPROCESSABLE_ENTITY),
    RateLimited: HttpError(HTTPStatus.TOO_MANY_REQUESTS, {"Retry-After": "retry_after"}),
    ServiceUnavailable: HttpError(HTTPStatus.SERVICE_UNAVAILABLE, {"Retry-After": "retry_after"}),
    FleetrunError: HttpError(HTTPStatus.INTERNAL_SERVER_ERROR),
}


def http_error(error: FleetrunError) -> HttpError:
    """The row of the error's class, or of its nearest base class in the table."""
    for cls in type(error).__mro__:
        row = HTTP_ERRORS.get(cls)
        if row is not None:
            return row
    raise AssertionError(f"{type(error).__name__} is not a FleetrunError")


def http_status(error: FleetrunError) -> int:
    return int(http_error(error).status)


def http_headers(error: FleetrunError) -> Headers:
    """The headers of the error's answer, e.g. `Retry-After` of a RateLimited (a list field is
    the comma-separated value of HTTP: `Allow: GET, POST`)."""
    return {name: _header_value(error.extra[source]) for name, source in http_error(error).headers.items()}


def _header_value(value: object) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def header_names(status: int) -> list[str]:
    """The headers an error answer with this status carries (for the OpenAPI document)."""
    names = [name for row in HTTP_ERRORS.values() if row.status == status for name in row.headers]
    return list(dict.fromkeys(names))
