"""Stream records (store/stream_records.py): keys, sequence and every DynamoDB type decoded."""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import Binary

from chalicelib.store.models import TaskItem
from chalicelib.store.stream_records import Record, attribute


def record(new: dict[str, Any] | None, old: dict[str, Any] | None = None, seq: str = "42") -> Record:
    body: dict[str, Any] = {"SequenceNumber": seq, "Keys": {"pk": {"S": "TASK#t1"}, "sk": {"S": "META"}}}
    if new is not None:
        body["NewImage"] = new
    if old is not None:
        body["OldImage"] = old
    return Record({"eventName": "MODIFY", "dynamodb": body})


def test_keys_event_and_sequence_are_read_from_the_record() -> None:
    got = record({}, seq="1234")
    assert (got.event, got.pk, got.sk, got.raw_seq) == ("MODIFY", "TASK#t1", "META", "1234")
    assert got.seq.endswith("1234")
    assert got.seq > record({}, seq="999").seq


def test_every_dynamodb_type_decodes_to_its_python_value() -> None:
    image = {
        "status": {"S": "running"}, "attempt": {"N": "3"}, "halted": {"BOOL": True}, "error_message": {"NULL": True},
        "tags": {"L": [{"S": "cdn"}, {"N": "1.5"}]}, "labels": {"M": {"zone": {"S": "eu"}}},
        "nodes": {"SS": ["a", "b"]}, "blob": {"B": b"\x00\x01"},
    }
    got = record(image)
    assert got.new_value("status") == "running"
    assert got.new_value("attempt") == Decimal(3)
    assert got.new_value("halted") is True
    assert got.new_value("error_message") is None
    assert got.new_value("tags") == ["cdn", Decimal("1.5")]
    assert got.new_value("labels") == {"zone": "eu"}
    assert got.new_value("nodes") == {"a", "b"}
    assert got.new_value("blob") == Binary(b"\x00\x01")


def test_binary_values_decode_as_lambda_sends_them_base64_encoded() -> None:
    # GIVEN an image as Lambda's JSON event carries it: binary values in base64 text
    image = {"packed": {"B": base64.b64encode(b"\x78\x9c\x00").decode()},
             "parts": {"BS": [base64.b64encode(b"a").decode(), base64.b64encode(b"b").decode()]},
             "nested": {"M": {"blob": {"B": base64.b64encode(b"\xff").decode()}}}}
    # THEN they decode to the bytes written
    got = record(image)
    assert got.new_value("packed") == Binary(b"\x78\x9c\x00")
    assert got.new_value("parts") == {Binary(b"a"), Binary(b"b")}
    assert got.new_value("nested") == {"blob": Binary(b"\xff")}


def test_a_missing_image_or_attribute_reads_as_none() -> None:
    got = record(None, old={"status": {"S": "pending"}})
    assert got.new_value("status") is None
    assert got.old_value("status") == "pending"
    assert got.old_value("attempt") is None
    assert attribute(None, "status") is None


def test_images_stay_raw_for_the_models_from_raw_data() -> None:
    image = {"pk": {"S": "TASK#t1"}, "sk": {"S": "META"}, "status": {"S": "completed"}, "attempt": {"N": "2"}}
    task = TaskItem.from_raw_data(dict(record(image).new or {}))
    assert (task.status, int(task.attempt)) == ("completed", 2)
