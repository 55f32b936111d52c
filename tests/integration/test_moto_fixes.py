"""The stand-in must keep DynamoDB's promises, or the local runtime's stream stalls."""

from __future__ import annotations

import threading

import boto3
import pytest
from botocore.exceptions import ClientError

from fleetrun.local.pumps import StreamPump


def _put(ddb, table: str, sk: str, **extra) -> None:
    ddb.put_item(TableName=table, Item={"pk": {"S": "P"}, "sk": {"S": sk}, **extra})


def test_a_cancelled_transaction_leaves_the_stream_flowing_and_changes_nothing(aws):
    # GIVEN a stream reader that has read everything so far
    ddb = boto3.client("dynamodb")
    delivered: list[str] = []
    pump = StreamPump(boto3.client("dynamodbstreams"), aws.stream_arn,
                      lambda event, _: delivered.extend(r["dynamodb"]["Keys"]["sk"]["S"] for r in event["Records"]))
    _put(ddb, aws.table_name, "a")
    pump.drain()
    # WHEN a transaction is cancelled by its second condition
    with pytest.raises(ClientError, match="TransactionCanceled"):
        ddb.transact_write_items(TransactItems=[
            {"Put": {"TableName": aws.table_name, "Item": {"pk": {"S": "P"}, "sk": {"S": "b"}}}},
            {"ConditionCheck": {"TableName": aws.table_name, "Key": {"pk": {"S": "P"}, "sk": {"S": "a"}},
                                "ConditionExpression": "attribute_not_exists(pk)"}},
        ])
    _put(ddb, aws.table_name, "c")
    pump.drain()
    # THEN the cancelled put left no item and no record, and later writes still stream
    assert "Item" not in ddb.get_item(TableName=aws.table_name, Key={"pk": {"S": "P"}, "sk": {"S": "b"}})
    assert delivered == ["a", "c"]


def test_concurrent_conditional_writes_to_one_item_let_exactly_one_through(aws):
    # GIVEN twenty threads racing to create the same item
    ddb = boto3.client("dynamodb")
    wins: list[int] = []

    def create(i: int) -> None:
        try:
            ddb.put_item(TableName=aws.table_name, Item={"pk": {"S": "race"}, "sk": {"S": "x"}, "n": {"N": str(i)}},
                         ConditionExpression="attribute_not_exists(pk)")
            wins.append(i)
        except ClientError:
            pass

    threads = [threading.Thread(target=create, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # THEN exactly one succeeded
    assert len(wins) == 1
