"""Jobs on the dispatch queue. The stream enqueues them (outbox); the sweeper re-enqueues
what got stuck. Every job is idempotent: a duplicate or late one changes nothing."""

from __future__ import annotations

import json
from typing import Any, Final

from chalicelib import aws, config, queues
from chalicelib.domain.records import Task

#: one chunk of a dispatch (services/dispatch.py): `attempt`, and after the first chunk of an
#: attempt (or for a dispatch request's nodes) `chunk` and `dispatch_id` — the continuation
DISPATCH: Final = "dispatch"
#: a task's cancel and halt (services/cancellation.py): `attempt`, and after the first group of
#: its run partitions `partition` — the continuation
CANCEL: Final = "cancel"
HALT: Final = "halt"
#: the runs of a deregistered node in one task end (services/deregistration.py)
NODE_GONE: Final = "node_gone"
#: the walk of a large task's pending runs for claim deadlines (services/claim_timeouts.py) after
#: its first group, which the sweeper's look did: `attempt`, `partition`, `ahead`, `state` (the
#: window as the look read it)
CLAIM_CHECK: Final = "claim_check"
#: the parts of a large task's look that read its runs (services/run_looks.py): recount, window;
#: `recount` or `stall`, once the first group of run partitions is read: the continuation of the
#: recount or of the window check
RUN_LOOK: Final = "run_look"
#: one step of the statistics reconcile (services/reconcile.py): `pass_id`, `step`; no task
RECONCILE: Final = "reconcile"


#: the runs a job that goes through a task's runs (cancel, halt, node_gone, claim_check) reads
#: and writes, about (a task's run partitions hold similar numbers): as many as a dispatch chunk
#: makes, as the dispatch queue hands a Lambda up to 5 jobs
RUNS_PER_JOB: Final = 200


def partition_group(task: Task, partition: int) -> tuple[range, int]:
    """The group of the task's run partitions from `partition` on that holds about RUNS_PER_JOB
    of its runs, and how many partitions the task has."""
    from chalicelib.store import runs  # (the store only when a job reads runs: enqueuing stays light)

    shards = len(runs.run_layout(task.task_id).pks())
    per_job = max(1, RUNS_PER_JOB * shards // max(1, int(task.target_count)))
    return range(partition, min(shards, partition + per_job)), shards


def enqueue(kind: str, task_id: str, **fields: Any) -> None:
    body = json.dumps({"job": kind, "task_id": task_id, **fields}, separators=(",", ":"))
    aws.client("sqs").send_message(QueueUrl=config.dispatch_queue_url(), MessageBody=body)


def enqueue_batch(jobs: list[dict[str, Any]]) -> None:
    """Send any number of jobs (ten per SendMessageBatch). Raises EnqueueFailed."""
    queues.send_batch(config.dispatch_queue_url(), jobs, "job")


def enqueue_reconcile(pass_id: str, step: int) -> None:
    body = json.dumps({"job": RECONCILE, "pass_id": pass_id, "step": step}, separators=(",", ":"))
    aws.client("sqs").send_message(QueueUrl=config.dispatch_queue_url(), MessageBody=body)
