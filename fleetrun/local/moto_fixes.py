"""Make moto's DynamoDB keep two promises real DynamoDB keeps, in the local runtime and tests.

1. A cancelled transaction changes nothing. moto 5.2.5 deep-copies every table a transaction
   touches and, on any failed condition, swaps the copy back in: the table gets a new stream
   shard object (a stream reader holding the old one never sees another record), writes made by
   other threads in between are lost, and every transaction pays a copy of the whole table.
   Here every condition is checked first; the operations are applied only when all hold.
2. Each request is atomic. moto's backend is not thread-safe, so two concurrent conditional
   writes can both pass their condition. One lock serialises DynamoDB requests, as the service
   serialises writes to an item.

Both are fixes to the stand-in, not to fleetrun: nothing here runs in AWS.
"""

from __future__ import annotations

import threading
from typing import Any

_LOCK = threading.RLock()
#: held by every DynamoDB request (the durable store takes it for a consistent snapshot)
LOCK = _LOCK
_applied = False


def apply() -> None:
    """Patch moto (idempotent)."""
    global _applied
    if _applied:
        return
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.responses import DynamoHandler

    DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]
    original_call = DynamoHandler.call_action

    def call_action(self: Any) -> Any:
        with _LOCK:
            return original_call(self)

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    _applied = True


def _transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    with _LOCK:
        seen: set[tuple[str, str]] = set()
        reasons: list[tuple[Any, Any, Any]] = []
        for entry in transact_items:
            if len(entry) > 1:
                raise TransactWriteSingleOpException
            op_type, op = next(iter(entry.items()))
            table = self.get_table(op["TableName"])
            key = op["Key"] if op_type != "Put" else {
                name: op["Item"][name] for name in (table.hash_key_attr, table.range_key_attr) if name
            }
            marker = (op["TableName"], str(dict(sorted(key.items()))))
            if marker in seen:
                raise MultipleTransactionsException()
            seen.add(marker)
            expression = op.get("ConditionExpression")
            current = self.get_item(op["TableName"], key)
            if expression and not get_filter_expression(
                expression, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues"),
            ).expr(current):
                old = current.to_json()["Attributes"] if current and op.get(
                    "ReturnValuesOnConditionCheckFailure") == "ALL_OLD" else None
                reasons.append(("ConditionalCheckFailed", "The conditional request failed", old))
            else:
                reasons.append((None, None, None))
        if any(code is not None for code, _, _ in reasons):
            raise TransactionCanceledException(reasons)
        for entry in transact_items:
            op_type, op = next(iter(entry.items()))
            names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            if op_type == "Put":
                self.put_item(op["TableName"], op["Item"], expression_attribute_names=names,
                              expression_attribute_values=values)
            elif op_type == "Delete":
                self.delete_item(op["TableName"], op["Key"], expression_attribute_names=names,
                                 expression_attribute_values=values)
            elif op_type == "Update":
                self.update_item(op["TableName"], op["Key"], update_expression=op["UpdateExpression"],
                                 expression_attribute_names=names, expression_attribute_values=values)
