"""Deliver SQS batches and DynamoDB stream records to Lambda handlers, as event source mappings do.

moto never invokes handlers (see PITFALLS.md), so the integration tests and the local runtime
(`fleetrun local up`) pump the events themselves. A handler is any `handler(event, context)`
callable, e.g. a Chalice `@app.on_sqs_message` / `@app.on_dynamodb_record` function.

Both pumps honour `ReportBatchItemFailures` responses (`{"batchItemFailures": [{"itemIdentifier":
...}]}`) with Lambda's rules: no response, no list or an empty list is a success; an empty, missing or
unknown identifier fails the whole batch; so does an exception, which is logged (logger
"fleetrun.local.pumps"), never raised.

- `SqsPump`: deletes the messages that succeeded; failed ones become visible again after
  `redelivery_delay` seconds and the queue's redrive policy dead-letters them after maxReceiveCount.
- `StreamPump`: per shard, in order, parents before children; a failed batch is retried from its
  first failed record, up to `max_retries` times, then handed to `on_give_up` and skipped.
"""

from fleetrun.local.pump_base import Handler, LambdaContext, Pump, Record, failed_item_ids
from fleetrun.local.sqs_pump import SqsPump, lambda_sqs_record
from fleetrun.local.stream_pump import StreamPump, lambda_stream_record

__all__ = [
    "Handler",
    "LambdaContext",
    "Pump",
    "Record",
    "SqsPump",
    "StreamPump",
    "failed_item_ids",
    "lambda_sqs_record",
    "lambda_stream_record",
]
