"""One DynamoDB stream record of the table, as every stream consumer reads it.

The images stay as DynamoDB sent them (`{"status": {"S": "running"}}`), so a consumer that
wants a model builds it with `Model.from_raw_data(record.new)`; `new_value`/`old_value`
decode one attribute with boto3's TypeDeserializer (strings, numbers as `Decimal`, booleans,
null, lists, maps, sets, binary). Lambda's event is JSON: a binary value (`B`, `BS`) comes
base64-encoded, which boto3's deserializer, made for botocore's already decoded bytes, refuses.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from boto3.dynamodb.types import Binary, TypeDeserializer

from chalicelib.store.counters import padded_seq

#: an item image of a stream record, in DynamoDB's typed JSON
Image = Mapping[str, Any]


class _LambdaImageDeserializer(TypeDeserializer):  # type: ignore[misc]  # (boto3 ships no types)
    """boto3's deserializer, reading binary values as Lambda sends them (base64 text), and as
    botocore returns them (bytes)."""

    def _deserialize_b(self, value: str | bytes) -> Binary:
        return Binary(base64.b64decode(value, validate=True) if isinstance(value, str) else value)


_DESERIALIZER = _LambdaImageDeserializer()


def attribute(image: Image | None, name: str) -> Any:
    """The decoded value of one attribute of an image; None when the image or the attribute is absent."""
    if not image or name not in image:
        return None
    return _DESERIALIZER.deserialize(image[name])


class Record:
    """A stream record of the table: its event, sequence, keys and old/new images."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        body = raw["dynamodb"]
        self.event: str = raw["eventName"]
        self.raw_seq = str(body["SequenceNumber"])
        #: the sequence number padded to compare records of one item
        self.seq = padded_seq(self.raw_seq)
        self.pk: str = body["Keys"]["pk"]["S"]
        self.sk: str = body["Keys"]["sk"]["S"]
        self.old: Image | None = body.get("OldImage")
        self.new: Image | None = body.get("NewImage")
        #: a deletion by the table's TTL (API.md "Retention"), not by the service
        self.expired: bool = is_expiry(raw)

    def old_value(self, name: str) -> Any:
        return attribute(self.old, name)

    def new_value(self, name: str) -> Any:
        return attribute(self.new, name)


def is_expiry(raw: Mapping[str, Any]) -> bool:
    """Whether a stream record is DynamoDB's TTL deleting an item: a REMOVE whose `userIdentity`
    is the DynamoDB service (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/time-to-live-ttl-streams.html)."""
    identity = raw.get("userIdentity") or {}
    return (raw.get("eventName") == "REMOVE" and identity.get("type") == "Service"
            and identity.get("principalId") == "dynamodb.amazonaws.com")
