"""Where fleetrun keeps state: the single table (from `chalicelib.resources.table_definition`),
the queues with their dead-letter queues (from `chalicelib.resources.QUEUES`), the KMS key
for secret parameters and the bucket for large outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from chalicelib import resources
from chalicelib.resources import QueueSpec
from infra.settings import StageSettings

#: failed stream batches (after retries and bisection) land here: the stream's on-failure destination
STREAM_DLQ_NAME = "fleetrun-stream-dlq"
_DLQ_RETENTION = Duration.days(14)


def queue_specs() -> tuple[QueueSpec, ...]:
    return tuple(resources.QUEUES)


def queue_env_name(spec: QueueSpec) -> str:
    """`fleetrun-dispatch` -> `FLEETRUN_DISPATCH_QUEUE_URL` (what chalicelib/config.py reads)."""
    return spec.name.upper().replace("-", "_") + "_QUEUE_URL"


@dataclass(frozen=True)
class AppQueue:
    spec: QueueSpec
    queue: sqs.Queue
    dlq: sqs.Queue


class DataStores(Construct):
    """The table, the queues, the key and the outputs bucket of one stage."""

    def __init__(self, scope: Construct, construct_id: str, settings: StageSettings) -> None:
        super().__init__(scope, construct_id)
        removal = RemovalPolicy.RETAIN if settings.is_prod else RemovalPolicy.DESTROY
        self.table = _table(self, settings, removal)
        self.key = kms.Key(
            self, "SecretsKey",
            alias=f"{resources.KMS_ALIAS}-{settings.stage}",
            description="fleetrun: envelope encryption of secret task parameters",
            enable_key_rotation=True,
            removal_policy=removal,
            pending_window=Duration.days(30 if settings.is_prod else 7),
        )
        self.outputs_bucket = s3.Bucket(
            self, "OutputsBucket",
            # no fixed name (bucket names are global): the app reads FLEETRUN_OUTPUTS_BUCKET
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=settings.is_prod,
            removal_policy=removal,
        )
        self.queues: dict[str, AppQueue] = {
            spec.name: _queue_with_dlq(self, settings, spec, removal) for spec in queue_specs()
        }
        self.stream_dlq = sqs.Queue(
            self, "StreamDeadLetterQueue",
            queue_name=f"{STREAM_DLQ_NAME}-{settings.stage}",
            retention_period=_DLQ_RETENTION,
            removal_policy=removal,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )

    @property
    def dead_letter_queues(self) -> list[sqs.Queue]:
        return [q.dlq for q in self.queues.values()] + [self.stream_dlq]


def _construct_id(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))


def _queue_with_dlq(scope: Construct, settings: StageSettings, spec: QueueSpec, removal: RemovalPolicy) -> AppQueue:
    base = _construct_id(spec.name)
    dlq = sqs.Queue(
        scope, f"{base}DeadLetterQueue",
        queue_name=f"{spec.dlq_name}-{settings.stage}",
        retention_period=_DLQ_RETENTION,
        # dead letters are evidence: prod keeps them when the stack goes
        removal_policy=removal,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
    )
    queue = sqs.Queue(
        scope, f"{base}Queue",
        queue_name=f"{spec.name}-{settings.stage}",
        visibility_timeout=Duration.seconds(spec.visibility_timeout),
        retention_period=Duration.days(4),
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=spec.max_receive_count),
    )
    return AppQueue(spec=spec, queue=queue, dlq=dlq)


def _table(scope: Construct, settings: StageSettings, removal: RemovalPolicy) -> dynamodb.Table:
    """The L2 table for `resources.table_definition`, with TTL, PITR and (prod) deletion protection."""
    definition = resources.table_definition(f"{settings.prefix}")
    types = {a["AttributeName"]: a["AttributeType"] for a in definition["AttributeDefinitions"]}

    def attribute(key_schema: list[dict[str, str]], key_type: str) -> dynamodb.Attribute | None:
        for key in key_schema:
            if key["KeyType"] == key_type:
                name = key["AttributeName"]
                return dynamodb.Attribute(name=name, type=_ATTRIBUTE_TYPES[types[name]])
        return None

    stream = definition["StreamSpecification"]
    if not stream.get("StreamEnabled"):
        raise ValueError("fleetrun's table needs its stream (statistics, notifications, push)")
    table = dynamodb.Table(
        scope, "Table",
        table_name=definition["TableName"],
        partition_key=attribute(definition["KeySchema"], "HASH"),
        sort_key=attribute(definition["KeySchema"], "RANGE"),
        billing_mode=_BILLING[definition["BillingMode"]],
        stream=dynamodb.StreamViewType[stream["StreamViewType"]],
        time_to_live_attribute=resources.TTL_ATTRIBUTE_NAME,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True,
        ),
        deletion_protection=settings.is_prod,
        removal_policy=removal,
    )
    for index in definition.get("GlobalSecondaryIndexes", []):
        table.add_global_secondary_index(
            index_name=index["IndexName"],
            partition_key=attribute(index["KeySchema"], "HASH"),
            sort_key=attribute(index["KeySchema"], "RANGE"),
            **_projection(index["Projection"]),
        )
    return table


def _projection(projection: dict[str, Any]) -> dict[str, Any]:
    kind = projection.get("ProjectionType", "ALL")
    result: dict[str, Any] = {"projection_type": dynamodb.ProjectionType[kind]}
    if kind == "INCLUDE":
        result["non_key_attributes"] = list(projection["NonKeyAttributes"])
    return result


_ATTRIBUTE_TYPES = {"S": dynamodb.AttributeType.STRING, "N": dynamodb.AttributeType.NUMBER,
                    "B": dynamodb.AttributeType.BINARY}
_BILLING = {"PAY_PER_REQUEST": dynamodb.BillingMode.PAY_PER_REQUEST,
            "PROVISIONED": dynamodb.BillingMode.PROVISIONED}
