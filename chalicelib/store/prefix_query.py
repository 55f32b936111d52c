"""Every item of one partition whose sort key starts with a prefix, read consistently page after
page: the store's own whole reads (a task's marker items, a recount's parts, the counted nodes).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from chalicelib import aws, config


def items_under(pk: str, sk_prefix: str) -> Iterator[dict[str, Any]]:
    """The items (DynamoDB JSON) of partition `pk` whose sort key begins with `sk_prefix`."""
    client = aws.client("dynamodb")
    kwargs: dict[str, Any] = {
        "TableName": config.table_name(), "ConsistentRead": True,
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
        "ExpressionAttributeValues": {":pk": {"S": pk}, ":prefix": {"S": sk_prefix}},
    }
    while True:
        page = client.query(**kwargs)
        yield from page["Items"]
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
