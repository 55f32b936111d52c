"""The fidelity layer's DynamoDB part (fleetrun/local/fidelity/dynamo.py), SQS limits, Lambda and
API Gateway timeouts: the stand-in answers what AWS answers."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from fleetrun.local import fidelity
from fleetrun.local.fidelity import dynamo

TABLE = "fleetrun"


@pytest.fixture
def rates(aws) -> Iterator[Any]:
    """Install strict fidelity with the rates a test asks for (zero by default)."""
    previous = fidelity.current()

    def set_rates(**values: float) -> fidelity.Fidelity:
        settings = fidelity.Fidelity(mode=fidelity.STRICT, seed=7).with_rates(
            **{"conflict_rate": 0.0, "throttle_rate": 0.0, **values})
        fidelity.install(settings)
        return settings

    set_rates()
    dynamo.reset()
    yield set_rates
    fidelity.install(previous)
    dynamo.reset()


def client() -> Any:
    return boto3.client("dynamodb", config=Config(retries={"total_max_attempts": 1}))


def key(pk: str, sk: str = "META") -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def put(pk: str, sk: str = "META", **extra: Any) -> dict[str, Any]:
    return {"TableName": TABLE, "Item": {**key(pk, sk), **extra}}


def put_request(pk: str, sk: str = "META", **extra: Any) -> dict[str, Any]:
    return {"PutRequest": {"Item": {**key(pk, sk), **extra}}}


def error_code(error: ClientError) -> str:
    return str(error.response["Error"]["Code"])


def test_a_throttled_request_surfaces_as_provisioned_throughput_exceeded(rates):
    rates(throttle_rate=1.0)
    with pytest.raises(ClientError) as raised:
        client().put_item(**put("TASK#1"))
    assert error_code(raised.value) == "ProvisionedThroughputExceededException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as raised:
        client().get_item(TableName=TABLE, Key=key("TASK#1"))
    assert error_code(raised.value) == "ProvisionedThroughputExceededException"


def test_a_throttled_transaction_surfaces_as_throttling_exception(rates):
    rates(throttle_rate=1.0)
    with pytest.raises(ClientError) as raised:
        client().transact_write_items(TransactItems=[{"Put": put("TASK#1")}])
    assert error_code(raised.value) == "ThrottlingException"


def test_control_plane_requests_are_never_throttled(rates):
    rates(throttle_rate=1.0)
    assert TABLE in client().list_tables()["TableNames"]


def test_an_injected_conflict_cancels_the_transaction_with_reason_transaction_conflict(rates):
    rates(conflict_rate=1.0)
    with pytest.raises(ClientError) as raised:
        client().transact_write_items(TransactItems=[{"Put": put("TASK#1")}, {"Put": put("TASK#2")}])
    assert error_code(raised.value) == "TransactionCanceledException"
    reasons = raised.value.response["CancellationReasons"]
    assert sorted(reason["Code"] for reason in reasons) == ["None", "TransactionConflict"]
    assert {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"} in reasons
    # AND nothing was written
    assert "Item" not in client().get_item(TableName=TABLE, Key=key("TASK#1"))


def test_pynamodb_transact_write_sees_the_transaction_conflict_reason(rates):
    from pynamodb.connection import Connection
    from pynamodb.exceptions import TransactWriteError
    from pynamodb.transactions import TransactWrite

    from chalicelib.store.models.base import FleetrunModel

    class Plain(FleetrunModel):
        class Meta(FleetrunModel.Meta):
            pass

    rates(conflict_rate=1.0)
    with pytest.raises(TransactWriteError) as raised, TransactWrite(connection=Connection()) as transaction:
        transaction.save(Plain(pk="TASK#1", sk="META"))
    assert [reason.code for reason in raised.value.cancellation_reasons if reason] == ["TransactionConflict"]


def test_a_write_from_another_thread_during_a_transaction_meets_transaction_conflict_exception(rates):
    rates()
    dynamo.set_window(5.0, 5.0)
    try:
        client().transact_write_items(TransactItems=[{"Put": put("TASK#1", status={"S": "pending"})}])
        errors: list[ClientError] = []

        def update() -> None:
            try:
                client().update_item(TableName=TABLE, Key=key("TASK#1"), UpdateExpression="SET #s = :s",
                                     ExpressionAttributeNames={"#s": "status"},
                                     ExpressionAttributeValues={":s": {"S": "running"}})
            except ClientError as error:
                errors.append(error)

        other = threading.Thread(target=update)
        other.start()
        other.join()
        assert [error_code(error) for error in errors] == ["TransactionConflictException"]
        # AND another transaction on the item from that thread is cancelled with TransactionConflict
        cancelled: list[ClientError] = []

        def transact() -> None:
            try:
                client().transact_write_items(TransactItems=[{"Put": put("TASK#2")}, {"Delete": {
                    "TableName": TABLE, "Key": key("TASK#1")}}])
            except ClientError as error:
                cancelled.append(error)

        other = threading.Thread(target=transact)
        other.start()
        other.join()
        reasons = cancelled[0].response["CancellationReasons"]
        assert [reason["Code"] for reason in reasons] == ["None", "TransactionConflict"]
        # AND the transaction's own thread may write its item
        client().update_item(TableName=TABLE, Key=key("TASK#1"), UpdateExpression="SET #s = :s",
                             ExpressionAttributeNames={"#s": "status"},
                             ExpressionAttributeValues={":s": {"S": "claimed"}})
    finally:
        dynamo.set_window(*dynamo.WINDOW_SECONDS)
        dynamo.reset()


def test_a_write_after_the_window_is_not_a_conflict(rates):
    rates()
    client().transact_write_items(TransactItems=[{"Put": put("TASK#1")}])
    time.sleep(max(dynamo.WINDOW_SECONDS) + 0.01)
    errors: list[Exception] = []
    other = threading.Thread(target=lambda: _catch(errors, lambda: client().delete_item(
        TableName=TABLE, Key=key("TASK#1"))))
    other.start()
    other.join()
    assert errors == []


def _catch(errors: list[Exception], call: Any) -> None:
    try:
        call()
    except Exception as error:
        errors.append(error)


def test_an_item_over_400_kb_is_refused(rates):
    with pytest.raises(ClientError) as raised:
        client().put_item(**put("TASK#1", blob={"S": "x" * 401 * 1024}))
    assert error_code(raised.value) == "ValidationException"
    assert "Item size has exceeded the maximum allowed size" in str(raised.value)
    with pytest.raises(ClientError):
        client().batch_write_item(RequestItems={TABLE: [put_request("TASK#2", blob={"S": "x" * 401 * 1024})]})
    client().put_item(**put("TASK#3", blob={"S": "x" * 390 * 1024}))


def test_a_transaction_of_101_items_is_refused(rates):
    with pytest.raises(ClientError) as raised:
        client().transact_write_items(TransactItems=[{"Put": put("TASK#1", f"RUN#{i}")} for i in range(101)])
    assert error_code(raised.value) == "ValidationException"


def test_a_transaction_over_4_mb_is_refused(rates):
    items = [{"Put": put("TASK#1", f"RUN#{i}", blob={"S": "x" * 350 * 1024})} for i in range(12)]
    with pytest.raises(ClientError) as raised:
        client().transact_write_items(TransactItems=items)
    assert error_code(raised.value) == "ValidationException"
    assert "4 MB" in str(raised.value)


def test_a_batch_write_of_26_requests_is_refused(rates):
    requests = [put_request("TASK#1", f"RUN#{i}") for i in range(26)]
    with pytest.raises(ClientError) as raised:
        client().batch_write_item(RequestItems={TABLE: requests})
    assert error_code(raised.value) == "ValidationException"
    client().batch_write_item(RequestItems={TABLE: requests[:25]})


def test_a_batch_get_of_101_keys_is_refused(rates):
    with pytest.raises(ClientError) as raised:
        client().batch_get_item(RequestItems={TABLE: {"Keys": [key("TASK#1", f"RUN#{i}") for i in range(101)]}})
    assert error_code(raised.value) == "ValidationException"


def test_an_sqs_message_over_the_queues_maximum_message_size_is_refused(aws):
    # AWS raised SQS's limit to 1 MiB (Aug 2025; moto 5.2 follows): 256 KB holds where a queue sets it
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="small", Attributes={"MaximumMessageSize": str(256 * 1024)})["QueueUrl"]
    with pytest.raises(ClientError) as raised:
        sqs.send_message(QueueUrl=url, MessageBody="x" * (257 * 1024))
    assert error_code(raised.value) == "InvalidParameterValue"
    sqs.send_message(QueueUrl=url, MessageBody="x" * (256 * 1024))
    default = next(iter(aws.queue_urls.values()))
    with pytest.raises(ClientError) as raised:
        sqs.send_message(QueueUrl=default, MessageBody="x" * (1024 * 1024 + 1))
    assert error_code(raised.value) == "InvalidParameterValue"
    with pytest.raises(ClientError) as raised:
        sqs.send_message_batch(QueueUrl=default, Entries=[
            {"Id": str(i), "MessageBody": "x" * (400 * 1024)} for i in range(3)])
    assert error_code(raised.value) == "AWS.SimpleQueueService.BatchRequestTooLong"


def test_the_meter_counts_writes_per_partition_key_and_the_peak_per_second(rates):
    ddb = client()
    for i in range(5):
        ddb.put_item(**put("TASK#hot", f"RUN#{i}"))
    ddb.put_item(**put("TASK#cold"))
    ddb.batch_write_item(RequestItems={TABLE: [put_request("TASK#hot", f"EVT#{i}") for i in range(3)]})
    ddb.transact_write_items(TransactItems=[{"Put": put("TASK#cold", "RUN#1", blob={"S": "x" * 3000})}])
    ddb.get_item(TableName=TABLE, Key=key("TASK#hot", "RUN#1"))  # reads are not counted
    meter = dynamo.meter()
    assert meter.writes_by_partition() == {"TASK#hot": 8, "TASK#cold": 2}
    assert meter.peak_writes_per_second() == ("TASK#hot", 8.0)
    # a 3 KB item in a transaction: 3 units, doubled
    assert meter.peak_units_per_second() == ("TASK#hot", 8.0)
    meter.reset()
    ddb.transact_write_items(TransactItems=[{"Put": put("TASK#cold", "RUN#2", blob={"S": "x" * 3000})}])
    assert meter.peak_units_per_second() == ("TASK#cold", 6.0)


def test_the_meter_peak_is_over_any_one_second_window():
    meter = dynamo.WriteMeter()
    for at in (0.0, 0.5, 0.9, 1.2, 1.4, 1.8, 3.0):
        meter.record("TASK#a", 1, at)
    meter.record("TASK#b", 5, 0.0)
    assert meter.peak_writes_per_second() == ("TASK#a", 4.0)  # 0.9 .. 1.8
    assert meter.peak_units_per_second() == ("TASK#b", 5.0)


def test_the_same_seed_draws_the_same_injections(rates):
    def sequence() -> list[str]:
        rates(throttle_rate=0.3, conflict_rate=0.3)
        outcomes = []
        for i in range(40):
            try:
                client().transact_write_items(TransactItems=[{"Put": put("TASK#s", f"RUN#{i}")}])
                outcomes.append("ok")
            except ClientError as error:
                outcomes.append(error_code(error))
        return outcomes

    first, second = sequence(), sequence()
    assert first == second
    assert {"ok", "ThrottlingException", "TransactionCanceledException"} <= set(first)


def test_fidelity_off_injects_nothing(aws):
    previous = fidelity.install(fidelity.Fidelity(mode=fidelity.OFF).with_rates(throttle_rate=1.0,
                                                                                conflict_rate=1.0))
    try:
        client().transact_write_items(TransactItems=[{"Put": put("TASK#1")}])
        client().put_item(**put("TASK#1"))
    finally:
        fidelity.install(previous)


# --- Lambda timeouts in the pumps ---------------------------------------------------------------


def test_a_pump_invocation_over_its_timeout_is_abandoned_and_the_batch_retried(aws, caplog):
    from chalicelib import resources
    from fleetrun.local.pumps import SqsPump

    url = aws.queue_urls[resources.DISPATCH_QUEUE.name]
    sqs = boto3.client("sqs")
    sqs.send_message(QueueUrl=url, MessageBody="slow")
    release = threading.Event()
    calls: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> None:
        calls.append(event["Records"][0]["body"])
        if len(calls) == 1:
            release.wait(5)  # the first invocation hangs past the timeout

    pump = SqsPump(sqs, url, handler, function_name="dispatch_worker", timeout_seconds=0.2, redelivery_delay=0)
    with caplog.at_level(logging.ERROR, logger="fleetrun.local.pumps"):
        started = time.monotonic()
        pump.poll_once()
        assert time.monotonic() - started < 2
    assert "dispatch_worker: timed out after 0.2 s" in caplog.text
    # THEN the batch comes back and the next invocation (on a fresh worker) succeeds
    deadline = time.monotonic() + 5
    while len(calls) < 2 and time.monotonic() < deadline:
        pump.poll_once()
    release.set()
    assert calls == ["slow", "slow"]


def test_the_local_runtime_gives_each_pump_its_lambda_timeout():
    from fleetrun.local.runtime import lambda_timeout_seconds

    assert lambda_timeout_seconds("work_worker") == 600
    assert lambda_timeout_seconds("dispatch_worker") == 120


# --- API Gateway's 29 s ---------------------------------------------------------------------------


def test_a_route_slower_than_the_api_timeout_answers_504(monkeypatch):
    from chalice.app import Chalice
    from chalice.config import Config as ChaliceConfig

    from fleetrun.local import rest_gateway

    app = Chalice("slow")

    @app.route("/slow")
    def slow() -> dict[str, Any]:
        time.sleep(1.0)
        return {"ok": True}

    @app.route("/fast")
    def fast() -> dict[str, Any]:
        return {"ok": True}

    monkeypatch.setenv("FLEETRUN_API_TIMEOUT_SECONDS", "0.2")
    gateway = rest_gateway.ContractGateway(app, ChaliceConfig())
    with pytest.raises(rest_gateway.GatewayTimeout) as raised:
        gateway.handle_request("GET", "/slow", {}, b"")
    assert raised.value.CODE == 504
    body = json.loads(raised.value.body or b"")
    assert body["error"]["code"] == "gateway_timeout"
    assert gateway.handle_request("GET", "/fast", {}, b"")["statusCode"] == 200


def test_a_pump_invocation_right_after_a_transaction_is_its_invokers_caller_not_a_conflict(rates):
    # the pump runs on its worker thread with its invoker's context: causally after, as on AWS
    from chalicelib import resources
    from fleetrun.local.pumps import SqsPump

    rates()
    dynamo.set_window(5.0, 5.0)
    try:
        client().transact_write_items(TransactItems=[{"Put": put("TASK#1")}])
        url = aws_queue_url(resources.DISPATCH_QUEUE.name)
        sqs = boto3.client("sqs")
        sqs.send_message(QueueUrl=url, MessageBody="go")
        written: list[str] = []

        def handler(event: dict[str, Any], context: Any) -> None:
            client().delete_item(TableName=TABLE, Key=key("TASK#1"))
            written.append("deleted")

        SqsPump(sqs, url, handler, function_name="dispatch_worker").poll_once()
        assert written == ["deleted"]
    finally:
        dynamo.set_window(*dynamo.WINDOW_SECONDS)
        dynamo.reset()


def aws_queue_url(name: str) -> str:
    return str(boto3.client("sqs").get_queue_url(QueueName=name)["QueueUrl"])


def slowly(call: Any, started: threading.Event) -> Any:
    """`call`, taking 0.4 s more; `started` is set once a call is under way."""
    def slow(*args: Any, **kwargs: Any) -> Any:
        started.set()
        time.sleep(0.4)
        return call(*args, **kwargs)

    return slow


def test_the_layer_answers_through_moto_server_mode(rates, monkeypatch):
    # the local runtime's path: botocore over HTTP to moto's WSGI application
    from moto.dynamodb.models import DynamoDBBackend
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    from tests.processes import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        remote = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{port}",
                              config=Config(retries={"total_max_attempts": 1}))
        remote.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
        rates(throttle_rate=1.0)
        with pytest.raises(ClientError) as raised:
            remote.put_item(TableName="t", Item={"pk": {"S": "a"}})
        assert error_code(raised.value) == "ProvisionedThroughputExceededException"
        rates(conflict_rate=1.0)
        with pytest.raises(ClientError) as raised:
            remote.transact_write_items(TransactItems=[{"Put": {"TableName": "t", "Item": {"pk": {"S": "a"}}}}])
        assert raised.value.response["CancellationReasons"] == [
            {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}]
        # AND callers are unknown there: a write after the transaction is not a conflict, a write
        # that arrived while the transaction ran is
        rates()
        item = {"Put": {"TableName": "t", "Item": {"pk": {"S": "a"}}}}
        remote.transact_write_items(TransactItems=[item])
        remote.put_item(TableName="t", Item={"pk": {"S": "a"}, "n": {"N": "1"}})
        started = threading.Event()
        monkeypatch.setattr(DynamoDBBackend, "transact_write_items",
                            slowly(DynamoDBBackend.transact_write_items, started))
        running = threading.Thread(target=remote.transact_write_items, kwargs={"TransactItems": [item]})
        running.start()
        assert started.wait(10)
        with pytest.raises(ClientError) as raised:
            remote.delete_item(TableName="t", Key={"pk": {"S": "a"}})
        running.join()
        assert error_code(raised.value) == "TransactionConflictException"
    finally:
        server.stop()
