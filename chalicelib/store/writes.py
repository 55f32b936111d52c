"""Reading PynamoDB write failures back: a failed condition, or a transaction conflict."""

from __future__ import annotations

from botocore.exceptions import ClientError
from pynamodb.exceptions import PutError, TransactWriteError, UpdateError


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
    if isinstance(error, UpdateError | PutError):
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
