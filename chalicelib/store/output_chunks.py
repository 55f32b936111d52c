"""Live output of a run attempt, stored as ordered chunks on the run's own partition.

| item         | pk                          | sk                          |
|--------------|-----------------------------|-----------------------------|
| output chunk | OUT#<task id>#<part(node)>  | <attempt:05d>#<offset:012d> |

One partition per (task, node), never the task's: 10,000 nodes each sending a chunk a
second would put 10,000 writes/s on one key. A run sends at most a few chunks a second.

Chunks form one chain per attempt: a chunk is written only when it starts where the last
stored chunk ends (or at 0) and no chunk starts at its offset yet. The agent sends one
chunk at a time, so a read of the last chunk and a put conditioned on `attribute_not_exists`
keep the chain exact without a transaction (a transaction would double the write units).
Offsets are the agent's: bytes of the (agent-scrubbed) stream already sent in the attempt.

Inline or S3: a DynamoDB write costs one unit per KB (on demand, $0.625 per million units), an S3
PUT about $5 per million plus the pointer item's one unit and a GET per reader. Up to
`INLINE_BYTES` (8 KiB: 8 units = $5 per million chunks, the break-even) a chunk stays inline;
larger chunks go to S3 under `outputs/live/<task>/<node>/<attempt>/<offset>` and the item keeps
the key. A step printing 10,000 numbered lines over 5 s makes about ten chunks of ~5 KB:
ten inline writes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import aws, clock, config
from chalicelib.store.key_parts import part

#: chunks up to this many bytes are stored in the item; larger ones in S3 (see above)
INLINE_BYTES = 8 * 1024
#: API.md: one chunk carries at most 64 KiB
MAX_CHUNK_BYTES = 64 * 1024
#: offsets and attempts as the API takes them: JSON integers stay exact below 2^53
MAX_POSITION = 2**53 - 1
_PREFIX = "OUT#"


@dataclass(frozen=True)
class Chunk:
    task_id: str
    node: str
    attempt: int
    #: where the chunk starts in the attempt's stream (bytes the agent had sent before it)
    offset: int
    #: bytes the agent sent (the stored text may differ when the service scrubbed it again)
    length: int
    #: sha-256 prefix of what the agent sent: a repeat is recognised by it
    digest: str
    #: the stored text, or None when it lives in S3 under `s3_key`
    data: str | None = None
    s3_key: str | None = None

    @property
    def end(self) -> int:
        return self.offset + self.length


def output_pk(task_id: str, node: str) -> str:
    return f"{_PREFIX}{task_id}#{part(node)}"


def chunk_sk(attempt: int, offset: int) -> str:
    return f"{attempt:05d}#{offset:012d}"


def digest(sent: str) -> str:
    return hashlib.sha256(sent.encode()).hexdigest()[:32]


def last_chunk(task_id: str, node: str, attempt: int) -> Chunk | None:
    """The chunk of the attempt with the highest offset (one strongly consistent read)."""
    answer = aws.client("dynamodb").query(
        TableName=config.table_name(), ConsistentRead=True, ScanIndexForward=False, Limit=1,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :attempt)",
        ExpressionAttributeValues={":pk": {"S": output_pk(task_id, node)}, ":attempt": {"S": f"{attempt:05d}#"}},
    )
    items = answer.get("Items", [])
    return from_item(items[0]) if items else None


def find(task_id: str, node: str, attempt: int, offset: int) -> Chunk | None:
    answer = aws.client("dynamodb").get_item(
        TableName=config.table_name(), ConsistentRead=True,
        Key={"pk": {"S": output_pk(task_id, node)}, "sk": {"S": chunk_sk(attempt, offset)}},
    )
    item = answer.get("Item")
    return from_item(item) if item else None


def put(chunk: Chunk, stored: str) -> bool:
    """Store `stored` (the scrubbed text of `chunk`) unless a chunk already starts at its offset.
    True when written, False when one was there. Large texts go to S3 first."""
    encoded = stored.encode()
    item: dict[str, Any] = {
        "pk": {"S": output_pk(chunk.task_id, chunk.node)}, "sk": {"S": chunk_sk(chunk.attempt, chunk.offset)},
        "task_id": {"S": chunk.task_id}, "node": {"S": chunk.node}, "attempt": {"N": str(chunk.attempt)},
        "offset": {"N": str(chunk.offset)}, "length": {"N": str(chunk.length)}, "digest": {"S": chunk.digest},
        "expires_at": {"N": str(int(clock.now_epoch()) + retention_seconds())},
    }
    if len(encoded) <= INLINE_BYTES:
        item["data"] = {"S": stored}
    else:
        key = s3_key(chunk)
        aws.client("s3").put_object(Bucket=config.outputs_bucket(), Key=key, Body=encoded,
                                    ContentType="text/plain; charset=utf-8")
        item["s3_key"] = {"S": key}
    try:
        aws.client("dynamodb").put_item(TableName=config.table_name(), Item=item,
                                        ConditionExpression="attribute_not_exists(sk)")
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return False
        raise
    return True


def page(task_id: str, node: str, attempt: int, offset: int, budget: int) -> tuple[list[Chunk], bool]:
    """The chunks of the attempt that hold bytes from `offset` on, in order, until about `budget`
    bytes; and whether the attempt's last stored chunk is among them."""
    client = aws.client("dynamodb")
    found: list[Chunk] = []
    if offset > 0:  # the chunk that holds `offset`, when it does not start there
        before = client.query(
            TableName=config.table_name(), ConsistentRead=True, ScanIndexForward=False, Limit=1,
            KeyConditionExpression="pk = :pk AND sk BETWEEN :low AND :high",
            ExpressionAttributeValues={":pk": {"S": output_pk(task_id, node)},
                                       ":low": {"S": f"{attempt:05d}#"}, ":high": {"S": chunk_sk(attempt, offset)}},
        ).get("Items", [])
        if before and from_item(before[0]).end > offset:
            found.append(from_item(before[0]))
    start: dict[str, Any] | None = None
    while sum(c.length for c in found) < budget:
        query: dict[str, Any] = {
            "TableName": config.table_name(), "ConsistentRead": True, "Limit": 64,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
            "ExpressionAttributeValues": {":pk": {"S": output_pk(task_id, node)},
                                          ":low": {"S": chunk_sk(attempt, max(offset, 0))},
                                          ":high": {"S": f"{attempt:05d}#~"}},
        }
        if start is not None:
            query["ExclusiveStartKey"] = start
        answer = client.query(**query)
        for raw in answer.get("Items", []):
            chunk = from_item(raw)
            if found and found[-1].offset == chunk.offset:
                continue
            if sum(c.length for c in found) >= budget:
                return found, False
            found.append(chunk)
        start = answer.get("LastEvaluatedKey")
        if start is None:
            return found, True
    return found, False


def text(chunk: Chunk) -> str:
    """The stored text of a chunk (one S3 GET when it is not inline)."""
    if chunk.data is not None:
        return chunk.data
    assert chunk.s3_key is not None
    body = aws.client("s3").get_object(Bucket=config.outputs_bucket(), Key=chunk.s3_key)["Body"].read()
    return bytes(body).decode("utf-8", errors="replace")


def from_item(item: dict[str, Any]) -> Chunk:
    """A chunk from its item, in DynamoDB's typed JSON (a query answer or a stream image)."""
    return Chunk(
        task_id=item["task_id"]["S"], node=item["node"]["S"], attempt=int(item["attempt"]["N"]),
        offset=int(item["offset"]["N"]), length=int(item["length"]["N"]), digest=item["digest"]["S"],
        data=item["data"]["S"] if "data" in item else None, s3_key=item["s3_key"]["S"] if "s3_key" in item else None,
    )


def is_output_key(pk: str) -> bool:
    return pk.startswith(_PREFIX)


def s3_key(chunk: Chunk) -> str:
    return f"outputs/live/{chunk.task_id}/{chunk.node}/{chunk.attempt}/{chunk.offset:012d}"


def retention_seconds() -> int:
    """API.md "Retention": outputs are kept FLEETRUN_RETENTION_DAYS. A chunk is written while its
    run runs, before the task ends: one day more covers a run's length."""
    return (config.retention_days() + 1) * 86400
