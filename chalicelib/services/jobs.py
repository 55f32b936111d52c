"""Jobs on the dispatch queue. The stream enqueues them (outbox); the sweeper re-enqueues
what got stuck. Every job is idempotent: a duplicate or late one changes nothing."""

from __future__ import annotations

import json
from typing import Any, Final

from chalicelib import aws, config, queues

#: one chunk of a dispatch (services/dispatch.py): `attempt`, and after the first chunk of an
#: attempt (or for a dispatch request's nodes) `chunk` and `dispatch_id` — the continuation
DISPATCH: Final = "dispatch"
#: a task's cancel and halt (services/cancellation.py): `attempt`, and after the first group of
#: its run partitions `partition` — the continuation
CANCEL: Final = "cancel"
HALT: Final = "halt"
#: the runs of a deregistered node in one task end (services/deregistration.py)
NODE_GONE: Final = "node_gone"
#: one step of the statistics reconcile (services/reconcile.py): `pass_id`, `step`; no task
RECONCILE: Final = "reconcile"


def enqueue(kind: str, task_id: str, **fields: Any) -> None:
    body = json.dumps({"job": kind, "task_id": task_id, **fields}, separators=(",", ":"))
    aws.client("sqs").send_message(QueueUrl=config.dispatch_queue_url(), MessageBody=body)


def enqueue_batch(jobs: list[dict[str, Any]]) -> None:
    """Send any number of jobs (ten per SendMessageBatch). Raises EnqueueFailed."""
    queues.send_batch(config.dispatch_queue_url(), jobs, "job")


def enqueue_reconcile(pass_id: str, step: int) -> None:
    body = json.dumps({"job": RECONCILE, "pass_id": pass_id, "step": step}, separators=(",", ":"))
    aws.client("sqs").send_message(QueueUrl=config.dispatch_queue_url(), MessageBody=body)
