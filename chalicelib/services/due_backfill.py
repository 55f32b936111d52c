"""The due index for items written before it existed (one-time, bounded, with a continuation).

Tasks and runs written before the upgrade carry no due entry (domain/due.py). A run gets its
lease watch when it is claimed; a task gets its look at its next status change. What would be
missed: active tasks that change no more, and runs leased before the upgrade. So the sweeper
walks the active tasks once more, PAGE tasks a pass, with the walk's position kept in one item
(`SWEEP#due-backfill`):

1. every task without a due entry is made due for a look now, its lapsed leases and
   reservations are acted on the old way (one query of its runs), and the runs still held are
   watched (services/lease_watch.py);
2. a lease later, the same once more (a run claimed meanwhile under the old code);
3. the same once more for tables from before the lease watches (their leased runs had index
   entries, which the sweeper no longer reads); then the walk is done for good.

Once done, a pass costs one read of that item. A table created with the due index starts with
the walk done (fleetrun/local/provision.py). This is the only walk of the active-index left.
"""

from __future__ import annotations

import json
from typing import Any

from chalicelib import aws, clock, config
from chalicelib.domain import due
from chalicelib.observability import logger
from chalicelib.store import backend, tasks

#: active tasks visited per pass
PAGE = 25
_KEY = due.BACKFILL_KEY


def step(now: float, expire: Any) -> int:
    """One bounded step of the walk; `expire(task, now)` acts on a task's lapsed leases and
    reservations the old way. Returns the tasks visited (0 once done)."""
    if type(backend.current()).__name__ != "DynamoBackend":
        return 0  # the in-memory store of unit tests has no items from before
    ddb = aws.client("dynamodb")
    state = ddb.get_item(TableName=config.table_name(), Key=_KEY, ConsistentRead=True).get("Item", {})
    round_ = int(state.get("round", {}).get("N", "1"))
    if round_ >= due.BACKFILL_DONE_ROUND or now < float(state.get("not_before", {}).get("N", "0")):
        return 0
    query: dict[str, Any] = {
        "TableName": config.table_name(), "IndexName": "active-index", "Limit": PAGE,
        "KeyConditionExpression": "active_pk = :a", "ExpressionAttributeValues": {":a": {"S": "ACTIVE"}},
    }
    if "cursor" in state:
        query["ExclusiveStartKey"] = json.loads(state["cursor"]["S"])
    page = ddb.query(**query)
    visited = 0
    for key in page.get("Items", []):
        task = tasks.find(key["active_sk"]["S"])
        if task is None:
            continue
        visited += 1
        try:
            if round_ == 1:
                tasks.update_quietly(task, "schedule_look", clock.rfc3339(now), look_at=now)
            expire(task, now)
        except Exception:
            logger.exception("due backfill of a task failed; the look finds it later", extra={"task_id": task.task_id})
    _save(ddb, page.get("LastEvaluatedKey"), round_, now)
    return visited


def _save(ddb: Any, cursor: dict[str, Any] | None, round_: int, now: float) -> None:
    item: dict[str, Any] = {**_KEY, "round": {"N": str(round_ if cursor else round_ + 1)}}
    if cursor:
        item["cursor"] = {"S": json.dumps(cursor)}
    elif round_ == 1:  # the second round waits one lease
        item["not_before"] = {"N": str(int(now + config.lease_seconds() + 1))}
    if not cursor:
        logger.info("due index backfill round done", extra={"round": round_})
    ddb.put_item(TableName=config.table_name(), Item=item)
