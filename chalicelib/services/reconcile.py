"""The statistics reconcile, in bounded steps with a continuation (ARCHITECTURE.md invariant 9).

A pass recounts every task and compares each statistics scope with the recount, repairing
the drift (invariant 5). No step reads more than `TASK_CHUNK` tasks (plus their recounts)
or `SCOPE_CHUNK` scopes, whatever the table holds:

1. `start` (the nightly schedule) opens a pass in the state item (`RECONCILE`/`PASS`) and
   enqueues its first step on the dispatch queue (services/jobs.py `reconcile`).
2. A `tasks` step reads the next `TASK_CHUNK` tasks of the `list-index` `TASK` partition
   (oldest first, from the cursor in the state item), recounts the active ones from their
   runs (services/recount.py; at most `MAX_RECOUNTS_PER_STEP` tasks and about
   `MAX_RECOUNTED_RUNS_PER_STEP` runs, the step ends before the next; a task whose runs do not
   fit one job's read is left to the sweeper's recount in chunks), and ADDs their
   contributions to the pass's expected sums (`RECON#<pass>` / `<scope>`); the ADDs and the
   cursor move in one transaction guarded by the step number, so a redelivered or duplicated
   step adds nothing twice.
3. A `scopes` step reads the next `SCOPE_CHUNK` expected sums, the scopes' counters and what
   expired tasks left in them (`XSTATS#<scope>`, `tally_expired`), and ADDs the difference
   to the counters, again with the cursor in one guarded transaction.
4. Each step enqueues the next; the last marks the pass `done`. A pass whose chain broke (a
   crash between the transaction and the enqueue) is resumed by the next `start`.

Statistics keep counting expired tasks (API.md "Retention"): expected = the recount of the
tasks that exist + what the stream tallied of the expired ones, and hours older than
`retention - 1` days are not compared (their tasks may be gone; domain/retention.py).

Known limits: a scope that only the counters name (no live task, no tally) is not compared;
a task that changes while the pass runs can show up as drift, corrected by the next pass.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from botocore.exceptions import ClientError
from ulid import ULID

from chalicelib import aws, clock, config
from chalicelib.domain import retention
from chalicelib.domain.records import Task
from chalicelib.domain.statuses import TASK_FINISHED, TASK_TERMINAL
from chalicelib.observability import logger
from chalicelib.services import jobs
from chalicelib.services import recount as recount_runs
from chalicelib.store import counters, index_reads, retrying, tasks
from chalicelib.store.dynamo import task_record
from chalicelib.store.models import TTL_ATTRIBUTE, TaskItem

#: tasks one `tasks` step reads (two BatchGetItem requests, plus a recount of each active one)
TASK_CHUNK: Final = 200
#: active tasks one `tasks` step recounts from their runs (a query of the task's runs each), and
#: the runs those recounts read, about (their target counts): a step ends before the task that
#: would pass either, unless it is the step's first (a recount reads a task's runs at once)
MAX_RECOUNTS_PER_STEP: Final = 10
MAX_RECOUNTED_RUNS_PER_STEP: Final = 2_000
#: scopes one `scopes` step compares (their 4 shards each: one BatchGetItem of ≤ 100 keys)
SCOPE_CHUNK: Final = 24
#: scope items one transaction may ADD to (DynamoDB allows 100 items, one is the state)
MAX_SCOPES_PER_STEP: Final = 96
#: a pass not moved for this long is resumed by the next `start`
STALLED_SECONDS: Final = 600
_STATE_KEY: Final = {"pk": {"S": "RECONCILE"}, "sk": {"S": "PASS"}}
#: the expected sums of a pass are kept two days (a pass takes minutes)
_SUMS_TTL: Final = 2 * retention.DAY

Sums = dict[str, dict[str, Decimal]]


# --- what a task contributes -------------------------------------------------------------
def contribution(task: Task, now: float | None, *, hourly: bool = True) -> Sums:
    """scope -> statistic -> amount a task adds to the counters (the recount's rule, its month of
    creation's scope included; hourly scopes only for hours the reconcile compares at `now`,
    every hour when `now` is None, none with `hourly=False`)."""
    added: dict[str, Decimal] = defaultdict(Decimal)
    added["total"] += 1
    added[f"ty_{task.type}"] += 1
    added[f"st_{task.status}"] += 1
    for status, value in task.counts.items():  # every run status, terminal or not
        added[f"nr_{status}"] += Decimal(value)
    duration = _duration(task)
    if duration is not None:
        added["dur_sum"] += duration
        added["dur_n"] += 1
    sums: Sums = {scope: dict(added) for scope in counters.scopes_of(task.owner, task.type)}
    sums[counters.month_scope(task.owner, counters.month_of(task.created_at))] = {"created": Decimal(1)}
    if hourly and task.status in TASK_TERMINAL and task.completed_at:
        hour = counters.hour_of(task.completed_at)
        if now is None or retention.reconcilable_hour(hour, now):
            in_hour: dict[str, Decimal] = {f"st_{task.status}": Decimal(1)}
            if duration is not None:
                in_hour.update(dur_sum=duration, dur_n=Decimal(1))
            for scope in counters.scopes_of(task.owner, task.type):
                sums[counters.hour_scope(scope, hour)] = in_hour
    return sums


def _duration(task: Task) -> Decimal | None:
    if task.status not in TASK_FINISHED or not task.started_at or not task.completed_at:
        return None
    seconds = clock.parse_rfc3339(task.completed_at) - clock.parse_rfc3339(task.started_at)
    return Decimal(str(round(seconds, 3)))


def tally_expired(task_id: str, old_image: Mapping[str, Any] | None) -> None:
    """Remember what a task the TTL removed contributed to its scopes (not to hours: those are
    never compared once its tasks may be gone), once however often the record comes."""
    if not old_image:
        return
    task = task_record(TaskItem.from_raw_data(dict(old_image)))
    if not counters.add_expired(task_id, contribution(task, clock.now_epoch(), hourly=False), clock.now_epoch()):
        logger.info("expired task tallied before; replay ignored", extra={"task_id": task_id})


# --- the pass --------------------------------------------------------------------------------
def start() -> str:
    """Open a pass (or resume a stalled one) and enqueue its next step. Returns the pass id."""
    state = _read_state()
    now = clock.now_epoch()
    if state is not None and state["phase"] != "done":
        if now - clock.parse_rfc3339(state["updated_at"]) < STALLED_SECONDS:
            return str(state["pass_id"])  # its chain is moving
        jobs.enqueue_reconcile(state["pass_id"], int(state["step"]))
        return str(state["pass_id"])
    pass_id = str(ULID())
    item = {**_STATE_KEY, "pass_id": {"S": pass_id}, "phase": {"S": "tasks"}, "step": {"N": "0"},
            "cursor": {"S": ""}, "started_at": {"S": clock.now_iso()}, "updated_at": {"S": clock.now_iso()},
            "drift_scopes": {"N": "0"}}
    aws.client("dynamodb").put_item(TableName=config.table_name(), Item=item)
    jobs.enqueue_reconcile(pass_id, 0)
    return pass_id


def step(pass_id: str, number: int) -> tuple[int | None, Sums]:
    """Do step `number` of a pass. Returns the next step's number (None when the pass is done
    or this step is stale: done already, or of another pass) and the drift it repaired."""
    state = _read_state()
    if state is None or state["pass_id"] != pass_id or int(state["step"]) != number or state["phase"] == "done":
        logger.info("stale reconcile step; dropped", extra={"pass_id": pass_id, "step": number})
        return None, {}
    cursor = json.loads(state["cursor"]) if state["cursor"] else None
    if state["phase"] == "tasks":
        return _tasks_step(pass_id, number, cursor), {}
    return _scopes_step(pass_id, number, cursor)


def run_job(job: Mapping[str, Any]) -> None:
    """A `reconcile` job of the dispatch queue: do its step and enqueue the next."""
    pass_id, number = job.get("pass_id"), job.get("step")
    if not isinstance(pass_id, str) or not isinstance(number, int):
        logger.warning("malformed reconcile job; dropped", extra={"job": dict(job)})
        return
    following, _ = step(pass_id, number)
    if following is not None:
        jobs.enqueue_reconcile(pass_id, following)


def run_pass() -> Sums:
    """A whole pass in this process, step after step (tests, the local runtime's start, the CLI):
    the drift repaired, scope -> statistic -> amount."""
    pass_id = _open_pass_quietly()
    drift: Sums = {}
    number: int | None = 0
    while number is not None:
        number, repaired = step(pass_id, number)
        drift.update(repaired)
    return drift


def _open_pass_quietly() -> str:
    pass_id = str(ULID())
    now = clock.now_iso()
    item = {**_STATE_KEY, "pass_id": {"S": pass_id}, "phase": {"S": "tasks"}, "step": {"N": "0"},
            "cursor": {"S": ""}, "started_at": {"S": now}, "updated_at": {"S": now}, "drift_scopes": {"N": "0"}}
    aws.client("dynamodb").put_item(TableName=config.table_name(), Item=item)
    return pass_id


def _tasks_step(pass_id: str, number: int, cursor: dict[str, Any] | None) -> int | None:
    query: dict[str, Any] = {
        "TableName": config.table_name(), "IndexName": "list-index", "Limit": TASK_CHUNK,
        "KeyConditionExpression": "list_pk = :p", "ExpressionAttributeValues": {":p": {"S": "TASK"}},
    }
    if cursor:
        query["ExclusiveStartKey"] = cursor
    page = aws.client("dynamodb").query(**query)
    entries = [TaskItem.from_raw_data(raw) for raw in page.get("Items", [])]
    now = clock.now_epoch()
    sums: Sums = defaultdict(lambda: defaultdict(Decimal))
    next_cursor: dict[str, Any] | None = page.get("LastEvaluatedKey")
    previous: TaskItem | None = None
    recounts = recounted_runs = 0
    for item in index_reads.hydrate(TaskItem, entries):
        task = task_record(item)
        # a task whose runs do not fit one job's read is recounted by the sweeper's jobs, in chunks
        # (services/run_looks.py), as soon as its counters are quiet: never inside a step
        repairable = recount_runs.repairable(task) and recount_runs.in_one_read(task)
        if previous is not None and repairable and (
                recounts == MAX_RECOUNTS_PER_STEP
                or (recounts and recounted_runs + int(task.target_count) > MAX_RECOUNTED_RUNS_PER_STEP)):
            next_cursor = _list_key(previous)  # the rest waits for the next step
            break
        if repairable:
            recounts += 1
            recounted_runs += int(task.target_count)
            if recount_runs.repair(task):
                task = tasks.get(task.task_id)
        adds = contribution(task, now)
        if previous is not None and len(set(sums) | set(adds)) > MAX_SCOPES_PER_STEP:
            next_cursor = _list_key(previous)
            break
        previous = item
        for scope, amounts in adds.items():
            for name, amount in amounts.items():
                sums[scope][name] += amount
    expires = int(now) + _SUMS_TTL
    updates = [_add(f"RECON#{pass_id}", scope, amounts, expires) for scope, amounts in sorted(sums.items())]
    phase = "tasks" if next_cursor else "scopes"
    return number + 1 if _commit(updates, pass_id, number, phase, next_cursor, drift_scopes=0) else None


def _scopes_step(pass_id: str, number: int, cursor: dict[str, Any] | None) -> tuple[int | None, Sums]:
    query: dict[str, Any] = {
        "TableName": config.table_name(), "Limit": SCOPE_CHUNK, "ConsistentRead": True,
        "KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": f"RECON#{pass_id}"}},
    }
    if cursor:
        query["ExclusiveStartKey"] = cursor
    page = aws.client("dynamodb").query(**query)
    expected = {item["sk"]["S"]: _numbers(item) for item in page.get("Items", [])}
    actual = counters.read_many_stats(sorted(expected))
    tallied = counters.read_expired(sorted(s for s in expected if not counters.is_hour_scope(s)))
    drift: Sums = {}
    for scope, want in expected.items():
        for name, amount in tallied.get(scope, {}).items():
            want[name] = want.get(name, Decimal(0)) + amount
        have = actual.get(scope, {})
        diff = {name: want.get(name, Decimal(0)) - have.get(name, Decimal(0)) for name in set(want) | set(have)}
        diff = {name: value for name, value in diff.items() if value}
        if diff:
            drift[scope] = diff
    updates = [counters.repair_update(scope, diff) for scope, diff in sorted(drift.items())]
    updates += [listing for scope in sorted(drift) if (listing := counters.month_listing(scope)) is not None]
    next_cursor = page.get("LastEvaluatedKey")
    if not _commit(updates, pass_id, number, "scopes" if next_cursor else "done", next_cursor, drift_scopes=len(drift)):
        return None, {}
    if drift:
        logger.warning("statistics drift repaired", extra={
            "pass_id": pass_id, "drift": {s: {k: str(v) for k, v in d.items()} for s, d in drift.items()}})
    if not next_cursor:
        logger.info("statistics reconciled", extra={"pass_id": pass_id, "steps": number + 1})
        return None, drift
    return number + 1, drift


# --- storage -------------------------------------------------------------------------------
def _read_state() -> dict[str, Any] | None:
    item = aws.client("dynamodb").get_item(TableName=config.table_name(), Key=_STATE_KEY, ConsistentRead=True)
    found = item.get("Item")
    if not found:
        return None
    return {name: value.get("S", value.get("N")) for name, value in found.items()}


def _commit(updates: list[dict[str, Any]], pass_id: str, number: int, phase: str,
            cursor: Mapping[str, Any] | None, *, drift_scopes: int) -> bool:
    """The step's writes and the move of the state to the next step, atomically; a step already
    done (a duplicate job) fails the guard and writes nothing."""
    state = {"Update": {
        "TableName": config.table_name(), "Key": _STATE_KEY,
        "UpdateExpression": "SET #step = :next, #phase = :phase, #cursor = :cursor, updated_at = :now "
                            "ADD drift_scopes :drift",
        "ConditionExpression": "pass_id = :pass AND #step = :step",
        "ExpressionAttributeNames": {"#step": "step", "#phase": "phase", "#cursor": "cursor"},
        "ExpressionAttributeValues": {
            ":next": {"N": str(number + 1)}, ":step": {"N": str(number)}, ":phase": {"S": phase},
            ":cursor": {"S": json.dumps(cursor, sort_keys=True) if cursor else ""}, ":now": {"S": clock.now_iso()},
            ":pass": {"S": pass_id}, ":drift": {"N": str(drift_scopes)},
        },
    }}
    try:  # a conflict or a throttle wrote nothing: the same transaction again is safe (the guard)
        retrying.retry_writes(lambda: aws.client("dynamodb").transact_write_items(TransactItems=[*updates, state]))
    except ClientError as error:
        reasons = error.response.get("CancellationReasons") or []
        if reasons and reasons[-1].get("Code") == "ConditionalCheckFailed":
            return False  # a duplicate of this step did it first
        raise
    return True


def _add(pk: str, sk: str, amounts: Mapping[str, Decimal], expires: int) -> dict[str, Any]:
    names = {f"#a{i}": name for i, name in enumerate(amounts)}
    values: dict[str, Any] = {f":v{i}": {"N": str(amount)} for i, amount in enumerate(amounts.values())}
    names["#ttl"], values[":ttl"] = TTL_ATTRIBUTE, {"N": str(expires)}
    return {"Update": {
        "TableName": config.table_name(), "Key": {"pk": {"S": pk}, "sk": {"S": sk}},
        "UpdateExpression": "ADD " + ", ".join(f"#a{i} :v{i}" for i in range(len(amounts))) + " SET #ttl = :ttl",
        "ExpressionAttributeNames": names, "ExpressionAttributeValues": values,
    }}


def _numbers(item: Mapping[str, Any]) -> dict[str, Decimal]:
    return {name: Decimal(value["N"]) for name, value in item.items() if "N" in value and name != TTL_ATTRIBUTE}


def _list_key(item: TaskItem) -> dict[str, Any]:
    return {"pk": {"S": item.pk}, "sk": {"S": item.sk}, "list_pk": {"S": item.list_pk}, "list_sk": {"S": item.list_sk}}
