"""Every failure a caller may need to tell apart, each carrying the data that describes it.

Errors say what went wrong, not how a transport reports it: `chalicelib/api/errors.py` maps
each class to its HTTP status and headers in one table. What they do carry:

- `code`: the machine name of the failure in the contract (API.md "Errors"); it is the same
  on every channel - the HTTP error body, a WebSocket `error` message, the attributes of a
  dead-lettered intake message;
- `message` and `extra`: the human sentence and the fields that go with the code
  (`current_status`, `details`, `retry_after`, ...);
- `retryable`: whether the same request may succeed when simply tried again (a lost race, a
  rate limit, a dependency that is down, a bug) or never can (the request itself is wrong).

The second half of the module holds the internal signals between layers: never shown to a
caller as they are, so they are plain exceptions rather than `FleetrunError`s.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar


class FleetrunError(Exception):
    """Base of all domain errors; by itself an internal error (a bug), which a retry may outlive."""

    code: ClassVar[str] = "internal_error"
    retryable: ClassVar[bool] = True

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def document(self) -> dict[str, Any]:
        """The error document of API.md: `{"error": {"code", "message", ...extra}}`."""
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


class ValidationFailed(FleetrunError):
    code = "validation_error"
    retryable = False

    def __init__(self, message: str, details: Iterable[dict[str, str]] = ()) -> None:
        super().__init__(message, details=list(details))


class UnknownTaskType(FleetrunError):
    code = "unknown_task_type"
    retryable = False

    def __init__(self, task_type: str, known: Iterable[str]) -> None:
        super().__init__(f"unknown task type {task_type!r}", known_types=sorted(known))


class Unauthenticated(FleetrunError):
    code = "unauthenticated"
    retryable = False


class Forbidden(FleetrunError):
    code = "forbidden"
    retryable = False


class NotFound(FleetrunError):
    code = "not_found"
    retryable = False


class TaskNotFound(NotFound):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} not found")


class RouteNotFound(NotFound):
    """No route of the API has the request's path. The message names neither the path nor any
    header: API Gateway answers it without the request at hand (a gateway response), and no
    answer may echo what a client sent (a token pasted into a URL)."""

    def __init__(self) -> None:
        super().__init__("no route of this API has this path")


class MethodNotAllowed(FleetrunError):
    """The route exists without the request's method; `allow` lists the methods it has."""

    code = "method_not_allowed"
    retryable = False

    def __init__(self, allow: Iterable[str]) -> None:
        super().__init__("this route does not have that method (allow: the methods it has)", allow=sorted(allow))


class InvalidTransition(FleetrunError):
    code = "invalid_transition"
    retryable = False

    def __init__(self, entity: str, current: str, action: str, allowed_from: Iterable[str]) -> None:
        allowed = sorted(allowed_from)
        super().__init__(
            f"cannot {action} {entity} in status {current!r} (allowed from: {', '.join(allowed)})",
            current_status=current,
            allowed_from=allowed,
        )
        self.current = current


class UnknownAction(FleetrunError):
    """A transition table was asked for an action it does not have (a bug in the caller)."""


class Conflict(FleetrunError):
    """Lost a race: another writer changed the item. Safe to retry."""

    code = "conflict"


class Busy(Conflict):
    """Another transaction was changing the item at that moment (TransactionConflict) and the
    write's retries ran out (store/retrying.py): `503 service_unavailable` with `Retry-After`
    (API.md, Errors), still a Conflict to the code that catches lost races."""

    code = "service_unavailable"

    def __init__(self, message: str, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(message, retry_after=retry_after, **extra)
        self.retry_after = retry_after


class LeaseLost(Conflict):
    """The run is no longer leased to this caller for this attempt: the agent must stop."""

    def __init__(self, run_id: str, current_status: str | None, current_attempt: int | None) -> None:
        FleetrunError.__init__(
            self,
            f"run {run_id} is not leased to you for this attempt",
            reason="lease_lost",
            current_status=current_status,
            current_attempt=current_attempt,
        )


class OutputGap(Conflict):
    """A live output chunk that does not start where the attempt's stored output ends."""

    def __init__(self, run_id: str, offset: int, expected_offset: int) -> None:
        FleetrunError.__init__(
            self,
            f"output of run {run_id} continues at byte {expected_offset}, not {offset}",
            reason="output_gap",
            expected_offset=expected_offset,
        )


class PayloadTooLarge(FleetrunError):
    code = "payload_too_large"
    retryable = False


class IdempotencyKeyReused(FleetrunError):
    code = "idempotency_key_reused"
    retryable = False

    def __init__(self, key: str, task_id: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used with a different request body",
            task_id=task_id,
        )


class RateLimited(FleetrunError):
    code = "rate_limited"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many write requests; retry in {retry_after} s", retry_after=retry_after)
        self.retry_after = retry_after


class ServiceUnavailable(FleetrunError):
    """A dependency is throttled, conflicting or down: safe to retry after `retry_after` seconds."""

    code = "service_unavailable"

    def __init__(self, message: str, retry_after: int = 5, **extra: Any) -> None:
        super().__init__(message, retry_after=retry_after, **extra)
        self.retry_after = retry_after


class StoreBusy(ServiceUnavailable):
    """DynamoDB throttled a request, or a write ran into a transaction (store/writes.py)."""

    def __init__(self) -> None:
        super().__init__("the service's database is busy; retry in a moment", retry_after=1)


class NotConfigured(FleetrunError):
    """A feature needs settings the deployment does not have (e.g. no Harbor URL)."""

    code = "not_configured"
    retryable = False


class PrometheusUnavailable(ServiceUnavailable):
    """Prometheus is not configured, not reachable, or did not answer the query."""

    def __init__(self, message: str) -> None:
        super().__init__(message, source="prometheus")


# --- internal signals -----------------------------------------------------------------------


class ConditionFailed(Exception):
    """A guarded write found the item changed: its guard did not hold, or (`conflict`) another
    transaction was writing the same item at that moment (a retry may succeed)."""

    def __init__(self, message: str = "the item changed", *, conflict: bool = False) -> None:
        super().__init__(message)
        self.conflict = conflict


class IdempotencyRecordExists(Exception):
    """The idempotency record was written by an earlier (or racing) request."""


class ReservationLost(Exception):
    """A plan reservation write's condition did not hold: the run or the task changed (a lost race)."""


class Stopped(Exception):
    """The run must stop: it was cancelled, or its lease went to another attempt."""

    def __init__(self, cancelled: bool) -> None:
        super().__init__("cancel requested" if cancelled else "lease lost")
        self.cancelled = cancelled


class HarborError(Exception):
    """Harbor could not be read (after retries where a retry may help); the message is safe to show."""


class PushUnavailable(Exception):
    """No WebSocket management endpoint is configured."""


class TransportError(Exception):
    """A notification request did not get an HTTP answer (refused address, DNS, connect, timeout)."""


class TargetRefused(Exception):
    """A notification target's address is not allowed (raised at send time)."""


class EnqueueFailed(Exception):
    """SQS refused some messages of a batch; the caller's batch is redelivered."""


class DeliveryFailed(Exception):
    """A notification attempt failed; SQS will redeliver the message (or dead-letter it)."""
