"""What DynamoDB's TTL cannot tie to a task by itself: its target chunks go with its task item.

A target chunk (`TGT#<n>`, store/dynamo.py) is read for as long as its task exists: by the
task's representation, a retry's dispatch, a selector backfill. Rather than keep each chunk's
own TTL in step with every way a task becomes active again (retry, reopen), the chunks are
deleted when the TTL removes the task item: the stream brings that REMOVE (API.md
"Retention"), whose old image says how many chunks the task had. At most `target_chunks`
deletes a task, and a replayed record deletes nothing more.
"""

from __future__ import annotations

from chalicelib.observability import logger
from chalicelib.store import dynamo
from chalicelib.store.stream_records import Record


def consume(records: list[Record]) -> None:
    """The `CONSUMERS` entry (services/stream.py)."""
    for record in records:
        task_id = record.pk.removeprefix("TASK#")
        if not record.expired or record.sk != "META" or task_id == record.pk or "#" in task_id:
            continue
        chunks = int(record.old_value("target_chunks") or 0)
        dynamo.delete_target_chunks(task_id, chunks)
        logger.info("expired task's target chunks deleted", extra={"task_id": task_id, "chunks": chunks})
