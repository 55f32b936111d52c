"""Sending many messages to one SQS queue: ten per SendMessageBatch, a refused entry is an error."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from chalicelib import aws
from chalicelib.errors import EnqueueFailed

#: SendMessageBatch's limit of entries per request
BATCH_SIZE: Final = 10


def send_batch(queue_url: str, messages: Sequence[dict[str, Any]], what: str = "message") -> None:
    """Send each message as compact JSON, `BATCH_SIZE` per request.

    Raises EnqueueFailed when SQS refuses any entry; the entries of earlier requests stay
    sent, so the caller's retry may repeat them (every consumer is idempotent).
    """
    sqs = aws.client("sqs")
    for start in range(0, len(messages), BATCH_SIZE):
        chunk = messages[start:start + BATCH_SIZE]
        entries = [{"Id": str(i), "MessageBody": json.dumps(m, separators=(",", ":"))} for i, m in enumerate(chunk)]
        failed = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed", [])
        if failed:
            raise EnqueueFailed(f"SQS refused {len(failed)} {what}(s): {failed[0].get('Code')}")
