"""The fleet snapshot item and the per-node records of what it counted.

| item                 | pk              | sk          |
|----------------------|-----------------|-------------|
| snapshot             | SNAPSHOT#fleet  | META        | ns_<node status> (ADD), copied task/run figures, as_of
| counted node         | SNAPSHOT#fleet  | NODE#<id>   | counted (status), seq (last stream record applied)

Invariant: `ns_<s>` of the snapshot equals the number of counted-node items whose `counted`
is `s`; every write below moves both in one transaction. Attribute names are dynamic (any
node status counts), hence raw boto3 as in counters.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from botocore.exceptions import ClientError

from chalicelib import aws, config
from chalicelib.store.prefix_query import items_under

PK: Final = "SNAPSHOT#fleet"
META: Final = "META"
NODE_COUNT_PREFIX: Final = "ns_"
#: a counted-node item of a deleted node outlives the stream's 24 h retention, then expires
REMOVED_TTL_SECONDS: Final = 2 * 86_400
#: TransactWriteItems takes 100 items: the snapshot plus 99 nodes
NODES_PER_TRANSACTION: Final = 99


@dataclass(frozen=True)
class Counted:
    """What the snapshot counted for one node: its status (None: not counted) and last record."""

    node_id: str
    status: str | None
    seq: str | None
    exists: bool


@dataclass(frozen=True)
class Recount:
    """Move one node from `before` to `after` (None: not counted), if it is still `before`."""

    before: Counted
    after: str | None
    seq: str | None
    expires_at: int | None = None


def node_sk(node_id: str) -> str:
    return f"NODE#{node_id}"


def get() -> dict[str, Any] | None:
    """The snapshot item (one eventually consistent GetItem), or None before its first write."""
    answer = aws.client("dynamodb").get_item(TableName=config.table_name(), Key=_key(META))
    item: dict[str, Any] | None = answer.get("Item")
    return item


def node_counts(item: Mapping[str, Any]) -> dict[str, int]:
    return {name.removeprefix(NODE_COUNT_PREFIX): int(Decimal(value["N"]))
            for name, value in item.items() if name.startswith(NODE_COUNT_PREFIX) and "N" in value}


def number(item: Mapping[str, Any] | None, name: str) -> Decimal | None:
    if not item or name not in item or "N" not in item[name]:
        return None
    return Decimal(item[name]["N"])


def save_figures(figures: Mapping[str, int], as_of: float) -> bool:
    """Store copied figures as of `as_of` unless a newer copy is there. False when one was."""
    names = {f"#f{i}": name for i, name in enumerate(figures)} | {"#as_of": "as_of"}
    values = {f":f{i}": _n(value) for i, value in enumerate(figures.values())} | {":as_of": _n(Decimal(str(as_of)))}
    sets = [f"#f{i} = :f{i}" for i in range(len(figures))] + ["#as_of = :as_of"]
    try:
        aws.client("dynamodb").update_item(
            TableName=config.table_name(), Key=_key(META), UpdateExpression="SET " + ", ".join(sets),
            ConditionExpression="attribute_not_exists(#as_of) OR #as_of < :as_of",
            ExpressionAttributeNames=names, ExpressionAttributeValues=values,
        )
    except ClientError as error:
        if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise
    return True


def counted(node_ids: Iterable[str]) -> dict[str, Counted]:
    """What is counted for each node (strongly consistent BatchGetItem, 100 keys a call)."""
    ids = list(dict.fromkeys(node_ids))
    found: dict[str, Counted] = {node_id: Counted(node_id, None, None, False) for node_id in ids}
    client = aws.client("dynamodb")
    for start in range(0, len(ids), 100):
        keys: list[dict[str, Any]] = [_key(node_sk(node_id)) for node_id in ids[start:start + 100]]
        while keys:
            answer = client.batch_get_item(
                RequestItems={config.table_name(): {"Keys": keys, "ConsistentRead": True}},
            )
            for item in answer["Responses"].get(config.table_name(), []):
                record = _counted(item)
                found[record.node_id] = record
            keys = answer.get("UnprocessedKeys", {}).get(config.table_name(), {}).get("Keys", [])
    return found


def all_counted() -> Iterator[Counted]:
    """Every counted-node item (the repair job only: its cost grows with the fleet)."""
    return (_counted(item) for item in items_under(PK, "NODE#"))


def apply(recounts: list[Recount]) -> None:
    """Move the nodes and the snapshot's counts together, in transactions of 99 nodes.

    Each node item is conditioned on what was read (`before`), so a concurrent writer makes
    the transaction fail (ClientError TransactionCanceledException): re-read and retry.
    """
    for start in range(0, len(recounts), NODES_PER_TRANSACTION):
        chunk = recounts[start:start + NODES_PER_TRANSACTION]
        deltas: dict[str, int] = defaultdict(int)
        for recount in chunk:
            if recount.before.status != recount.after:
                if recount.before.status is not None:
                    deltas[recount.before.status] -= 1
                if recount.after is not None:
                    deltas[recount.after] += 1
        items = [{"Update": _node_update(recount)} for recount in chunk]
        nonzero = {status: amount for status, amount in deltas.items() if amount}
        if nonzero:
            items.append({"Update": {
                "TableName": config.table_name(), "Key": _key(META),
                "UpdateExpression": "ADD " + ", ".join(f"#s{i} :d{i}" for i in range(len(nonzero))),
                "ExpressionAttributeNames": {f"#s{i}": NODE_COUNT_PREFIX + s for i, s in enumerate(nonzero)},
                "ExpressionAttributeValues": {f":d{i}": _n(d) for i, d in enumerate(nonzero.values())},
            }})
        aws.client("dynamodb").transact_write_items(TransactItems=items)


def _node_update(recount: Recount) -> dict[str, Any]:
    before = recount.before
    names: dict[str, str] = {"#c": "counted", "#seq": "seq", "#ttl": "expires_at", "#node": "node_id"}
    values: dict[str, Any] = {":node": {"S": before.node_id}}
    sets, removes = ["#node = :node"], []
    if recount.after is None:
        removes.append("#c")
    else:
        sets.append("#c = :after")
        values[":after"] = {"S": recount.after}
    if recount.seq is not None:
        sets.append("#seq = :seq")
        values[":seq"] = {"S": recount.seq}
    if recount.expires_at is not None:
        sets.append("#ttl = :ttl")
        values[":ttl"] = _n(recount.expires_at)
    else:
        removes.append("#ttl")
    if not before.exists:
        condition = "attribute_not_exists(pk)"
    else:
        condition = "#seq = :was_seq" if before.seq is not None else "attribute_not_exists(#seq)"
        condition += " AND " + ("#c = :was" if before.status is not None else "attribute_not_exists(#c)")
        if before.seq is not None:
            values[":was_seq"] = {"S": before.seq}
        if before.status is not None:
            values[":was"] = {"S": before.status}
    expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
    used = expression + " " + condition  # DynamoDB rejects placeholders an expression does not use
    return {
        "TableName": config.table_name(), "Key": _key(node_sk(before.node_id)), "UpdateExpression": expression,
        "ConditionExpression": condition,
        "ExpressionAttributeNames": {k: v for k, v in names.items() if k in used},
        "ExpressionAttributeValues": values,
    }


def _counted(item: Mapping[str, Any]) -> Counted:
    return Counted(
        item["sk"]["S"].removeprefix("NODE#"),
        item["counted"]["S"] if "counted" in item else None,
        item["seq"]["S"] if "seq" in item else None,
        True,
    )


def _key(sk: str) -> dict[str, Any]:
    return {"pk": {"S": PK}, "sk": {"S": sk}}


def _n(value: int | Decimal) -> dict[str, str]:
    return {"N": str(value)}
