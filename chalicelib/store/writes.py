"""Turning domain changes into PynamoDB actions and conditions, and reading failures back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError
from pynamodb.exceptions import PutError, TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.models import Model

from chalicelib.domain.writes import CLEAR


def field_actions(model: type[Model], fields: Mapping[str, Any]) -> list[Action]:
    """SET each field, or REMOVE it when its value is CLEAR (or None)."""
    attributes = model.get_attributes()
    actions: list[Action] = []
    for name, value in fields.items():
        attribute = attributes[name]
        actions.append(attribute.remove() if value is None or value is CLEAR else attribute.set(value))
    return actions


def status_in(model: type[Model], sources: frozenset[str]) -> Condition:
    status = model.get_attributes()["status"]
    return status.is_in(*sorted(sources))


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
