"""Create fleetrun's AWS resources in a moto server (or an in-process mock) from `chalicelib.resources`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chalicelib import aws, clock, resources
from chalicelib.domain import due
from chalicelib.store import counters

#: the From address of e-mail notifications in local mode and tests
LOCAL_EMAIL_SENDER = "fleetrun@notifications.localhost"


@dataclass
class Provisioned:
    table_name: str
    stream_arn: str
    queue_urls: dict[str, str] = field(default_factory=dict)
    dlq_urls: dict[str, str] = field(default_factory=dict)
    kms_key_id: str = ""
    bucket: str = ""
    queue_arns: dict[str, str] = field(default_factory=dict)
    dlq_arns: dict[str, str] = field(default_factory=dict)
    schedule_group: str = ""
    email_sender: str = ""

    def environment(self) -> dict[str, str]:
        """The FLEETRUN_* settings the app reads to find these resources."""
        return {
            "FLEETRUN_TABLE": self.table_name,
            "FLEETRUN_DISPATCH_QUEUE_URL": self.queue_urls[resources.DISPATCH_QUEUE.name],
            "FLEETRUN_WORK_QUEUE_URL": self.queue_urls[resources.WORK_QUEUE.name],
            "FLEETRUN_KMS_KEY_ID": self.kms_key_id,
            "FLEETRUN_OUTPUTS_BUCKET": self.bucket,
            "FLEETRUN_INTAKE_QUEUE_URL": self.queue_urls[resources.INTAKE_QUEUE.name],
            "FLEETRUN_INTAKE_QUEUE_ARN": self.queue_arns[resources.INTAKE_QUEUE.name],
            "FLEETRUN_INTAKE_DLQ_URL": self.dlq_urls[resources.INTAKE_QUEUE.name],
            "FLEETRUN_INTAKE_DLQ_ARN": self.dlq_arns[resources.INTAKE_QUEUE.name],
            "FLEETRUN_SCHEDULE_GROUP": self.schedule_group,
            # moto's Scheduler accepts any role; in AWS the CDK app creates this one
            "FLEETRUN_SCHEDULER_ROLE_ARN": "arn:aws:iam::123456789012:role/fleetrun-scheduler",
            "FLEETRUN_NOTIFY_QUEUE_URL": self.queue_urls[resources.NOTIFY_QUEUE.name],
            "FLEETRUN_NOTIFY_EMAIL_SENDER": self.email_sender,
        }


def add_missing_indexes(region: str = "us-east-1", table_name: str = "fleetrun") -> list[str]:
    """Create the indexes the table lacks (state kept from a version before them: `due-index`),
    one per UpdateTable call as DynamoDB allows. Returns their names. An index that exists with
    another projection is left: every one before was ALL, which carries what a narrower needs."""
    ddb = aws.session().create_client("dynamodb", region_name=region)
    existing = {index["IndexName"] for index in
                ddb.describe_table(TableName=table_name)["Table"].get("GlobalSecondaryIndexes", [])}
    definition = resources.table_definition(table_name)
    added = []
    for index in definition["GlobalSecondaryIndexes"]:
        if index["IndexName"] in existing:
            continue
        ddb.update_table(TableName=table_name, AttributeDefinitions=definition["AttributeDefinitions"],
                         GlobalSecondaryIndexUpdates=[{"Create": index}])
        added.append(index["IndexName"])
    return added


def provision(region: str = "us-east-1", table_name: str = "fleetrun") -> Provisioned:
    """Create every resource where the environment points (a moto server's endpoint, or the
    in-process mock the tests install)."""
    session = aws.session()
    ddb = session.create_client("dynamodb", region_name=region)
    definition = resources.table_definition(table_name)
    stream = definition.pop("StreamSpecification")
    ddb.create_table(**definition)
    ddb.update_time_to_live(
        TableName=table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": resources.TTL_ATTRIBUTE_NAME},
    )
    # a new table holds no item from before the due index: nothing to backfill (services/due_backfill.py);
    # written before the stream is on, so no reader ever sees it
    ddb.put_item(TableName=table_name, Item=due.backfill_done_item())
    # nor tasks from before the month scopes: they count every task from this month on (services/usage.py)
    ddb.put_item(TableName=table_name, Item=counters.usage_since_item(counters.month_of(clock.now_iso())))
    ddb.update_table(TableName=table_name, StreamSpecification=stream)
    stream_arn = ddb.describe_table(TableName=table_name)["Table"]["LatestStreamArn"]

    sqs = session.create_client("sqs", region_name=region)
    out = Provisioned(table_name=table_name, stream_arn=stream_arn)
    for spec in resources.QUEUES:
        dlq_url = sqs.create_queue(QueueName=spec.dlq_name)["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        attributes: dict[str, Any] = {
            "VisibilityTimeout": str(spec.visibility_timeout),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": spec.max_receive_count}),
        }
        out.queue_urls[spec.name] = sqs.create_queue(QueueName=spec.name, Attributes=attributes)["QueueUrl"]
        out.dlq_urls[spec.name] = dlq_url
        out.dlq_arns[spec.name] = dlq_arn
        out.queue_arns[spec.name] = sqs.get_queue_attributes(
            QueueUrl=out.queue_urls[spec.name], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    kms = session.create_client("kms", region_name=region)
    key_id = kms.create_key(Description="fleetrun secret parameters")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=resources.KMS_ALIAS, TargetKeyId=key_id)
    out.kms_key_id = resources.KMS_ALIAS

    s3 = session.create_client("s3", region_name=region)
    s3.create_bucket(Bucket=resources.OUTPUTS_BUCKET)
    s3.put_bucket_lifecycle_configuration(Bucket=resources.OUTPUTS_BUCKET, LifecycleConfiguration={"Rules": [
        {"ID": rule_id, "Filter": {"Prefix": prefix}, "Status": "Enabled", "Expiration": {"Days": days}}
        for rule_id, prefix, days in resources.output_lifecycle()]})
    out.bucket = resources.OUTPUTS_BUCKET

    session.create_client("scheduler", region_name=region).create_schedule_group(Name=resources.SCHEDULE_GROUP)
    out.schedule_group = resources.SCHEDULE_GROUP
    # e-mail notifications: SES (moto too) sends only from a verified identity
    session.create_client("ses", region_name=region).verify_email_identity(EmailAddress=LOCAL_EMAIL_SENDER)
    out.email_sender = LOCAL_EMAIL_SENDER
    return out
