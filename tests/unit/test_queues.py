"""`queues.send_batch`: ten messages per SendMessageBatch, any refused entry raises."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.stub import Stubber

from chalicelib import aws, queues
from chalicelib.errors import EnqueueFailed

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/q"


def _entries(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"Id": str(i), "MessageBody": json.dumps(m, separators=(",", ":"))} for i, m in enumerate(messages)]


def test_messages_go_out_ten_per_request_as_compact_json() -> None:
    # GIVEN 23 messages
    messages = [{"job": "dispatch", "n": n} for n in range(23)]
    with Stubber(aws.client("sqs")) as sqs:
        for start in (0, 10, 20):
            chunk = messages[start:start + 10]
            sqs.add_response("send_message_batch", {"Successful": [], "Failed": []},
                             {"QueueUrl": QUEUE, "Entries": _entries(chunk)})
        # WHEN they are sent
        queues.send_batch(QUEUE, messages)
        # THEN three requests carried them, in order
        sqs.assert_no_pending_responses()


def test_a_refused_entry_raises_enqueue_failed_and_stops() -> None:
    # GIVEN SQS refusing one entry of the first request
    messages = [{"n": n} for n in range(12)]
    refused = {"Id": "3", "SenderFault": False, "Code": "InternalError"}
    with Stubber(aws.client("sqs")) as sqs:
        sqs.add_response("send_message_batch", {"Successful": [], "Failed": [refused]},
                         {"QueueUrl": QUEUE, "Entries": _entries(messages[:10])})
        # WHEN the batch is sent THEN the caller learns it (and the second request is never made)
        with pytest.raises(EnqueueFailed, match=r"SQS refused 1 job\(s\): InternalError"):
            queues.send_batch(QUEUE, messages, "job")
        sqs.assert_no_pending_responses()


def test_nothing_to_send_makes_no_request() -> None:
    with Stubber(aws.client("sqs")):
        queues.send_batch(QUEUE, [])
