"""Deliver SQS messages to a Lambda handler as Lambda's SQS event source mapping does."""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from typing import Any

from fleetrun.local.pump_base import Handler, Pump, Record, failed_item_ids

logger = logging.getLogger("fleetrun.local.pumps")


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def lambda_sqs_record(message: Mapping[str, Any], queue_arn: str, region: str) -> Record:
    """One `ReceiveMessage` message as a record of Lambda's SQS event."""
    attributes: dict[str, Any] = {}
    for name, value in message.get("MessageAttributes", {}).items():
        attribute: dict[str, Any] = {}
        if "StringValue" in value:
            attribute["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            attribute["binaryValue"] = _b64(value["BinaryValue"])
        attribute["stringListValues"] = list(value.get("StringListValues", []))
        attribute["binaryListValues"] = [_b64(v) for v in value.get("BinaryListValues", [])]
        attribute["dataType"] = value["DataType"]
        attributes[name] = attribute
    record: Record = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": attributes,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    record.update(md5OfBody=message["MD5OfBody"], eventSource="aws:sqs", eventSourceARN=queue_arn, awsRegion=region)
    return record


class SqsPump(Pump):
    """Deliver a queue's messages in batches; SQS's own redrive policy dead-letters poison messages.

    Failed messages become visible again after `redelivery_delay` seconds (None: after the
    queue's visibility timeout, as on Lambda).
    """

    def __init__(
        self,
        client: Any,
        queue_url: str,
        handler: Handler,
        *,
        batch_size: int = 10,
        visibility_timeout: int | None = None,
        redelivery_delay: int | None = 0,
        function_name: str = "fleetrun-sqs-consumer",
        timeout_seconds: float = 60.0,
    ) -> None:
        if not 1 <= batch_size <= 10:
            raise ValueError(f"batch_size must be 1..10 (one ReceiveMessage), got {batch_size}")
        self.client, self.queue_url, self.handler = client, queue_url, handler
        self.batch_size, self.visibility_timeout = batch_size, visibility_timeout
        self.redelivery_delay = redelivery_delay
        self.function_name, self.timeout_seconds = function_name, timeout_seconds
        self.region: str = client.meta.region_name
        self._queue_arn: str | None = None

    @property
    def queue_arn(self) -> str:
        if self._queue_arn is None:
            response = self.client.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
            self._queue_arn = str(response["Attributes"]["QueueArn"])
        return self._queue_arn

    def poll_once(self, wait_seconds: int = 0) -> int:
        """Receive one batch and deliver it; the number of messages delivered."""
        request: dict[str, Any] = {
            "QueueUrl": self.queue_url,
            "MaxNumberOfMessages": self.batch_size,
            "AttributeNames": ["All"],
            "MessageAttributeNames": ["All"],
            "WaitTimeSeconds": wait_seconds,
        }
        if self.visibility_timeout is not None:
            request["VisibilityTimeout"] = self.visibility_timeout
        messages: list[dict[str, Any]] = self.client.receive_message(**request).get("Messages", [])
        if not messages:
            return 0
        ok, response = self._invoke([lambda_sqs_record(m, self.queue_arn, self.region) for m in messages])
        failed = failed_item_ids(response, [m["MessageId"] for m in messages]) if ok else None
        succeeded = [m for m in messages if failed is not None and m["MessageId"] not in failed]
        self._batch_call("delete_message_batch", succeeded, {})
        if self.redelivery_delay is not None:
            retried = [m for m in messages if failed is None or m["MessageId"] in failed]
            self._batch_call("change_message_visibility_batch", retried, {"VisibilityTimeout": self.redelivery_delay})
        return len(messages)

    def _batch_call(self, operation: str, messages: list[dict[str, Any]], extra: dict[str, Any]) -> None:
        if not messages:
            return
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], **extra} for i, m in enumerate(messages)]
        response = getattr(self.client, operation)(QueueUrl=self.queue_url, Entries=entries)
        for failure in response.get("Failed", []):
            logger.warning("%s %s failed: %s", self.function_name, operation, failure)
