"""Reading DynamoDB failures back: a failed condition, a transaction conflict, a throttle."""

from __future__ import annotations

from typing import Final

from botocore.exceptions import ClientError
from pynamodb.exceptions import DeleteError, PutError, PynamoDBException, TransactWriteError, UpdateError

#: DynamoDB's answers to "too much, too fast" and to a write racing a transaction: a retry later
#: succeeds, so the API answers them `503 service_unavailable` with `Retry-After` (API.md, Errors)
RETRY_LATER_CODES: Final = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "TransactionConflictException", "TransactionInProgressException",
})


def is_retry_later(error: BaseException) -> bool:
    """True when `error`, or an error it was raised from, is DynamoDB throttling or a write that
    ran into a transaction (PynamoDB wraps botocore's ClientError)."""
    seen: BaseException | None = error
    for _ in range(5):  # PynamoDB error -> ClientError: a short chain
        if seen is None:
            return False
        if isinstance(seen, PynamoDBException) and seen.cause_response_code in RETRY_LATER_CODES:
            return True
        if isinstance(seen, ClientError) and seen.response.get("Error", {}).get("Code") in RETRY_LATER_CODES:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def is_transaction_conflict(error: Exception) -> bool:
    """True when DynamoDB cancelled a transaction because another one touched the same item
    at the same moment (never simulated by moto; a retry resolves it)."""
    if isinstance(error, TransactWriteError):
        reasons = error.cancellation_reasons or []
        return any(r is not None and r.code == "TransactionConflict" for r in reasons)
    if isinstance(error, ClientError):
        reasons = error.response.get("CancellationReasons", [])
        return any(r.get("Code") == "TransactionConflict" for r in reasons)
    return False


def is_condition_failure(error: Exception) -> bool:
    """True when a PynamoDB write failed only because its condition did not hold."""
    if isinstance(error, UpdateError | PutError | DeleteError):
        return error.cause_response_code == "ConditionalCheckFailedException"
    if isinstance(error, TransactWriteError):
        reasons = error.cancellation_reasons or []
        return error.cause_response_code == "TransactionCanceledException" and any(
            r is not None and r.code == "ConditionalCheckFailed" for r in reasons
        )
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code")
        if code == "ConditionalCheckFailedException":
            return True
        if code == "TransactionCanceledException":
            reasons = error.response.get("CancellationReasons", [])
            return any(r.get("Code") == "ConditionalCheckFailed" for r in reasons)
    return False
