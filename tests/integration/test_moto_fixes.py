"""The stand-in must keep DynamoDB's promises, or the local runtime's stream stalls."""

from __future__ import annotations

import pickle
import threading

import boto3
import pytest
from botocore.exceptions import ClientError

from chalicelib.store import retrying
from fleetrun.local.pumps import StreamPump


def _put(ddb, table: str, sk: str, **extra) -> None:
    ddb.put_item(TableName=table, Item={"pk": {"S": "P"}, "sk": {"S": sk}, **extra})


def test_a_cancelled_transaction_leaves_the_stream_flowing_and_changes_nothing(aws):
    # GIVEN a stream reader that has read everything so far
    ddb = boto3.client("dynamodb")
    delivered: list[str] = []
    pump = StreamPump(boto3.client("dynamodbstreams"), aws.stream_arn,
                      lambda event, _: delivered.extend(r["dynamodb"]["Keys"]["sk"]["S"] for r in event["Records"]))
    _put(ddb, aws.table_name, "a")
    pump.drain()
    # WHEN a transaction is cancelled by its second condition
    with pytest.raises(ClientError, match="TransactionCanceled"):
        ddb.transact_write_items(TransactItems=[
            {"Put": {"TableName": aws.table_name, "Item": {"pk": {"S": "P"}, "sk": {"S": "b"}}}},
            {"ConditionCheck": {"TableName": aws.table_name, "Key": {"pk": {"S": "P"}, "sk": {"S": "a"}},
                                "ConditionExpression": "attribute_not_exists(pk)"}},
        ])
    _put(ddb, aws.table_name, "c")
    pump.drain()
    # THEN the cancelled put left no item and no record, and later writes still stream
    assert "Item" not in ddb.get_item(TableName=aws.table_name, Key={"pk": {"S": "P"}, "sk": {"S": "b"}})
    assert delivered == ["a", "c"]


def test_concurrent_conditional_writes_to_one_item_let_exactly_one_through(aws):
    # GIVEN twenty threads racing to create the same item
    ddb = boto3.client("dynamodb")
    wins: list[int] = []

    def create(i: int) -> None:
        try:
            ddb.put_item(TableName=aws.table_name, Item={"pk": {"S": "race"}, "sk": {"S": "x"}, "n": {"N": str(i)}},
                         ConditionExpression="attribute_not_exists(pk)")
            wins.append(i)
        except ClientError:
            pass

    threads = [threading.Thread(target=create, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # THEN exactly one succeeded
    assert len(wins) == 1


def test_dynamodb_answers_written_at_once_parse_as_moto_s_shape_walker_writes_them(aws, monkeypatch):
    # GIVEN items with every attribute type the service writes, and a stream holding their records
    from moto.core.responses import BaseResponse
    from moto.dynamodb.responses import DynamoHandler
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    ddb, streams = boto3.client("dynamodb"), boto3.client("dynamodbstreams")
    table = aws.table_name
    for sk in ("a", "b"):
        _put(ddb, table, sk, n={"N": "1.50"}, flag={"BOOL": True}, nothing={"NULL": True}, tags={"SS": ["x", "y"]},
             doc={"M": {"list": {"L": [{"S": "é#|"}, {"N": "-3"}]}}}, packed={"B": b"\x00\xffzip"},
             list_pk={"S": "TASK"}, list_sk={"S": sk})
    shard_id = streams.describe_stream(StreamArn=aws.stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=aws.stream_arn, ShardId=shard_id,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    reads = {
        "get": lambda: ddb.get_item(TableName=table, Key={"pk": {"S": "P"}, "sk": {"S": "a"}}),
        "missing": lambda: ddb.get_item(TableName=table, Key={"pk": {"S": "P"}, "sk": {"S": "zz"}}),
        "query": lambda: ddb.query(TableName=table, KeyConditionExpression="pk = :p",
                                   ExpressionAttributeValues={":p": {"S": "P"}}, Limit=1),
        "index": lambda: ddb.query(TableName=table, IndexName="list-index", KeyConditionExpression="list_pk = :p",
                                   ExpressionAttributeValues={":p": {"S": "TASK"}}, ScanIndexForward=False),
        "scan": lambda: ddb.scan(TableName=table, ReturnConsumedCapacity="TOTAL"),
        "table": lambda: ddb.describe_table(TableName=table),
        "stream": lambda: streams.describe_stream(StreamArn=aws.stream_arn),
        "records": lambda: streams.get_records(ShardIterator=iterator),
    }

    def without_metadata(answer: dict) -> dict:
        """The answer without what differs on every call: request ids, a new next iterator."""
        assert "NextShardIterator" in answer or "Records" not in answer
        return {k: v for k, v in answer.items() if k not in ("ResponseMetadata", "NextShardIterator")}

    # WHEN each is read as written at once, then through moto's own serializer
    from moto.core import responses

    walks = []
    walker = responses.get_serializer_class
    monkeypatch.setattr(responses, "get_serializer_class", lambda *a: walks.append(a) or walker(*a))
    at_once = {name: without_metadata(read()) for name, read in reads.items()}
    assert walks == []  # none took the shape walker (a blob in a stream record once did)
    for handler in (DynamoHandler, DynamoDBStreamsHandler):
        monkeypatch.setattr(handler, "serialized", BaseResponse.serialized)
    walked = {name: without_metadata(read()) for name, read in reads.items()}

    # THEN the client parses the same answers (records hold timestamps: parsed as datetimes)
    assert len(at_once["records"]["Records"]) == 2
    assert at_once == walked


UPDATES = [
    ("SET #s = :s, #c = if_not_exists(#c, :zero) + :one, #l = list_append(if_not_exists(#l, :empty), :l)"
     " REMOVE #gone", {}),
    ("SET #m.#k = :s, #c = #c - :one ADD #tags :tags DELETE #old :x", {}),
    ("SET #l[0] = :s, #n = :n REMOVE #l[1]", {}),
    ("SET #c = #c + :s", {"error": "ValidationException"}),  # a string added to a number
    ("SET #s = :s, #s = :n", {"error": "ValidationException"}),  # two actions on one path
    ("SET #pk = :s", {"error": "ValidationException"}),  # a key attribute
]


def test_an_update_expression_walked_once_per_validator_applies_as_moto_s_own_walk(aws, monkeypatch):
    # GIVEN the same updates for two items, one applied with moto's own tree walk
    from moto.dynamodb.parsing.ast_nodes import DepthFirstTraverser

    from fleetrun.local import moto_fixes

    ddb = boto3.client("dynamodb")
    names = {"#s": "status", "#c": "count", "#l": "list", "#gone": "gone", "#m": "map", "#k": "key", "#tags": "tags",
             "#old": "old", "#n": "n", "#pk": "pk"}
    values = {":s": {"S": "v"}, ":zero": {"N": "0"}, ":one": {"N": "1"}, ":empty": {"L": []},
              ":l": {"L": [{"S": "a"}, {"S": "b"}]}, ":tags": {"SS": ["t1"]}, ":x": {"SS": ["x"]}, ":n": {"N": "7"}}

    def apply_all(sk: str) -> list[str]:
        _put(ddb, aws.table_name, sk, gone={"S": "g"}, map={"M": {}}, old={"SS": ["x", "y"]})
        outcomes = []
        for expression, _ in UPDATES:
            used = {k: v for k, v in names.items() if k in expression}
            given = {k: v for k, v in values.items() if k in expression}
            try:
                ddb.update_item(TableName=aws.table_name, Key={"pk": {"S": "P"}, "sk": {"S": sk}},
                                UpdateExpression=expression, ExpressionAttributeNames=used,
                                ExpressionAttributeValues=given)
                outcomes.append("ok")
            except ClientError as error:
                outcomes.append(error.response["Error"]["Code"])
        item = ddb.get_item(TableName=aws.table_name, Key={"pk": {"S": "P"}, "sk": {"S": sk}})["Item"]
        return [*outcomes, repr(sorted((k, v) for k, v in item.items() if k != "sk"))]

    # WHEN applied with the walk of fix 12, then with moto's
    fast = apply_all("fast")
    monkeypatch.setattr(DepthFirstTraverser, "traverse_node_recursively", moto_fixes.MOTO_TRAVERSAL)
    walked = apply_all("walked")
    # THEN the outcomes and the items are the same
    assert fast == walked
    assert fast[:len(UPDATES)] == [want.get("error", "ok") for _, want in UPDATES]


def test_an_update_expression_parsed_once_applies_each_request_s_own_names_and_values(aws):
    # GIVEN one update expression used by many requests (as a transition's write is)
    ddb = boto3.client("dynamodb")
    expression = "SET #a = :a, #n = if_not_exists(#n, :zero) + :one REMOVE #gone"
    for sk, (field, value) in {"x": ("status", "running"), "y": ("stage", "copying")}.items():
        _put(ddb, aws.table_name, sk, gone={"S": "old"})
        # WHEN it is sent twice per item, with other names and values each time
        for _ in range(2):
            ddb.update_item(TableName=aws.table_name, Key={"pk": {"S": "P"}, "sk": {"S": sk}},
                            UpdateExpression=expression,
                            ExpressionAttributeNames={"#a": field, "#n": "count", "#gone": "gone"},
                            ExpressionAttributeValues={":a": {"S": value}, ":zero": {"N": "0"}, ":one": {"N": "1"}})
        # THEN each item holds its own request's values, applied twice
        item = ddb.get_item(TableName=aws.table_name, Key={"pk": {"S": "P"}, "sk": {"S": sk}})["Item"]
        assert item[field] == {"S": value}
        assert item["count"] == {"N": "2"}
        assert "gone" not in item
    # AND an expression that cannot be parsed is still refused, every time
    for _ in range(2):
        with pytest.raises(ClientError, match="ValidationException"):
            ddb.update_item(TableName=aws.table_name, Key={"pk": {"S": "P"}, "sk": {"S": "x"}},
                            UpdateExpression="SET = :a", ExpressionAttributeValues={":a": {"S": "v"}})


def test_an_expression_whose_static_checks_passed_is_refused_once_its_names_make_it_invalid(aws):
    # GIVEN an update expression that passed its checks (fix 13) with two distinct names
    ddb = boto3.client("dynamodb")
    _put(ddb, aws.table_name, "x")
    key = {"pk": {"S": "P"}, "sk": {"S": "x"}}
    expression = "SET #a = :a, #b = :b"
    values = {":a": {"S": "1"}, ":b": {"S": "2"}}
    ddb.update_item(TableName=aws.table_name, Key=key, UpdateExpression=expression,
                    ExpressionAttributeNames={"#a": "one", "#b": "two"}, ExpressionAttributeValues=values)
    # WHEN the same expression names one attribute twice, then a key attribute
    for names in ({"#a": "one", "#b": "one"}, {"#a": "one", "#b": "sk"}):
        # THEN DynamoDB's refusals still come, each time
        for _ in range(2):
            with pytest.raises(ClientError, match="ValidationException"):
                ddb.update_item(TableName=aws.table_name, Key=key, UpdateExpression=expression,
                                ExpressionAttributeNames=names, ExpressionAttributeValues=values)
    # AND the first names still apply
    ddb.update_item(TableName=aws.table_name, Key=key, UpdateExpression=expression,
                    ExpressionAttributeNames={"#a": "one", "#b": "two"},
                    ExpressionAttributeValues={":a": {"S": "3"}, ":b": {"S": "4"}})
    item = ddb.get_item(TableName=aws.table_name, Key=key)["Item"]
    assert (item["one"], item["two"]) == ({"S": "3"}, {"S": "4"})


def test_a_global_index_query_answers_as_a_scan_of_the_whole_table_after_every_kind_of_write(aws):
    # GIVEN items moving in and out of the claim index's partitions by every kind of write
    import random

    ddb = boto3.client("dynamodb")
    table, shuffled = aws.table_name, random.Random(11)

    def key(i: int) -> dict:
        return {"pk": {"S": f"T#{i % 4}"}, "sk": {"S": f"RUN#{i}"}}

    def indexed(runner: str, i: int) -> dict:
        return {"claim_pk": {"S": runner}, "claim_sk": {"S": f"{i:04d}"}}

    def check() -> None:
        # THEN after each write, each partition of the index holds exactly what a full scan finds
        for runner in ("r1", "r2", "r3"):
            queried = ddb.query(TableName=table, IndexName="claim-index", KeyConditionExpression="claim_pk = :r",
                                ExpressionAttributeValues={":r": {"S": runner}})["Items"]
            scanned = ddb.scan(TableName=table, FilterExpression="claim_pk = :r",
                               ExpressionAttributeValues={":r": {"S": runner}})["Items"]
            assert sorted(i["sk"]["S"] for i in queried) == sorted(i["sk"]["S"] for i in scanned)
            assert [i["claim_sk"]["S"] for i in queried] == sorted(i["claim_sk"]["S"] for i in queried)

    for i in range(12):
        ddb.put_item(TableName=table, Item={**key(i), **indexed(f"r{i % 3 + 1}", i)})
    check()  # the first query builds the buckets from the table
    for step in range(60):
        i, runner = shuffled.randrange(16), f"r{shuffled.randrange(3) + 1}"
        kind = ("put", "move", "leave", "delete", "transact", "batch", "refused")[step % 7]
        if kind == "put":
            ddb.put_item(TableName=table, Item={**key(i), **indexed(runner, i)})
        elif kind == "move":
            ddb.update_item(TableName=table, Key=key(i), UpdateExpression="SET claim_pk = :r, claim_sk = :s",
                            ExpressionAttributeValues={":r": {"S": runner}, ":s": {"S": f"{i:04d}"}})
        elif kind == "leave":
            ddb.update_item(TableName=table, Key=key(i), UpdateExpression="REMOVE claim_pk, claim_sk")
        elif kind == "delete":
            ddb.delete_item(TableName=table, Key=key(i))
        elif kind == "transact":
            # (sent again when the fidelity layer cancels it with a conflict: a cancelled one changed nothing)
            retrying.retry_writes(lambda i=i, runner=runner: ddb.transact_write_items(TransactItems=[
                {"Update": {"TableName": table, "Key": key(i), "UpdateExpression": "SET claim_pk = :r, claim_sk = :s",
                            "ExpressionAttributeValues": {":r": {"S": runner}, ":s": {"S": f"{i:04d}"}}}},
                {"Delete": {"TableName": table, "Key": key(i + 1)}},
            ]))
        elif kind == "batch":
            ddb.batch_write_item(RequestItems={table: [
                {"PutRequest": {"Item": {**key(i), **indexed(runner, i)}}},
                {"DeleteRequest": {"Key": key(i + 2)}},
            ]})
        else:  # a write refused by its condition changes nothing
            with pytest.raises(ClientError, match="ConditionalCheckFailed"):
                ddb.update_item(TableName=table, Key=key(i), UpdateExpression="SET claim_pk = :r",
                                ConditionExpression="attribute_exists(nothing_has_this)",
                                ExpressionAttributeValues={":r": {"S": runner}})
        check()


@pytest.mark.parametrize("forward", [True, False])
def test_a_key_condition_query_pages_through_exactly_what_a_scan_selects_in_key_order(aws, forward):
    # GIVEN one partition holding several kinds of items, some also in the claim index
    import random

    ddb = boto3.client("dynamodb")
    table, rng = aws.table_name, random.Random(8)
    sks = [f"{kind}#{rng.randrange(1000):03d}" for kind in ("RUN", "EVT", "TGT", "R") for _ in range(15)]
    for i, sk in enumerate(dict.fromkeys(sks)):
        extra = {"claim_pk": {"S": "runner"}, "claim_sk": {"S": f"{rng.randrange(100):02d}#{i}"}} if i % 3 else {}
        ddb.put_item(TableName=table, Item={"pk": {"S": "TASK#1"}, "sk": {"S": sk}, **extra})
    _put(ddb, table, "RUN#500")  # another partition ("P") with a key the conditions select
    scanned = ddb.scan(TableName=table)["Items"]

    def pages(**query) -> list[str]:
        found, start = [], {}
        while True:
            answer = ddb.query(TableName=table, Limit=4, ScanIndexForward=forward, **start, **query)
            found += [item["sk"]["S"] for item in answer["Items"]]
            if "LastEvaluatedKey" not in answer:
                return found
            start = {"ExclusiveStartKey": answer["LastEvaluatedKey"]}

    conditions = {
        "begins_with(sk, :a)": (("RUN#",), lambda v, a: v.startswith(a)),
        "sk BETWEEN :a AND :b": (("EVT#200", "RUN#300"), lambda v, a, b: a <= v <= b),
        "sk < :a": (("R#",), lambda v, a: v < a),
        "sk <= :a": (("RUN#",), lambda v, a: v <= a),
        "sk > :a": (("RUN#5",), lambda v, a: v > a),
        "sk >= :a": (("TGT#",), lambda v, a: v >= a),
        "sk = :a": ((sks[7],), lambda v, a: v == a),
    }
    for condition, (values, test) in conditions.items():
        names = {f":{n}": {"S": v} for n, v in zip("ab", values, strict=False)}
        # WHEN the partition is queried with that condition, 4 items a page
        found = pages(KeyConditionExpression=f"pk = :p AND {condition}",
                      ExpressionAttributeValues={":p": {"S": "TASK#1"}, **names})
        # THEN the pages hold what a scan selects, in key order, each once
        expected = sorted((i["sk"]["S"] for i in scanned if i["pk"]["S"] == "TASK#1" and test(i["sk"]["S"], *values)),
                          reverse=not forward)
        assert found == expected, condition
    # AND an index query with a range condition pages through its partition in index key order
    found = pages(IndexName="claim-index", KeyConditionExpression="claim_pk = :r AND claim_sk > :a",
                  ExpressionAttributeValues={":r": {"S": "runner"}, ":a": {"S": "40"}})
    indexed = sorted((i for i in scanned if i.get("claim_pk") == {"S": "runner"} and i["claim_sk"]["S"] > "40"),
                     key=lambda i: i["claim_sk"]["S"], reverse=not forward)
    assert found == [i["sk"]["S"] for i in indexed]


def test_a_condition_expression_lexed_once_tests_each_request_s_own_names_and_values(aws):
    # GIVEN one condition expression used by many requests (as a lease's guard is)
    ddb = boto3.client("dynamodb")
    _put(ddb, aws.table_name, "x", status={"S": "pending"}, attempt={"N": "2"})
    condition = "#s = :s AND attempt = :a"

    def lease(status: str, attempt: str) -> None:
        ddb.update_item(TableName=aws.table_name, Key={"pk": {"S": "P"}, "sk": {"S": "x"}},
                        UpdateExpression="SET #s = :new", ConditionExpression=condition,
                        ExpressionAttributeNames={"#s": "status"},
                        ExpressionAttributeValues={":s": {"S": status}, ":a": {"N": attempt}, ":new": {"S": "running"}})

    # WHEN it is sent with values that do not hold, then with values that do
    for status, attempt in (("pending", "1"), ("running", "2")):
        with pytest.raises(ClientError, match="ConditionalCheckFailed"):
            lease(status, attempt)
    lease("pending", "2")
    # THEN only the request whose own values held wrote
    item = ddb.get_item(TableName=aws.table_name, Key={"pk": {"S": "P"}, "sk": {"S": "x"}})["Item"]
    assert item["status"] == {"S": "running"}
    # AND an expression that cannot be lexed is still refused, every time (moto raises, in-process)
    for _ in range(2):
        with pytest.raises(ValueError, match="Cannot parse condition"):
            ddb.update_item(TableName=aws.table_name, Key={"pk": {"S": "P"}, "sk": {"S": "x"}},
                            UpdateExpression="SET a = :a", ConditionExpression="a = :a $ b",
                            ExpressionAttributeValues={":a": {"S": "v"}})


def test_a_keys_only_index_answers_the_keys_as_stored_and_nothing_else(aws):
    # GIVEN an item in the claim index (keys only) with other attributes of every kind
    ddb = boto3.client("dynamodb")
    _put(ddb, aws.table_name, "RUN#1", claim_pk={"S": "runner"}, claim_sk={"S": "5#T#000001"},
         count={"N": "1.50"}, tags={"SS": ["a", "b"]}, data={"M": {"x": {"L": [{"N": "1"}, {"B": b"\x00\xff"}]}}})
    # WHEN the index is queried
    [item] = ddb.query(TableName=aws.table_name, IndexName="claim-index", KeyConditionExpression="claim_pk = :r",
                       ExpressionAttributeValues={":r": {"S": "runner"}})["Items"]
    # THEN it holds the table's and the index's keys, exactly as the table holds them
    stored = ddb.get_item(TableName=aws.table_name, Key={"pk": {"S": "P"}, "sk": {"S": "RUN#1"}})["Item"]
    assert item == {name: stored[name] for name in ("pk", "sk", "claim_pk", "claim_sk")}


def test_a_symmetric_key_encrypts_without_an_rsa_key_and_makes_one_only_when_asked(aws):
    from moto.backends import get_backend

    # GIVEN a symmetric key and an RSA signing key
    kms = boto3.client("kms")
    symmetric = kms.create_key()["KeyMetadata"]["KeyId"]
    signing = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    keys = get_backend("kms")["123456789012"]["us-east-1"].keys
    # WHEN the symmetric key encrypts and decrypts, and the RSA key signs
    sealed = kms.encrypt(KeyId=symmetric, Plaintext=b"secret")["CiphertextBlob"]
    opened = kms.decrypt(CiphertextBlob=sealed)["Plaintext"]
    signature = kms.sign(KeyId=signing, Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256")["Signature"]
    # THEN both work as before, and only the key that signs holds an RSA key
    assert opened == b"secret"
    assert kms.verify(KeyId=signing, Message=b"m", Signature=signature,
                      SigningAlgorithm="RSASSA_PSS_SHA_256")["SignatureValid"]
    assert keys[symmetric].private_key._made is None
    assert keys[signing].private_key.key_size == 2048
    # AND a key whose private key is not made yet survives the local runtime's snapshot
    assert pickle.loads(pickle.dumps(keys[symmetric])).private_key.public_key()
    # AND a symmetric key's private key is still there for whatever asks for it
    assert keys[symmetric].private_key.public_key()
    assert keys[symmetric].private_key._made is not None
