"""What fleetrun needs from AWS, declared once.

The CDK app, the local runtime and the tests build their resources from these definitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final


@dataclass(frozen=True)
class QueueSpec:
    name: str
    #: seconds a received message stays invisible (AWS advises 6x the consumer Lambda's 120 s timeout)
    visibility_timeout: int
    #: receives before a message goes to the dead-letter queue
    max_receive_count: int
    batch_size: int
    #: the consumer sets each failed message's retry delay itself (ChangeMessageVisibility)
    retry_delay_by_handler: bool = False

    @property
    def dlq_name(self) -> str:
        return f"{self.name}-dlq"


#: fan-out, retry resets, cancel and halt jobs (the stream is their outbox)
DISPATCH_QUEUE = QueueSpec("fleetrun-dispatch", visibility_timeout=720, max_receive_count=5, batch_size=5)
#: runs the service executes itself (images.sync, HTTP calls, SSM)
WORK_QUEUE = QueueSpec("fleetrun-work", visibility_timeout=900, max_receive_count=3, batch_size=1)
#: notification deliveries (webhook, Slack, DingTalk, email), retried with backoff
NOTIFY_QUEUE = QueueSpec("fleetrun-notify", visibility_timeout=720, max_receive_count=8, batch_size=10,
                         retry_delay_by_handler=True)
#: task submissions from automation and schedules
INTAKE_QUEUE = QueueSpec("fleetrun-intake", visibility_timeout=720, max_receive_count=3, batch_size=10)
QUEUES: tuple[QueueSpec, ...] = (DISPATCH_QUEUE, WORK_QUEUE, NOTIFY_QUEUE, INTAKE_QUEUE)

STREAM_VIEW_TYPE = "NEW_AND_OLD_IMAGES"
#: records per stream invocation: the aggregator writes once per task per batch, so bigger
#: batches mean fewer writes per node run (Lambda allows up to 10,000)
STREAM_BATCH_SIZE = 1000
#: the counting reader waits up to this long to fill a batch: each (stream shard, parallel batch)
#: invokes it at most once a second unless 1,000 records are waiting, which bounds the writes of a
#: task item (one per batch carrying its records: services/aggregation.py) at stream shards x
#: ParallelizationFactor per second, whatever the task's node count. Pushes read without a window.
AGGREGATOR_BATCHING_WINDOW_SECONDS = 1
KMS_ALIAS = "alias/fleetrun"
OUTPUTS_BUCKET = "fleetrun-outputs"
#: the EventBridge Scheduler group of user schedules (the CDK app names it `fleetrun-<stage>`)
SCHEDULE_GROUP = "fleetrun"


def table_definition(table_name: str) -> dict[str, Any]:
    """`CreateTable` arguments of the single table (on-demand, with stream)."""
    from chalicelib.store.models import ALL_INDEXES  # PynamoDB: only the provisioning code needs it

    attributes = {"pk", "sk"}
    indexes = []
    for index in ALL_INDEXES:
        schema = index._get_schema()
        attributes.update(a["AttributeName"] for a in schema["key_schema"])
        indexes.append(
            {
                "IndexName": schema["index_name"],
                "KeySchema": schema["key_schema"],
                "Projection": schema["projection"],
            }
        )
    return {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in sorted(attributes)],
        "GlobalSecondaryIndexes": indexes,
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": STREAM_VIEW_TYPE},
    }


#: `store.models.TTL_ATTRIBUTE`, spelled out: every function imports this module (app.py), and the
#: models import PynamoDB (tests/unit/test_lazy_imports.py checks that both agree)
TTL_ATTRIBUTE_NAME: Final = "expires_at"


def output_lifecycle(retention_days: int | None = None) -> list[tuple[str, str, int]]:
    """(rule id, key prefix, days) of the outputs bucket's expiry (API.md "Retention"): live chunks
    with their items (the retention + 1 day after written), final outputs with their runs (the
    retention + the active allowance, domain/retention.py)."""
    from chalicelib.domain import retention

    days = retention_days if retention_days is not None else retention.days()
    return [("live-output-retention", "outputs/live/", days + 1),
            ("output-retention", "outputs/", days + retention.ACTIVE_ALLOWANCE_DAYS)]
