"""Every failure a caller may need to tell apart; `app.py` maps them to HTTP in one place."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class FleetrunError(Exception):
    """Base of all domain errors. `code` and `status` follow API.md's error table."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


class ValidationFailed(FleetrunError):
    code = "validation_error"
    status = 400

    def __init__(self, message: str, details: Iterable[dict[str, str]] = ()) -> None:
        super().__init__(message, details=list(details))


class UnknownTaskType(FleetrunError):
    code = "unknown_task_type"
    status = 400

    def __init__(self, task_type: str, known: Iterable[str]) -> None:
        super().__init__(f"unknown task type {task_type!r}", known_types=sorted(known))


class Unauthenticated(FleetrunError):
    code = "unauthenticated"
    status = 401


class Forbidden(FleetrunError):
    code = "forbidden"
    status = 403


class NotFound(FleetrunError):
    code = "not_found"
    status = 404


class TaskNotFound(NotFound):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} not found")


class InvalidTransition(FleetrunError):
    code = "invalid_transition"
    status = 409

    def __init__(self, entity: str, current: str, action: str, allowed_from: Iterable[str]) -> None:
        allowed = sorted(allowed_from)
        super().__init__(
            f"cannot {action} {entity} in status {current!r} (allowed from: {', '.join(allowed)})",
            current_status=current,
            allowed_from=allowed,
        )
        self.current = current


class Conflict(FleetrunError):
    code = "conflict"
    status = 409


class Busy(Conflict):
    """Another transaction was changing the item at that moment (TransactionConflict): retry."""


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


class PayloadTooLarge(FleetrunError):
    code = "payload_too_large"
    status = 413


class IdempotencyKeyReused(FleetrunError):
    code = "idempotency_key_reused"
    status = 422

    def __init__(self, key: str, task_id: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used with a different request body",
            task_id=task_id,
        )


class RateLimited(FleetrunError):
    code = "rate_limited"
    status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many write requests; retry in {retry_after} s", retry_after=retry_after)
        self.retry_after = retry_after


class ServiceUnavailable(FleetrunError):
    code = "service_unavailable"
    status = 503


class NotConfigured(FleetrunError):
    """A feature needs settings the deployment does not have (e.g. no Harbor URL)."""

    code = "not_configured"
    status = 409


class PrometheusUnavailable(ServiceUnavailable):
    """Prometheus is not configured, not reachable, or did not answer the query."""

    def __init__(self, message: str) -> None:
        super().__init__(message, source="prometheus")


class UnknownAction(FleetrunError):
    """A transition table has no such action (a programming error, not a user's)."""


class ConditionFailed(FleetrunError):
    """A guarded write found the item changed: its guard did not hold, or (`conflict`) another
    transaction was writing the same item at that moment (a retry may succeed)."""

    def __init__(self, message: str = "the item changed", *, conflict: bool = False) -> None:
        super().__init__(message)
        self.conflict = conflict


class IdempotencyRecordExists(FleetrunError):
    """The idempotency record was written by an earlier (or racing) request."""


class ReservationLost(FleetrunError):
    """A two-phase write's condition did not hold: the run or the task changed (a lost race)."""
