"""Counters maintained by the stream: a task's node counts and the statistics items.

One transaction per task per stream batch: the task's counters move together with the
statistics deltas of the same records and the marks that say which writes are counted (one
number per run, in marker items under the task's key or, for a sharded task, spread over its
run partitions: `marker_pk`), so a replayed or late record changes
nothing, in any order. Statistics items are sharded per task (no hot item)
and their attributes are dynamic (`st_<status>`, `ty_<type>`, `nr_<run status>`), hence
raw boto3 here rather than PynamoDB models.

A scope is `all`, `type:<type>`, `owner:<owner>` or `owner:<owner>|type:<type>`, and an hour
of one appends `|hour:<yyyy-mm-ddThh>`. `owner:<owner>|month:<yyyy-mm>` counts the tasks the
owner created in a month (`created`: the usage report's figure, services/usage.py); the owners
of a month are listed under `USAGE#<yyyy-mm>` (an idempotent write just before the transaction:
a listed owner whose count failed shows 0 tasks until the replay counts them).

Owner and type come from users (a JWT `sub`, a `?type=` filter), so each goes through
`key_parts.part`: a `sub` of `alice|type:shell` is a scope of its own, never alice's shell
figures. Writers and readers all build scopes with `stats_scope` (and `scopes_of`,
`hour_scope`, `month_scope`), so the stream and the routes always agree.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import aws, clock, config
from chalicelib.domain import retention
from chalicelib.store import run_partitions
from chalicelib.store.key_parts import part, whole
from chalicelib.store.models import TTL_ATTRIBUTE, task_pk
from chalicelib.store.prefix_query import items_under

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


def month_of(timestamp: str) -> str:
    """The month of an RFC 3339 UTC timestamp: `2026-11`."""
    return timestamp[:7]


def month_scope(owner: str, month: str) -> str:
    """The scope counting the tasks `owner` created in `month` (`month_of`, from a timestamp the
    service wrote): a `created` figure."""
    return f"{stats_scope(owner=owner)}|month:{month}"


def hour_of(timestamp: str) -> str:
    """The hourly bucket of an RFC 3339 UTC timestamp: `2026-11-22T18`."""
    return timestamp[:13]


def hour_scope(scope: str, hour: str) -> str:
    """The statistics scope of one hour of `scope` (tasks that reached a terminal status in it).

    An ordinary scope to `read_stats` and the reconcile job, so the hourly
    series obeys the same 'equal a recount' rule as the totals. `hour` comes from a timestamp
    the service wrote (`hour_of`), never from a user."""
    return f"{scope}|hour:{hour}"


@dataclass
class TaskDelta:
    """What one batch changes for one task."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    progress: int = 0
    stage: str | None = None
    #: when the run that entered `stage` wrote it (records of runs come in any order)
    stage_at: str | None = None
    #: set when runs finished: the concurrency window let more start at this time (claim timeouts)
    window_moved_at: str | None = None
    #: statistics attribute -> delta (same for every scope of the task)
    stats: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    #: hour (`hour_of`) -> statistics attribute -> delta, for the hourly scopes
    hourly: dict[str, dict[str, Decimal]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(Decimal)))
    #: month (`month_of` its `created_at`) -> tasks created in it, for the owner's month scope
    created: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def nonzero_counts(self) -> dict[str, int]:
        return {k: v for k, v in self.counts.items() if v}

    def nonzero_stats(self) -> dict[str, Decimal]:
        return {k: v for k, v in self.stats.items() if v}

    def nonzero_hourly(self) -> dict[str, dict[str, Decimal]]:
        found = {hour: {k: v for k, v in stats.items() if v} for hour, stats in self.hourly.items()}
        return {hour: stats for hour, stats in found.items() if stats}

    def nonzero_created(self) -> dict[str, int]:
        return {month: n for month, n in self.created.items() if n}

    def is_empty(self) -> bool:
        return (
            not self.nonzero_counts() and not self.progress and not self.nonzero_stats()
            and not self.nonzero_hourly() and not self.nonzero_created() and self.stage is None
        )


def _n(value: int | Decimal) -> dict[str, str]:
    return {"N": str(value)}


#: runs per marker item: a run's ordinal picks its item (runs claimed together sit together)
MARKER_BUCKET = 128
#: the most marker items one counter transaction writes (DynamoDB's limit is 100 items in all)
MAX_MARKER_ITEMS = 80


def marker_sk(ordinal: int) -> str:
    """The item under the task's key that remembers which writes of runs are counted."""
    return f"CNT#{ordinal // MARKER_BUCKET}"


def marker_name(node: str) -> str:
    return f"n#{node}"


def _shards(task_id: str) -> int:
    """The S the task was created with: its marks stay where they were put when it grows."""
    from chalicelib.store.dynamo import run_layout  # PynamoDB: only where marks are written or read

    return run_layout(task_id).first


def marker_pk(task_id: str, sk: str) -> str:
    """The partition of a marker item: the task's own, or for a task whose runs are sharded
    (store/run_partitions.py) the run partition its bucket number picks, so that the marks a
    batch writes (one item per bucket, as many as before) never all land on one key."""
    shards = _shards(task_id)
    if shards <= 1:
        return task_pk(task_id)
    return run_partitions.shard_pk(task_id, int(sk.removeprefix("CNT#")) % shards)


def apply_task_delta(
    task_id: str, owner: str, task_type: str, delta: TaskDelta, *,
    markers: Mapping[str, Mapping[str, int]], stats_ver: int | None, now: str,
) -> None:
    """Apply the delta of some stream records to the task and its statistics scopes, atomically
    with the marks that make each record count once.

    `markers` is marker item (`marker_sk`) -> node -> the `ver` of the run's newest counted write;
    each is written on condition that it is newer than the stored one. `stats_ver` (the `ver` of
    the newest task write among the records, when one changed the statistics) likewise. Raises
    botocore ClientError (TransactionCanceledException) when a record was counted meanwhile
    (ConditionalCheckFailed) or another transaction wrote one of the items (TransactionConflict).
    """
    names: dict[str, str] = {"#cv": "counted_ver", "#p": "progress_sum", "#ca": "counted_at"}
    values: dict[str, Any] = {":one": _n(1), ":dp": _n(delta.progress), ":now": {"S": now}}
    sets = ["#p = #p + :dp", "#ca = :now"]
    condition = "attribute_exists(pk)"
    if stats_ver is not None:
        names["#sv"] = "stats_ver"
        values[":sv"] = _n(stats_ver)
        sets.append("#sv = :sv")
        condition += " AND (attribute_not_exists(#sv) OR #sv < :sv)"
    for i, (status, amount) in enumerate(delta.nonzero_counts().items()):
        names["#c"] = "counts"
        names[f"#s{i}"] = status
        values[f":d{i}"] = _n(amount)
        sets.append(f"#c.#s{i} = #c.#s{i} + :d{i}")
    if delta.stage is not None:
        names["#stage"], names["#stage_at"] = "stage", "stage_at"
        values[":stage"], values[":stage_at"] = {"S": delta.stage}, {"S": delta.stage_at or now}
        sets += ["#stage = :stage", "#stage_at = :stage_at"]
        # never over a step entered later (the aggregator reads again and drops this one)
        condition += " AND (attribute_not_exists(#stage_at) OR #stage_at <= :stage_at)"
    if delta.window_moved_at is not None:
        names["#wm"] = "window_moved_at"
        values[":wm"] = {"S": delta.window_moved_at}
        sets.append("#wm = :wm")
    items: list[dict[str, Any]] = [
        {
            "Update": {
                "TableName": config.table_name(),
                "Key": {"pk": {"S": task_pk(task_id)}, "sk": {"S": "META"}},
                "UpdateExpression": "SET " + ", ".join(sets) + " ADD #cv :one",
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }
    ]
    items.extend(_marker_updates(task_id, markers))
    shard = stats_shard(task_id)
    scopes = scopes_of(owner, task_type)
    items.extend(_stats_updates(scopes, shard, delta.nonzero_stats()))
    for hour, stats in sorted(delta.nonzero_hourly().items()):
        items.extend(_stats_updates([hour_scope(scope, hour) for scope in scopes], shard, stats,
                                    expires_at=retention.hour_expiry(hour)))
    for month, created in sorted(delta.nonzero_created().items()):
        items.extend(_stats_updates([month_scope(owner, month)], shard, {"created": Decimal(created)}))
        if created > 0:  # listed first, outside the transaction: a busy owner's batches never conflict on it
            _list_month_owner(month, owner)
    aws.client("dynamodb").transact_write_items(TransactItems=items)


#: the partition listing the owners who created tasks in a month (`USAGE#<yyyy-mm>`, one item each)
USAGE_PREFIX = "USAGE#"


#: (table, month, owner) this container has listed: the listing is one item written once, so the
#: month's partition takes a write per owner and container, not per batch that creates tasks
_listed: set[tuple[str, str, str]] = set()
_LISTED_MAX = 10_000


def _list_month_owner(month: str, owner: str) -> None:
    key = (config.table_name(), month, owner)
    if key in _listed:
        return
    aws.client("dynamodb").update_item(**_month_owner(month, owner)["Update"])
    if len(_listed) >= _LISTED_MAX:
        _listed.clear()
    _listed.add(key)


def forget_listed() -> None:
    """Tests reuse owner names across fresh tables."""
    _listed.clear()


def _month_owner(month: str, owner: str) -> dict[str, Any]:
    """The write listing `owner` among the month's (idempotent: the same item every time; a
    transaction item for the reconcile, else sent alone)."""
    return {"Update": {
        "TableName": config.table_name(),
        "Key": {"pk": {"S": f"{USAGE_PREFIX}{month}"}, "sk": {"S": part(owner)}},
        "UpdateExpression": "SET #o = :o", "ExpressionAttributeNames": {"#o": "owner"},
        "ExpressionAttributeValues": {":o": {"S": owner}},
    }}


#: the first month whose every task the month scopes count (services/usage.py): a new table's
#: first month (fleetrun/local/provision.py), else the month after the stream first counted one
USAGE_SINCE_KEY = {"pk": {"S": f"{USAGE_PREFIX}SINCE"}, "sk": {"S": "META"}}
_since_noted = False


def usage_since_item(month: str) -> dict[str, dict[str, str]]:
    return {**USAGE_SINCE_KEY, "month": {"S": month}}


def note_usage_counted(following: str) -> None:
    """Say, once, that the month scopes count every task from `following` on, the month after
    the first count (the tasks of the current month before it were not counted). Idempotent; a
    failure is logged by the caller and tried again at the next count."""
    global _since_noted
    if _since_noted:
        return
    try:
        aws.client("dynamodb").put_item(TableName=config.table_name(), Item=usage_since_item(following),
                                        ConditionExpression="attribute_not_exists(pk)")
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
    _since_noted = True


def usage_counted_since() -> str | None:
    """The first month the month scopes count in full (`USAGE_SINCE_KEY`), None before any count."""
    item = aws.client("dynamodb").get_item(TableName=config.table_name(), Key=USAGE_SINCE_KEY,
                                           ConsistentRead=True).get("Item")
    return str(item["month"]["S"]) if item else None


def month_owners(month: str) -> list[str]:
    """Every owner who created a task in `month` that the stream has counted: one query, a page
    per ~20,000 owners."""
    pages = aws.client("dynamodb").get_paginator("query").paginate(
        TableName=config.table_name(), KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"{USAGE_PREFIX}{month}"}}, ProjectionExpression="#o",
        ExpressionAttributeNames={"#o": "owner"},
    )
    return [item["owner"]["S"] for page in pages for item in page["Items"]]


def _marker_updates(task_id: str, markers: Mapping[str, Mapping[str, int]]) -> list[dict[str, Any]]:
    """The writes of marks; each marker item expires like the run writes it marks (a mark is
    read only while a record of a run it counts can still come: domain/retention.py)."""
    updates = []
    expires = retention.item_expiry(clock.now_epoch())
    for sk, vers in sorted(markers.items()):
        names = {f"#n{i}": marker_name(node) for i, node in enumerate(vers)}
        names["#ttl"] = TTL_ATTRIBUTE
        values = {f":v{i}": _n(ver) for i, ver in enumerate(vers.values())}
        values[":ttl"] = _n(expires)
        updates.append({
            "Update": {
                "TableName": config.table_name(),
                "Key": {"pk": {"S": marker_pk(task_id, sk)}, "sk": {"S": sk}},
                "UpdateExpression": "SET " + ", ".join(f"#n{i} = :v{i}" for i in range(len(vers))) + ", #ttl = :ttl",
                "ConditionExpression": " AND ".join(
                    f"(attribute_not_exists(#n{i}) OR #n{i} < :v{i})" for i in range(len(vers))),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        })
    return updates


def replace_counts(
    task_id: str, owner: str, task_type: str, *, counted_ver: int, attempt: int,
    counts: Mapping[str, int], progress_sum: int, run_stats: Mapping[str, Decimal],
    markers: Mapping[str, Mapping[str, int]], now: str,
) -> None:
    """Set a task's counts to a recount from its runs, with the statistics moved by the same
    difference and each run's mark set to the write it was recounted at, atomically; on
    condition that no counter write came in between (`counted_ver`) and no retry started.
    Raises botocore ClientError (TransactionCanceledException) otherwise."""
    names = {"#cv": "counted_ver", "#p": "progress_sum", "#rc": "recounted_at", "#at": "attempt", "#c": "counts"}
    values: dict[str, Any] = {":cv": _n(counted_ver), ":one": _n(1), ":p": _n(progress_sum), ":now": {"S": now},
                              ":at": _n(attempt)}
    sets = ["#p = :p", "#rc = :now"]
    for i, (status, amount) in enumerate(sorted(counts.items())):
        names[f"#s{i}"] = status
        values[f":c{i}"] = _n(amount)
        sets.append(f"#c.#s{i} = :c{i}")
    items: list[dict[str, Any]] = [{
        "Update": {
            "TableName": config.table_name(),
            "Key": {"pk": {"S": task_pk(task_id)}, "sk": {"S": "META"}},
            "UpdateExpression": "SET " + ", ".join(sets) + " ADD #cv :one",
            "ConditionExpression": "#cv = :cv AND #at = :at",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
    }]
    for sk, vers in sorted(markers.items()):
        update = _marker_updates(task_id, {sk: vers})[0]["Update"]
        del update["ConditionExpression"]  # the task's counted_ver guards every mark
        items.append({"Update": update})
    items.extend(_stats_updates(scopes_of(owner, task_type), stats_shard(task_id),
                                {k: v for k, v in run_stats.items() if v}))
    aws.client("dynamodb").transact_write_items(TransactItems=items)


def stamp_recount(task_id: str, now: str) -> None:
    """Note that a recount found the counts right (the sweeper looks again a grace period later)."""
    aws.client("dynamodb").update_item(
        TableName=config.table_name(), Key={"pk": {"S": task_pk(task_id)}, "sk": {"S": "META"}},
        UpdateExpression="SET recounted_at = :now", ConditionExpression="attribute_exists(pk)",
        ExpressionAttributeValues={":now": {"S": now}},
    )


def read_all_markers(task_id: str) -> dict[str, dict[str, int]]:
    """Every marker item of a task (recounts only): its partition's, or each run partition's."""
    markers: dict[str, dict[str, int]] = {}
    for pk in run_partitions.run_pks(task_id, _shards(task_id)):  # where `marker_pk` puts them
        for item in items_under(pk, "CNT#"):
            markers[item["sk"]["S"]] = {
                name.removeprefix("n#"): int(value["N"]) for name, value in item.items() if name.startswith("n#")}
    return markers


def read_markers(task_id: str, marker_sks: Iterable[str]) -> tuple[dict[str, Any] | None, dict[str, dict[str, int]]]:
    """The task item (raw, consistent) and the marks of the given marker items, in one request."""
    keys = [{"pk": {"S": task_pk(task_id)}, "sk": {"S": "META"}}]
    keys += [{"pk": {"S": marker_pk(task_id, sk)}, "sk": {"S": sk}} for sk in sorted(set(marker_sks))]
    found: dict[str, dict[str, Any]] = {}
    client = aws.client("dynamodb")
    for start in range(0, len(keys), 100):
        pending: dict[str, Any] = {config.table_name(): {"Keys": keys[start:start + 100], "ConsistentRead": True}}
        while pending:
            response = client.batch_get_item(RequestItems=pending)
            for item in response["Responses"].get(config.table_name(), []):
                found[item["sk"]["S"]] = item
            pending = response.get("UnprocessedKeys") or {}
    markers = {
        sk: {name.removeprefix("n#"): int(value["N"]) for name, value in item.items() if name.startswith("n#")}
        for sk, item in found.items() if sk != "META"
    }
    return found.get("META"), markers


def _stats_updates(scopes: Iterable[str], shard: str, stats: Mapping[str, Decimal], *,
                   expires_at: int | None = None) -> list[dict[str, Any]]:
    """ADDs of `stats` to a shard of each scope; `expires_at` (hourly scopes: domain/retention.py)
    sets the items' TTL too."""
    if not stats:
        return []
    add_names = {f"#a{i}": attr for i, attr in enumerate(stats)}
    add_values = {f":v{i}": _n(amount) for i, amount in enumerate(stats.values())}
    expression = "ADD " + ", ".join(f"#a{i} :v{i}" for i in range(len(stats)))
    if expires_at is not None:
        add_names["#ttl"], add_values[":ttl"] = TTL_ATTRIBUTE, _n(expires_at)
        expression += " SET #ttl = :ttl"
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
            if "N" in value and name != TTL_ATTRIBUTE:  # an hourly scope's expiry is no figure
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
                    if "N" in value and name != TTL_ATTRIBUTE:
                        scope_totals[name] += Decimal(value["N"])
            pending = response.get("UnprocessedKeys") or {}
    return {scope: dict(values) for scope, values in totals.items()}


def is_hour_scope(scope: str) -> bool:
    return "|hour:" in scope


def _expiry_of(scope: str) -> int | None:
    """An hourly scope's TTL (its items expire; domain/retention.py), None for the others."""
    return retention.hour_expiry(scope.rpartition("|hour:")[2]) if is_hour_scope(scope) else None


_MONTH_SCOPE = re.compile(r"^owner:([^|]*)\|month:(\d{4}-\d{2})$")


def month_listing(scope: str) -> dict[str, Any] | None:
    """For a month scope (`month_scope`), the write listing its owner among the month's (the
    reconcile repairs a scope whose count the stream never made into being); else None."""
    found = _MONTH_SCOPE.match(scope)
    return _month_owner(found.group(2), whole(found.group(1))) if found else None


def repair_update(scope: str, deltas: Mapping[str, Decimal]) -> dict[str, Any]:
    """A transaction item adding a repair to a scope's shard 0 (the reconcile, services/reconcile.py)."""
    nonzero = {k: v for k, v in deltas.items() if v}
    [update] = _stats_updates([scope], "0", nonzero, expires_at=_expiry_of(scope))
    return update


#: what expired tasks contributed to a scope (API.md "Retention"): `XSTATS#<scope>` / `0`
EXPIRED_SK = "0"
#: the mark that a task's expiry is tallied (a replayed stream record adds nothing), kept two days
EXPIRED_MARK_SK = "EXPIRED"


def add_expired(task_id: str, sums: Mapping[str, Mapping[str, Decimal]], now: float) -> bool:
    """Tally what an expired task contributed to each scope (`sums`: scope -> statistic -> amount),
    once per task (a mark under its key). False when it was tallied before."""
    mark = {"Put": {
        "TableName": config.table_name(),
        "Item": {"pk": {"S": task_pk(task_id)}, "sk": {"S": EXPIRED_MARK_SK},
                 TTL_ATTRIBUTE: _n(int(now) + 2 * retention.DAY)},
        "ConditionExpression": "attribute_not_exists(pk)",
    }}
    items = [mark]
    for scope, amounts in sorted(sums.items()):
        [update] = _stats_updates([scope], EXPIRED_SK, {k: v for k, v in amounts.items() if v})
        update["Update"]["Key"]["pk"] = {"S": f"XSTATS#{scope}"}
        items.append(update)
    try:
        aws.client("dynamodb").transact_write_items(TransactItems=items)
    except ClientError as error:
        reasons = error.response.get("CancellationReasons") or []
        if any(r.get("Code") == "ConditionalCheckFailed" for r in reasons):
            return False
        raise
    return True


def read_expired(scopes: Sequence[str]) -> dict[str, dict[str, Decimal]]:
    """What expired tasks contributed to each of `scopes` (≤ 100 a request)."""
    client = aws.client("dynamodb")
    found: dict[str, dict[str, Decimal]] = {}
    keys = [{"pk": {"S": f"XSTATS#{scope}"}, "sk": {"S": EXPIRED_SK}} for scope in scopes]
    for start in range(0, len(keys), 100):
        pending: dict[str, Any] = {config.table_name(): {"Keys": keys[start:start + 100], "ConsistentRead": True}}
        while pending:
            response = client.batch_get_item(RequestItems=pending)
            for item in response["Responses"].get(config.table_name(), []):
                found[item["pk"]["S"].removeprefix("XSTATS#")] = {
                    name: Decimal(value["N"]) for name, value in item.items() if "N" in value}
            pending = response.get("UnprocessedKeys") or {}
    return found


def adjust_stats(scope: str, deltas: Mapping[str, Decimal]) -> None:
    """Add `deltas` to a scope's shard 0 outside the stream (tests make drift with it; the
    reconcile repairs in its own transaction, `repair_update`)."""
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
