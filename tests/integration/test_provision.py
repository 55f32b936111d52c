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


def test_a_table_kept_from_before_the_due_index_gets_it_with_its_items_on_the_next_start(aws):
    from chalicelib import resources
    from fleetrun.local.provision import add_missing_indexes

    # GIVEN a local state's table from before the due index, holding a leased run
    ddb = boto3.client("dynamodb")
    old = resources.table_definition("fleetrun-old")
    old["GlobalSecondaryIndexes"] = [i for i in old["GlobalSecondaryIndexes"] if i["IndexName"] != "due-index"]
    old["AttributeDefinitions"] = [a for a in old["AttributeDefinitions"] if not a["AttributeName"].startswith("due_")]
    ddb.create_table(**old)
    ddb.put_item(TableName="fleetrun-old", Item={
        "pk": {"S": "TASK#t1"}, "sk": {"S": "RUN#n1"}, "task_id": {"S": "t1"}, "node": {"S": "n1"},
        "due_pk": {"S": "DUE#lease#3"}, "due_sk": {"S": "0000000100#t1/n1"}})
    # WHEN the runtime starts on it THEN the missing index is created, once
    assert add_missing_indexes(table_name="fleetrun-old") == ["due-index"]
    assert add_missing_indexes(table_name="fleetrun-old") == []
    # AND it finds the items already there
    found = ddb.query(TableName="fleetrun-old", IndexName="due-index", KeyConditionExpression="due_pk = :p",
                      ExpressionAttributeValues={":p": {"S": "DUE#lease#3"}})["Items"]
    assert [item["node"]["S"] for item in found] == ["n1"]
