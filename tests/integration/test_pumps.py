"""The pumps deliver SQS batches and DynamoDB stream records like Lambda event source mappings (moto in-process)."""

from __future__ import annotations

import datetime
import logging
import threading
from typing import Any

import boto3
import pytest
from chalice.app import DynamoDBEvent, SQSEvent

from chalicelib import resources
from fleetrun.local.pumps import LambdaContext, SqsPump, StreamPump

QUEUE = resources.DISPATCH_QUEUE.name


class Recorder:
    """A handler that records each event and answers from a script (a dict to return or an exception)."""

    def __init__(self, *responses: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.contexts: list[Any] = []
        self.responses = list(responses)

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        self.events.append(event)
        self.contexts.append(context)
        response = self.responses.pop(0) if self.responses else None
        if isinstance(response, Exception):
            raise response
        return response

    def bodies(self, index: int) -> list[str]:
        return [r["body"] for r in self.events[index]["Records"]]

    def sequence_numbers(self, index: int) -> list[str]:
        return [r["dynamodb"]["SequenceNumber"] for r in self.events[index]["Records"]]


def failures(*ids: str) -> dict[str, Any]:
    return {"batchItemFailures": [{"itemIdentifier": i} for i in ids]}


# --- SQS -------------------------------------------------------------------------------------------


@pytest.fixture
def sqs():
    return boto3.client("sqs")


def send(sqs, url: str, *bodies: str) -> None:
    for body in bodies:
        sqs.send_message(
            QueueUrl=url, MessageBody=body, MessageAttributes={"kind": {"DataType": "String", "StringValue": "test"}}
        )


def messages_left(sqs, url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes[n]) for n in names)


def test_sqs_batch_is_delivered_in_lambda_shape_and_deleted(aws, sqs):
    # GIVEN three messages on the dispatch queue
    url = aws.queue_urls[QUEUE]
    send(sqs, url, "a", "b", "c")
    handler = Recorder()
    # WHEN the pump polls once
    delivered = SqsPump(sqs, url, handler, batch_size=10).poll_once()
    # THEN one Lambda-shaped batch arrives and the queue is empty afterwards
    assert delivered == 3
    records = handler.events[0]["Records"]
    assert sorted(r["body"] for r in records) == ["a", "b", "c"]
    assert len({r["messageId"] for r in records}) == 3
    record = records[0]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"].endswith(f":{QUEUE}")
    assert record["awsRegion"] == "us-east-1"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= record["attributes"].keys()
    assert record["messageAttributes"]["kind"] == {
        "stringValue": "test", "stringListValues": [], "binaryListValues": [], "dataType": "String",
    }
    assert record["md5OfBody"]
    assert [r.body for r in SQSEvent(handler.events[0], handler.contexts[0])] == [r["body"] for r in records]
    assert messages_left(sqs, url) == 0


def test_sqs_partial_batch_failure_deletes_only_the_successful_messages(aws, sqs):
    # GIVEN a handler that reports message "b" as failed the first time
    url = aws.queue_urls[QUEUE]
    send(sqs, url, "a", "b", "c")
    handler = Recorder()

    def fail_b(event, context):
        failed = [r["messageId"] for r in event["Records"] if r["body"] == "b"] if not handler.events else []
        handler(event, context)
        return failures(*failed)

    pump = SqsPump(sqs, url, fail_b)
    # WHEN the pump polls twice
    assert pump.poll_once() == 3
    assert pump.poll_once() == 1
    # THEN only "b" is redelivered, on its second receive, and then deleted
    assert handler.bodies(1) == ["b"]
    assert handler.events[1]["Records"][0]["attributes"]["ApproximateReceiveCount"] == "2"
    assert pump.poll_once() == 0
    assert messages_left(sqs, url) == 0


def test_sqs_handler_exception_redelivers_the_whole_batch(aws, sqs, caplog):
    # GIVEN a handler that raises on its first batch
    url = aws.queue_urls[QUEUE]
    send(sqs, url, "a", "b")
    handler = Recorder(RuntimeError("boom"))
    pump = SqsPump(sqs, url, handler)
    # WHEN the pump drains the queue
    with caplog.at_level(logging.ERROR, logger="fleetrun.local.pumps"):
        assert pump.drain() == 4
    # THEN the exception is logged, not raised, and both messages come back
    assert any("boom" in (r.exc_text or "") for r in caplog.records)
    assert sorted(handler.bodies(1)) == ["a", "b"]
    assert {r["attributes"]["ApproximateReceiveCount"] for r in handler.events[1]["Records"]} == {"2"}
    assert messages_left(sqs, url) == 0


def test_sqs_unknown_item_identifier_fails_the_whole_batch(aws, sqs):
    # GIVEN a handler that answers with an identifier that is not in the batch (Lambda: complete failure)
    url = aws.queue_urls[QUEUE]
    send(sqs, url, "a", "b")
    handler = Recorder(failures("not-a-message-id"))
    pump = SqsPump(sqs, url, handler)
    # WHEN the pump polls twice
    pump.poll_once()
    # THEN both messages are redelivered
    assert pump.poll_once() == 2


def test_sqs_poison_message_goes_to_the_dead_letter_queue(aws, sqs):
    # GIVEN a message whose handler always fails
    url, dlq_url = aws.queue_urls[QUEUE], aws.dlq_urls[QUEUE]
    send(sqs, url, "poison")
    handler = Recorder(*[RuntimeError("always")] * 10)
    # WHEN the pump drains the queue
    SqsPump(sqs, url, handler).drain()
    # THEN it was delivered max_receive_count times, then SQS moved it to the DLQ
    assert len(handler.events) == resources.DISPATCH_QUEUE.max_receive_count == 5
    assert messages_left(sqs, url) == 0
    dead = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in dead] == ["poison"]


def test_sqs_redelivery_delay_keeps_failed_messages_invisible(aws, sqs):
    # GIVEN a pump that lets failed messages reappear only after 60 s (the local runtime's setting)
    url = aws.queue_urls[QUEUE]
    send(sqs, url, "a")
    pump = SqsPump(sqs, url, Recorder(RuntimeError("boom")), redelivery_delay=60)
    # WHEN its handler fails
    pump.poll_once()
    # THEN the message stays in flight and the next round receives nothing
    assert pump.drain() == 0
    assert messages_left(sqs, url) == 1


def test_lambda_context_is_accepted_by_powertools(aws, sqs):
    from aws_lambda_powertools import Logger

    # GIVEN a Powertools handler that injects the Lambda context into its logs
    url = aws.queue_urls[QUEUE]
    send(sqs, url, "a")
    send(sqs, url, "b")
    seen: list[tuple[str, str, int]] = []
    powertools_logger = Logger(service="fleetrun-test")

    @powertools_logger.inject_lambda_context
    def handler(event, context):
        seen.append((context.aws_request_id, context.function_name, context.get_remaining_time_in_millis()))

    # WHEN the pump delivers two batches to it
    SqsPump(sqs, url, handler, batch_size=1, function_name="dispatcher").drain()
    # THEN each invocation has its own request id and a remaining time within the timeout
    assert len({request_id for request_id, _, _ in seen}) == 2
    assert all(name == "dispatcher" and 0 < remaining <= 60_000 for _, name, remaining in seen)


def test_lambda_context_counts_down():
    context = LambdaContext("f", timeout_seconds=0.0)
    assert context.get_remaining_time_in_millis() == 0
    assert context.invoked_function_arn == "arn:aws:lambda:us-east-1:123456789012:function:f"


def test_run_forever_polls_until_stopped(aws, sqs):
    # GIVEN a pump running in a thread
    url = aws.queue_urls[QUEUE]
    delivered = threading.Event()
    pump = SqsPump(sqs, url, lambda event, context: delivered.set())
    stop = threading.Event()
    thread = threading.Thread(target=pump.run_forever, args=(stop, 0.01))
    thread.start()
    try:
        # WHEN a message arrives
        send(sqs, url, "a")
        # THEN it is delivered, and the loop ends once stopped
        assert delivered.wait(5)
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


# --- DynamoDB Streams ------------------------------------------------------------------------------


def put_items(table_name: str, *keys: str) -> None:
    ddb = boto3.client("dynamodb")
    for key in keys:
        ddb.put_item(TableName=table_name, Item={"pk": {"S": key}, "sk": {"S": "item"}, "n": {"N": "1"}})


def stream_pump(aws, handler, **kwargs) -> StreamPump:
    return StreamPump(boto3.client("dynamodbstreams"), aws.stream_arn, handler, **kwargs)


def test_stream_records_arrive_in_order_and_parse_as_chalice_events(aws):
    # GIVEN three writes to the table
    put_items(aws.table_name, "a", "b", "c")
    handler = Recorder()
    # WHEN the pump polls once
    assert stream_pump(aws, handler).poll_once() == 3
    # THEN the records come in write order, shaped as Lambda's DynamoDB event
    records = handler.events[0]["Records"]
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in records] == ["a", "b", "c"]
    assert [int(s) for s in handler.sequence_numbers(0)] == sorted(int(s) for s in handler.sequence_numbers(0))
    for record in records:
        assert record["eventSourceARN"] == aws.stream_arn
        assert record["eventName"] == "INSERT"
        created = record["dynamodb"]["ApproximateCreationDateTime"]
        assert type(created) in (int, float)
    # AND Chalice's DynamoDBEvent accepts them
    parsed = list(DynamoDBEvent(handler.events[0], handler.contexts[0]))
    assert [r.keys["pk"]["S"] for r in parsed] == ["a", "b", "c"]
    assert {r.table_name for r in parsed} == {aws.table_name}
    assert all(isinstance(r.timestamp, datetime.datetime) for r in parsed)
    assert parsed[0].new_image["n"] == {"N": "1"}


def test_stream_batch_is_redelivered_after_handler_exception(aws):
    # GIVEN a handler that raises on its first batch
    put_items(aws.table_name, "a", "b", "c")
    handler = Recorder(RuntimeError("boom"))
    pump = stream_pump(aws, handler)
    # WHEN the pump polls twice
    assert pump.poll_once() == 3
    assert pump.poll_once() == 3
    # THEN the same batch (same records) arrives again, and then nothing more
    assert handler.events[1]["Records"] == handler.events[0]["Records"]
    assert pump.drain() == 0


def test_stream_partial_failure_redelivers_from_the_failed_record(aws):
    # GIVEN four records and a handler that reports the third (and fourth) as failed once
    put_items(aws.table_name, "a", "b", "c", "d")
    handler = Recorder()

    def fail_from_third(event, context):
        first_call = not handler.events
        handler(event, context)
        return failures(*[r["dynamodb"]["SequenceNumber"] for r in event["Records"][2:]]) if first_call else None

    pump = stream_pump(aws, fail_from_third)
    # WHEN the pump drains the stream
    assert pump.drain() == 6
    # THEN the second delivery starts at the failed record, not before it
    first = handler.sequence_numbers(0)
    assert handler.sequence_numbers(1) == first[2:]
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in handler.events[1]["Records"]] == ["c", "d"]


def test_stream_drain_returns_zero_when_nothing_new(aws):
    # GIVEN a pump that has delivered everything
    put_items(aws.table_name, "a")
    handler = Recorder()
    pump = stream_pump(aws, handler)
    assert pump.drain() == 1
    # THEN draining again delivers nothing, until the next write
    assert pump.drain() == 0
    put_items(aws.table_name, "b")
    assert pump.drain() == 1
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in handler.events[1]["Records"]] == ["b"]


def test_stream_gives_up_after_max_retries_and_moves_on(aws):
    # GIVEN a handler that always fails on record "a"
    put_items(aws.table_name, "a")
    given_up: list[list[dict[str, Any]]] = []
    handler = Recorder(*[RuntimeError("always")] * 3)
    pump = stream_pump(aws, handler, max_retries=2, on_give_up=given_up.append)
    # WHEN the pump drains the stream
    assert pump.drain() == 3
    # THEN "a" was tried once plus two retries, then handed to on_give_up and skipped
    assert [[r["dynamodb"]["Keys"]["pk"]["S"] for r in batch] for batch in given_up] == [["a"]]
    put_items(aws.table_name, "b")
    assert pump.drain() == 1
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in handler.events[-1]["Records"]] == ["b"]


def test_stream_batch_size_limits_each_delivery(aws):
    put_items(aws.table_name, "a", "b", "c")
    handler = Recorder()
    assert stream_pump(aws, handler, batch_size=2).drain() == 3
    assert [len(e["Records"]) for e in handler.events] == [2, 1]


class FakeStreams:
    """A DynamoDB Streams client with shards that split: moto only ever has one shard."""

    class exceptions:  # noqa: N801 - mimics boto3's client.exceptions
        class ExpiredIteratorException(Exception):
            pass

    class meta:  # noqa: N801
        region_name = "us-east-1"

    def __init__(self) -> None:
        self.shards: dict[str, dict[str, Any]] = {}  # shard id -> {"parent", "records", "closed"}

    def add_shard(self, shard_id: str, parent: str | None = None) -> None:
        self.shards[shard_id] = {"parent": parent, "records": [], "closed": False}

    def write(self, shard_id: str, key: str) -> None:
        records = self.shards[shard_id]["records"]
        sequence_number = f"{len(self.shards)}{len(records):020d}"
        records.append({"eventID": key, "eventName": "INSERT", "dynamodb": {"SequenceNumber": sequence_number}})

    def describe_stream(self, StreamArn):  # noqa: N803
        shards = [
            {"ShardId": i, **({"ParentShardId": s["parent"]} if s["parent"] else {})} for i, s in self.shards.items()
        ]
        return {"StreamDescription": {"Shards": shards}}

    def get_shard_iterator(self, StreamArn, ShardId, ShardIteratorType, SequenceNumber=None):  # noqa: N803
        records = self.shards[ShardId]["records"]
        sequence_numbers = [r["dynamodb"]["SequenceNumber"] for r in records]
        position = {
            "TRIM_HORIZON": 0,
            "LATEST": len(records),
            "AT_SEQUENCE_NUMBER": sequence_numbers.index(SequenceNumber) if SequenceNumber in sequence_numbers else 0,
            "AFTER_SEQUENCE_NUMBER": sequence_numbers.index(SequenceNumber) + 1 if SequenceNumber else 0,
        }[ShardIteratorType]
        return {"ShardIterator": f"{ShardId}|{position}"}

    def get_records(self, ShardIterator, Limit):  # noqa: N803
        shard_id, position = ShardIterator.split("|")
        shard = self.shards[shard_id]
        page = shard["records"][int(position) : int(position) + Limit]
        end = int(position) + len(page)
        done = shard["closed"] and end == len(shard["records"])
        return {"Records": page, **({} if done else {"NextShardIterator": f"{shard_id}|{end}"})}


def test_stream_child_shards_are_read_after_their_parent_is_finished():
    # GIVEN a stream whose shard splits after one record was read; the parent has two records unread
    streams = FakeStreams()
    streams.add_shard("parent")
    streams.write("parent", "p1")
    handler = Recorder()
    pump = StreamPump(streams, "arn:stream", handler, batch_size=1)
    assert pump.poll_once() == 1
    streams.write("parent", "p2")
    streams.write("parent", "p3")
    streams.shards["parent"]["closed"] = True
    streams.add_shard("child", parent="parent")
    streams.write("child", "c1")
    # WHEN the pump drains the stream
    pump.drain()
    # THEN the child's records come after all of the parent's
    assert [r["eventID"] for e in handler.events for r in e["Records"]] == ["p1", "p2", "p3", "c1"]


# --- Chalice + Powertools handlers, as app.py writes them ------------------------------------------


def test_chalice_handlers_with_powertools_partial_failures(aws, sqs):
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
    from chalice.app import Chalice

    # GIVEN Chalice SQS and stream handlers that report "b" as failed the first time they see it
    app = Chalice(app_name="pumps-test")
    seen: dict[str, list[str]] = {"sqs": [], "stream": []}

    def process(source: str, key: str) -> None:
        seen[source].append(key)
        if key == "b" and seen[source].count("b") == 1:
            raise ValueError("b fails once")

    @app.on_sqs_message(queue=QUEUE, batch_size=resources.DISPATCH_QUEUE.batch_size)
    def on_dispatch(event):
        return process_partial_response(
            event=event.to_dict(),
            record_handler=lambda record: process("sqs", record.body),
            processor=BatchProcessor(event_type=EventType.SQS),
            context=event.context,
        )

    @app.on_dynamodb_record(stream_arn=aws.stream_arn)
    def on_change(event):
        return process_partial_response(
            event=event.to_dict(),
            record_handler=lambda record: process("stream", record.dynamodb.keys["pk"]),
            processor=BatchProcessor(event_type=EventType.DynamoDBStreams),
            context=event.context,
        )

    url = aws.queue_urls[QUEUE]
    send(sqs, url, "a", "b", "c")
    put_items(aws.table_name, "a", "b", "c")
    # WHEN both pumps drain
    SqsPump(sqs, url, on_dispatch, batch_size=resources.DISPATCH_QUEUE.batch_size).drain()
    stream_pump(aws, on_change).drain()
    # THEN SQS redelivered only "b"; the stream redelivered from "b" on, in order
    assert sorted(seen["sqs"]) == ["a", "b", "b", "c"]
    assert seen["stream"] == ["a", "b", "c", "b", "c"]
    assert messages_left(sqs, url) == 0


def test_a_pump_waiting_for_work_starts_as_soon_as_it_is_woken(aws, sqs):
    # GIVEN a pump whose idle pause is far longer than the test, waiting on a wake-up event
    url = aws.queue_urls[QUEUE]
    delivered = threading.Event()
    pump = SqsPump(sqs, url, lambda event, context: delivered.set())
    stop, wake = threading.Event(), threading.Event()
    thread = threading.Thread(target=pump.run_forever, args=(stop, 600.0, wake))
    thread.start()
    try:
        assert not delivered.wait(0.5)  # its first poll found nothing: it is pausing now
        # WHEN a message arrives and the pump is woken
        send(sqs, url, "a")
        wake.set()
        # THEN it is delivered at once, not after the pause
        assert delivered.wait(5)
    finally:
        stop.set()
        wake.set()
        thread.join(5)
    assert not thread.is_alive()


def test_the_stream_pump_reads_the_shard_list_again_only_after_describe_seconds(aws):
    # GIVEN a stream pump that describes the stream at most every 60 s
    client = boto3.client("dynamodbstreams")
    described: list[str] = []
    client.meta.events.register("before-call.dynamodbstreams.DescribeStream", lambda **_: described.append("x"))
    handler = Recorder()
    pump = StreamPump(client, aws.stream_arn, handler, describe_seconds=60.0)
    # WHEN it polls several times, with writes in between
    for key in ("a", "b", "c"):
        put_items(aws.table_name, key)
        assert pump.poll_once() == 1
    # THEN it read the shard list once, and still delivered every record in order
    assert len(described) == 1
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for e in handler.events for r in e["Records"]] == ["a", "b", "c"]
