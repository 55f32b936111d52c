"""fleetrun.local.durable: what moto holds survives a process that dies, through snapshot + journal.

Each test serves moto's application through a `Store` on a loopback port, "kills" it by dropping
every backend without closing the store, and opens a new store on the same directory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from werkzeug.serving import make_server

from fleetrun.local import durable, moto_fixes
from fleetrun.local.in_process import InProcessTransport

#: nothing listens on port 9 (discard): a request reaching the network would be refused
IN_PROCESS_URL = "http://127.0.0.1:9"


class Served:
    """One "process": a store opened on `directory` and moto served through it."""

    def __init__(self, directory: Path, observer: Callable[[str | None, bytes], None] | None = None,
                 **options: Any) -> None:
        durable.forget()
        moto_fixes.apply()
        app = moto_fixes.dispatcher()
        self.store = durable.Store(directory, **options)
        self.recovery = self.store.open(app)
        self.app = self.store.wrap(app, observer=observer)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=f"http://127.0.0.1:{self.port}", region_name="us-east-1",
                            aws_access_key_id="local", aws_secret_access_key="local")

    def in_process_client(self, service: str) -> Any:
        """A client whose requests never reach a socket: they are served in-process."""
        client = boto3.client(service, endpoint_url=IN_PROCESS_URL, region_name="us-east-1",
                              aws_access_key_id="local", aws_secret_access_key="local")
        client.meta.events.register("before-send", InProcessTransport(IN_PROCESS_URL, self.app))
        return client

    def die(self) -> None:
        """What `kill -9` leaves: the files as they are (nothing flushed, no final snapshot)."""
        self.server.shutdown()
        self.server.server_close()
        import os

        os.close(self.store._lock_fd)  # the kernel drops a dead process's lock


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "state"
    durable.forget()


def _write_some(served: Served) -> dict[str, Any]:
    ddb, sqs, kms = served.client("dynamodb"), served.client("sqs"), served.client("kms")
    ddb.create_table(TableName="t", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")
    ddb.put_item(TableName="t", Item={"pk": {"S": "a"}, "n": {"N": "1"}})
    ddb.update_item(TableName="t", Key={"pk": {"S": "a"}}, UpdateExpression="ADD n :one",
                    ExpressionAttributeValues={":one": {"N": "1"}})
    queue = sqs.create_queue(QueueName="q")["QueueUrl"]
    sent = [sqs.send_message(QueueUrl=queue, MessageBody=f"m{i}")["MessageId"] for i in range(3)]
    received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1)["Messages"][0]
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=received["ReceiptHandle"])
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    sealed = kms.encrypt(KeyId=key, Plaintext=b"s3cr3t")["CiphertextBlob"]
    ddb.put_item(TableName="t", Item={"pk": {"S": "after-key"}})
    return {"queue": queue, "sent": sent, "deleted": received["MessageId"], "sealed": sealed}


def _check(served: Served, written: dict[str, Any]) -> None:
    ddb, sqs, kms = served.client("dynamodb"), served.client("sqs"), served.client("kms")
    assert ddb.get_item(TableName="t", Key={"pk": {"S": "a"}})["Item"]["n"] == {"N": "2"}
    assert "Item" in ddb.get_item(TableName="t", Key={"pk": {"S": "after-key"}})
    left = sqs.receive_message(QueueUrl=written["queue"], MaxNumberOfMessages=10)["Messages"]
    # replay made the same message ids; the deleted one stays deleted
    assert sorted(m["MessageId"] for m in left) == sorted(set(written["sent"]) - {written["deleted"]})
    assert kms.decrypt(CiphertextBlob=written["sealed"])["Plaintext"] == b"s3cr3t"


def test_every_acknowledged_write_survives_a_killed_process(state: Path) -> None:
    # GIVEN writes to DynamoDB, SQS and KMS acknowledged by a store that then dies
    first = Served(state)
    written = _write_some(first)
    first.die()

    # WHEN a new process opens the same directory THEN everything is there, ids included
    second = Served(state)
    assert second.recovery.snapshot  # the snapshot taken after CreateKey
    assert second.recovery.replayed >= 1
    assert second.recovery.failed == 0
    _check(second, written)
    second.die()


def test_a_clean_close_after_a_large_journal_leaves_a_snapshot_and_an_empty_journal(state: Path) -> None:
    first = Served(state, close_snapshot_bytes=1)
    written = _write_some(first)
    first.server.shutdown()
    first.store.close()

    second = Served(state)
    assert second.recovery.replayed == 0
    _check(second, written)
    second.die()


def test_a_clean_close_after_a_small_journal_keeps_it_for_the_next_start_to_replay(state: Path) -> None:
    # GIVEN writes that journal less than a clean stop snapshots for
    first = Served(state, close_snapshot_bytes=10 * 1024 * 1024)
    written = _write_some(first)
    journaled = first.store.journal_path().stat().st_size
    first.server.shutdown()

    # WHEN it is closed THEN no new snapshot is written, and the next start replays the journal
    first.store.close()
    assert first.store.journal_path().stat().st_size == journaled
    second = Served(state)
    assert second.recovery.replayed > 0
    assert second.recovery.failed == 0
    _check(second, written)
    second.die()


def test_a_torn_last_record_is_cut_with_a_warning_and_kept_aside(state: Path) -> None:
    # GIVEN a dead process whose journal ends in half a record
    first = Served(state)
    written = _write_some(first)
    first.die()
    journal = first.store.journal_path()
    complete = journal.stat().st_size
    with journal.open("ab") as out:
        out.write(b"\x10\x00\x00\x00torn")

    # WHEN it is opened THEN the complete records are replayed and the tail is named and kept
    second = Served(state)
    assert f"8 byte(s) after offset {complete}" in second.recovery.torn
    assert journal.stat().st_size == complete
    assert [p.read_bytes() for p in state.glob("journal-*.log.torn-*")] == [b"\x10\x00\x00\x00torn"]
    _check(second, written)
    second.die()


def test_a_damaged_snapshot_refuses_the_start_and_touches_nothing(state: Path) -> None:
    first = Served(state)
    _write_some(first)
    first.die()
    snapshot = state / "snapshot.bin"
    snapshot.write_bytes(snapshot.read_bytes()[:-10])
    before = {p.name: p.read_bytes() for p in state.iterdir()}

    with pytest.raises(durable.StateUnreadable) as refused:
        Served(state)

    assert str(snapshot) in str(refused.value)
    assert "fleetrun local reset" in str(refused.value)
    assert {p.name: p.read_bytes() for p in state.iterdir()} == before


def test_a_journal_past_its_size_is_compacted_into_a_new_snapshot(state: Path) -> None:
    first = Served(state, compact_bytes=20_000)
    written = _write_some(first)
    ddb = first.client("dynamodb")
    for i in range(60):
        ddb.put_item(TableName="t", Item={"pk": {"S": f"bulk-{i}"}, "pad": {"S": "x" * 200}})
    generation = first.store.generation
    assert generation >= 3  # one after CreateKey, more from compaction
    assert [p.name for p in state.glob("journal-*.log")] == [f"journal-{generation}.log"]
    first.die()

    second = Served(state)
    _check(second, written)
    assert second.client("dynamodb").scan(TableName="t", Select="COUNT")["Count"] == 62
    second.die()


def test_a_directory_in_use_is_not_opened_twice(state: Path) -> None:
    first = Served(state)
    with pytest.raises(durable.StateInUse):
        durable.hold(state)
    first.die()


def test_reads_are_not_journaled(state: Path) -> None:
    first = Served(state)
    ddb = first.client("dynamodb")
    ddb.create_table(TableName="r", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")
    size = first.store.journal_path().stat().st_size
    for _ in range(5):
        ddb.get_item(TableName="r", Key={"pk": {"S": "x"}})
        ddb.scan(TableName="r")
    assert first.store.journal_path().stat().st_size == size
    queue = first.client("sqs").create_queue(QueueName="empty")["QueueUrl"]
    size = first.store.journal_path().stat().st_size
    first.client("sqs").receive_message(QueueUrl=queue)  # an empty receive changes nothing
    assert first.store.journal_path().stat().st_size == size
    first.die()


def test_a_process_that_borrowed_a_state_can_create_its_buckets_again_after_forgetting_it(state: Path) -> None:
    # GIVEN a state holding a bucket, opened (the journal replayed) in this process and forgotten
    first = Served(state)
    first.client("s3").create_bucket(Bucket="kept-outputs")
    first.die()
    second = Served(state)
    assert second.client("s3").head_bucket(Bucket="kept-outputs")
    second.die()
    durable.forget()

    # WHEN moto's own mock creates that bucket again THEN it exists once, found at once
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="kept-outputs")
        assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["kept-outputs"]
        assert s3.head_bucket(Bucket="kept-outputs")


def test_writes_served_in_process_are_journaled_like_those_over_http(state: Path) -> None:
    # GIVEN writes made through the in-process transport (no socket: nothing listens at its URL)
    first = Served(state)
    ddb, sqs, s3 = (first.in_process_client(name) for name in ("dynamodb", "sqs", "s3"))
    ddb.create_table(TableName="t", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")
    ddb.put_item(TableName="t", Item={"pk": {"S": "a#b|c"}, "n": {"N": "1"}})
    queue = sqs.create_queue(QueueName="q")["QueueUrl"]
    sent = sqs.send_message(QueueUrl=queue, MessageBody="hello")["MessageId"]
    s3.create_bucket(Bucket="outputs")
    key = "runs/T1/node a+b/ü.log"
    s3.put_object(Bucket="outputs", Key=key, Body=b"output")
    assert s3.get_object(Bucket="outputs", Key=key)["Body"].read() == b"output"
    first.die()

    # WHEN the state is opened again THEN every write is there, read over HTTP this time
    second = Served(state)
    assert second.recovery.failed == 0
    assert second.client("dynamodb").get_item(TableName="t", Key={"pk": {"S": "a#b|c"}})["Item"]["n"] == {"N": "1"}
    [message] = second.client("sqs").receive_message(QueueUrl=queue)["Messages"]
    assert message["MessageId"] == sent
    assert second.client("s3").get_object(Bucket="outputs", Key=key)["Body"].read() == b"output"
    second.die()


def test_the_observer_hears_each_journaled_write_and_no_read(state: Path) -> None:
    # GIVEN a store that reports the writes it journals
    heard: list[str | None] = []
    served = Served(state, observer=lambda action, body: heard.append(action))
    ddb, sqs = served.in_process_client("dynamodb"), served.in_process_client("sqs")
    ddb.create_table(TableName="t", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")
    queue = sqs.create_queue(QueueName="q")["QueueUrl"]
    heard.clear()
    # WHEN it serves reads, a refused write, an empty receive and two writes
    ddb.get_item(TableName="t", Key={"pk": {"S": "a"}})
    with pytest.raises(ddb.exceptions.ConditionalCheckFailedException):
        ddb.put_item(TableName="t", Item={"pk": {"S": "a"}}, ConditionExpression="attribute_exists(pk)")
    sqs.receive_message(QueueUrl=queue)
    ddb.put_item(TableName="t", Item={"pk": {"S": "a"}})
    sqs.send_message(QueueUrl=queue, MessageBody="x")
    # THEN it heard exactly the two writes, in order
    assert heard == ["PutItem", "SendMessage"]
    served.die()
