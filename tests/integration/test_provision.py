from __future__ import annotations

import boto3


def test_provision_creates_table_with_stream_and_queues_with_dead_letter(aws):
    # GIVEN the resources provisioned from chalicelib.resources
    ddb = boto3.client("dynamodb")
    sqs = boto3.client("sqs")
    # THEN the table streams new and old images and each queue redrives to its DLQ
    table = ddb.describe_table(TableName=aws.table_name)["Table"]
    assert table["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert {i["IndexName"] for i in table["GlobalSecondaryIndexes"]} == {
        "list-index", "owner-index", "claim-index", "active-index", "due-index",
    }
    for url in aws.queue_urls.values():
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]
        assert "deadLetterTargetArn" in attributes["RedrivePolicy"]
