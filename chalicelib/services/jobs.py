"""Jobs on the dispatch queue. The stream enqueues them (outbox); the sweeper re-enqueues
what got stuck. Every job is idempotent: a duplicate or late one changes nothing."""

from __future__ import annotations

import json
from typing import Any, Final

from chalicelib import aws, config

DISPATCH: Final = "dispatch"
CANCEL: Final = "cancel"
HALT: Final = "halt"


def enqueue(kind: str, task_id: str, **fields: Any) -> None:
    body = json.dumps({"job": kind, "task_id": task_id, **fields}, separators=(",", ":"))
    aws.client("sqs").send_message(QueueUrl=config.dispatch_queue_url(), MessageBody=body)


def enqueue_batch(jobs: list[dict[str, Any]]) -> None:
    """Send up to any number of jobs, ten per SendMessageBatch request."""
    client = aws.client("sqs")
    for start in range(0, len(jobs), 10):
        entries = [
            {"Id": str(i), "MessageBody": json.dumps(job, separators=(",", ":"))}
            for i, job in enumerate(jobs[start:start + 10])
        ]
        response = client.send_message_batch(QueueUrl=config.dispatch_queue_url(), Entries=entries)
        if response.get("Failed"):
            raise RuntimeError(f"could not enqueue {len(response['Failed'])} job(s): {response['Failed']}")
