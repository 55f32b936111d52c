"""Counters maintained by the stream: a task's node counts and the statistics items.

One transaction per task per stream batch: the task's counters move together with the
statistics deltas of the same records, guarded by the last applied stream sequence number,
so a replayed batch changes nothing. Statistics items are sharded per task (no hot item)
and their attributes are dynamic (`st_<status>`, `ty_<type>`, `nr_<run status>`), hence
raw boto3 here rather than PynamoDB models.

A scope is `all`, `type:<type>`, `owner:<owner>` or `owner:<owner>|type:<type>`, and an hour
of one appends `|hour:<yyyy-mm-ddThh>`. Owner and type come from users (a JWT `sub`, a
`?type=` filter), so each goes through `key_parts.part`: a `sub` of `alice|type:shell` is a
scope of its own, never alice's shell figures. Writers and readers all build scopes with
`stats_scope` (and `scopes_of`, `hour_scope`), so the stream and the routes always agree.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from chalicelib import aws, config
from chalicelib.store.key_parts import part
from chalicelib.store.models import task_pk

STATS_SHARDS = 4
SEQ_WIDTH = 48


def padded_seq(sequence_number: str) -> str:
    """Stream sequence numbers are decimal strings of varying length: pad to compare them."""
    return sequence_number.rjust(SEQ_WIDTH, "0")


def stats_shard(task_id: str) -> str:
    return str(zlib.crc32(task_id.encode()) % STATS_SHARDS)


def stats_scope(owner: str | None = None, task_type: str | None = None) -> str:
    """The statistics scope of an owner's tasks, a type's, both, or (neither) all tasks."""
    named = [f"owner:{part(owner)}"] if owner else []
    named += [f"type:{part(task_type)}"] if task_type else []
    return "|".join(named) or "all"


def scopes_of(owner: str, task_type: str) -> tuple[str, ...]:
    """Every scope a task of `owner` and `task_type` counts in."""
    return (
        stats_scope(), stats_scope(task_type=task_type), stats_scope(owner=owner),
        stats_scope(owner=owner, task_type=task_type),
    )


def hour_of(timestamp: str) -> str:
    """The hourly bucket of an RFC 3339 UTC timestamp: `2026-11-22T18`."""
    return timestamp[:13]


def hour_scope(scope: str, hour: str) -> str:
    """The statistics scope of one hour of `scope` (tasks that reached a terminal status in it).

    An ordinary scope to `read_stats`, `list_scopes` and the reconcile job, so the hourly
    series obeys the same 'equal a recount' rule as the totals. `hour` comes from a timestamp
    the service wrote (`hour_of`), never from a user."""
    return f"{scope}|hour:{hour}"


@dataclass
class TaskDelta:
    """What one batch changes for one task."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    progress: int = 0
    stage: str | None = None
    #: set when runs finished: the concurrency window let more start at this time (claim timeouts)
    window_moved_at: str | None = None
    #: statistics attribute -> delta (same for every scope of the task)
    stats: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    #: hour (`hour_of`) -> statistics attribute -> delta, for the hourly scopes
    hourly: dict[str, dict[str, Decimal]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(Decimal)))

    def nonzero_counts(self) -> dict[str, int]:
        return {k: v for k, v in self.counts.items() if v}

    def nonzero_stats(self) -> dict[str, Decimal]:
        return {k: v for k, v in self.stats.items() if v}

    def nonzero_hourly(self) -> dict[str, dict[str, Decimal]]:
        found = {hour: {k: v for k, v in stats.items() if v} for hour, stats in self.hourly.items()}
        return {hour: stats for hour, stats in found.items() if stats}

    def is_empty(self) -> bool:
        return (
            not self.nonzero_counts() and not self.progress and not self.nonzero_stats()
            and not self.nonzero_hourly() and self.stage is None
        )


def _n(value: int | Decimal) -> dict[str, str]:
    return {"N": str(value)}


def apply_task_delta(
    task_id: str, owner: str, task_type: str, expected_seq: str, new_seq: str, delta: TaskDelta,
) -> None:
    """Apply a batch's delta to the task and its statistics scopes atomically.

    Raises botocore ClientError (TransactionCanceledException) when `expected_seq` is no
    longer the task's applied sequence (another processor got there first).
    """
    names: dict[str, str] = {"#seq": "applied_seq", "#p": "progress_sum"}
    values: dict[str, Any] = {":expected": {"S": expected_seq}, ":seq": {"S": new_seq}, ":dp": _n(delta.progress)}
    sets = ["#seq = :seq", "#p = #p + :dp"]
    for i, (status, amount) in enumerate(delta.nonzero_counts().items()):
        names["#c"] = "counts"
        names[f"#s{i}"] = status
        values[f":d{i}"] = _n(amount)
        sets.append(f"#c.#s{i} = #c.#s{i} + :d{i}")
    if delta.stage is not None:
        names["#stage"] = "stage"
        values[":stage"] = {"S": delta.stage}
        sets.append("#stage = :stage")
    if delta.window_moved_at is not None:
        names["#wm"] = "window_moved_at"
        values[":wm"] = {"S": delta.window_moved_at}
        sets.append("#wm = :wm")
    items: list[dict[str, Any]] = [
        {
            "Update": {
                "TableName": config.table_name(),
                "Key": {"pk": {"S": task_pk(task_id)}, "sk": {"S": "META"}},
                "UpdateExpression": "SET " + ", ".join(sets),
                "ConditionExpression": "#seq = :expected",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }
    ]
    shard = stats_shard(task_id)
    scopes = scopes_of(owner, task_type)
    items.extend(_stats_updates(scopes, shard, delta.nonzero_stats()))
    for hour, stats in sorted(delta.nonzero_hourly().items()):
        items.extend(_stats_updates([hour_scope(scope, hour) for scope in scopes], shard, stats))
    aws.client("dynamodb").transact_write_items(TransactItems=items)


def _stats_updates(scopes: Iterable[str], shard: str, stats: Mapping[str, Decimal]) -> list[dict[str, Any]]:
    if not stats:
        return []
    add_names = {f"#a{i}": attr for i, attr in enumerate(stats)}
    add_values = {f":v{i}": _n(amount) for i, amount in enumerate(stats.values())}
    expression = "ADD " + ", ".join(f"#a{i} :v{i}" for i in range(len(stats)))
    return [
        {
            "Update": {
                "TableName": config.table_name(),
                "Key": {"pk": {"S": f"STATS#{scope}"}, "sk": {"S": shard}},
                "UpdateExpression": expression,
                "ExpressionAttributeNames": add_names,
                "ExpressionAttributeValues": add_values,
            }
        }
        for scope in scopes
    ]


def read_stats(scope: str) -> dict[str, Decimal]:
    """Sum of a scope's shards: a constant number of items, however many tasks exist."""
    totals: dict[str, Decimal] = defaultdict(Decimal)
    response = aws.client("dynamodb").query(
        TableName=config.table_name(),
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"STATS#{scope}"}},
        ConsistentRead=True,
    )
    for item in response["Items"]:
        for name, value in item.items():
            if "N" in value:
                totals[name] += Decimal(value["N"])
    return dict(totals)


def read_many_stats(scopes: Sequence[str]) -> dict[str, dict[str, Decimal]]:
    """`read_stats` of several scopes in batched reads (100 keys a request), e.g. a day of hours."""
    client = aws.client("dynamodb")
    totals: dict[str, dict[str, Decimal]] = {scope: defaultdict(Decimal) for scope in scopes}
    keys = [
        {"pk": {"S": f"STATS#{scope}"}, "sk": {"S": str(shard)}} for scope in scopes for shard in range(STATS_SHARDS)
    ]
    for start in range(0, len(keys), 100):
        pending: dict[str, Any] = {config.table_name(): {"Keys": keys[start:start + 100], "ConsistentRead": True}}
        while pending:
            response = client.batch_get_item(RequestItems=pending)
            for item in response["Responses"].get(config.table_name(), []):
                scope_totals = totals[item["pk"]["S"].removeprefix("STATS#")]
                for name, value in item.items():
                    if "N" in value:
                        scope_totals[name] += Decimal(value["N"])
            pending = response.get("UnprocessedKeys") or {}
    return {scope: dict(values) for scope, values in totals.items()}


def adjust_stats(scope: str, deltas: Mapping[str, Decimal]) -> None:
    """Add a repair to a scope's shard 0 (used by the reconcile job)."""
    nonzero = {k: v for k, v in deltas.items() if v}
    if not nonzero:
        return
    aws.client("dynamodb").update_item(
        TableName=config.table_name(),
        Key={"pk": {"S": f"STATS#{scope}"}, "sk": {"S": "0"}},
        UpdateExpression="ADD " + ", ".join(f"#a{i} :v{i}" for i in range(len(nonzero))),
        ExpressionAttributeNames={f"#a{i}": k for i, k in enumerate(nonzero)},
        ExpressionAttributeValues={f":v{i}": _n(v) for i, v in enumerate(nonzero.values())},
    )


def list_scopes() -> list[str]:
    """Every statistics scope that exists (for the reconcile job)."""
    client = aws.client("dynamodb")
    scopes: set[str] = set()
    kwargs: dict[str, Any] = {
        "TableName": config.table_name(),
        "FilterExpression": "begins_with(pk, :p)",
        "ExpressionAttributeValues": {":p": {"S": "STATS#"}},
        "ProjectionExpression": "pk",
    }
    while True:
        page = client.scan(**kwargs)
        scopes.update(item["pk"]["S"].removeprefix("STATS#") for item in page["Items"])
        if "LastEvaluatedKey" not in page:
            return sorted(scopes)
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
