"""Jobs on the dispatch queue. The stream enqueues them (outbox); the sweeper re-enqueues
what got stuck. Every job is idempotent: a duplicate or late one changes nothing."""

from __future__ import annotations

import json
from typing import Any, Final

from chalicelib import aws, config, queues

DISPATCH: Final = "dispatch"
CANCEL: Final = "cancel"
HALT: Final = "halt"
#: the runs of a deregistered node in one task end (services/deregistration.py)
NODE_GONE: Final = "node_gone"


def enqueue(kind: str, task_id: str, **fields: Any) -> None:
    body = json.dumps({"job": kind, "task_id": task_id, **fields}, separators=(",", ":"))
    aws.client("sqs").send_message(QueueUrl=config.dispatch_queue_url(), MessageBody=body)


def enqueue_batch(jobs: list[dict[str, Any]]) -> None:
    """Send any number of jobs (ten per SendMessageBatch). Raises EnqueueFailed."""
    queues.send_batch(config.dispatch_queue_url(), jobs, "job")
