"""Least-privilege IAM statements of the app's functions.

No statement on the table, its indexes or its stream has a wildcard action; queue statements
name their queue's ARN. `Resource: "*"` appears only for actions that take no resource
(X-Ray's PutTraceSegments/PutTelemetryRecords, DynamoDB's ListStreams).
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs

from infra.data import DataStores

#: what PynamoDB and the counters do; transactions are authorised per item action
TABLE_ACTIONS = [
    "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
    "dynamodb:Query", "dynamodb:Scan", "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
]
STREAM_ACTIONS = ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"]
CONSUME_ACTIONS = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                   "sqs:GetQueueAttributes"]


def data_plane(stack: Stack, data: DataStores) -> list[iam.PolicyStatement]:
    """What every function of the app may do: the table and its indexes, the secrets key, the
    outputs bucket, sending to the app's queues and reading the cursor secret."""
    table = data.table
    return [
        iam.PolicyStatement(sid="TableItems", actions=TABLE_ACTIONS,
                            resources=[table.table_arn, f"{table.table_arn}/index/*"]),
        iam.PolicyStatement(sid="SecretsKey", actions=["kms:GenerateDataKey", "kms:Decrypt"],
                            resources=[data.key.key_arn]),
        iam.PolicyStatement(sid="Outputs", actions=["s3:PutObject", "s3:GetObject"],
                            resources=[data.outputs_bucket.arn_for_objects("*")]),
        # usage reports ask whether a month's file exists (HeadObject): without ListBucket S3
        # answers 403 instead of 404 for a missing key
        iam.PolicyStatement(sid="OutputsList", actions=["s3:ListBucket"],
                            resources=[data.outputs_bucket.bucket_arn]),
        iam.PolicyStatement(sid="SendToQueues", actions=["sqs:SendMessage"],
                            resources=[q.queue.queue_arn for q in data.queues.values()]),
        # every list route signs and verifies cursors (FLEETRUN_CURSOR_SECRET_ARN)
        iam.PolicyStatement(sid="CursorSecret", actions=["secretsmanager:GetSecretValue"],
                            resources=[data.cursor_secret.secret_arn]),
    ]


def function_basics(stack: Stack, log_group_arn: str) -> list[iam.PolicyStatement]:
    return [
        iam.PolicyStatement(sid="Logs", actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                            resources=[log_group_arn]),
        # X-Ray's PutTraceSegments/PutTelemetryRecords take no resource
        iam.PolicyStatement(sid="Tracing", actions=["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
                            resources=["*"]),
    ]


def consume_queue(queue: sqs.IQueue) -> list[iam.PolicyStatement]:
    return [iam.PolicyStatement(actions=CONSUME_ACTIONS, resources=[queue.queue_arn])]


def send_to(queue: sqs.IQueue) -> list[iam.PolicyStatement]:
    return [iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[queue.queue_arn])]


def read_stream(stack: Stack, data: DataStores) -> list[iam.PolicyStatement]:
    stream_arn = data.table.table_stream_arn
    if stream_arn is None:
        raise ValueError("the table has no stream")
    return [
        iam.PolicyStatement(actions=STREAM_ACTIONS, resources=[stream_arn]),
        # ListStreams has no resource type (as in CDK's Table.grant_stream_read)
        iam.PolicyStatement(actions=["dynamodb:ListStreams"], resources=["*"]),
    ]


def read_secrets(arns: list[str]) -> list[iam.PolicyStatement]:
    """Reading the named Secrets Manager secrets (the Harbor robot's and webhook's), nothing else."""
    if not arns:
        return []
    return [iam.PolicyStatement(sid="ReadHarborSecrets", actions=["secretsmanager:GetSecretValue"], resources=arns)]


def send_email(stack: Stack, sender: str) -> iam.PolicyStatement:
    """SES SendEmail from `sender` only (the notify worker's e-mail channel)."""
    return iam.PolicyStatement(
        sid="NotifyEmail", actions=["ses:SendEmail"],
        resources=[f"arn:{stack.partition}:ses:{stack.region}:{stack.account}:identity/*"],
        conditions={"StringEquals": {"ses:FromAddress": sender}},
    )
