"""What one node run costs: AWS requests, DynamoDB capacity units and dollars, next to Step Functions.

Run from the repository root:  .venv/bin/python bench/requests.py [--json] [--nodes N] [--stats-tasks N]

Scenario (moto in-process, the real `app.py` driven by `tests.harness.Fleet`)
  Register N nodes (default 1,000; not counted), then count: K `slurm.scale_up` tasks (3 steps;
  --runs-per-node, default 2) each submitted to every node with max_concurrency 1000; each node
  does what the agent does (fleetrun/agent/batching.py): one claim (max K) for its K runs, then one
  `POST /v1/agents/{node}/report` with their K completions, each with its 3 step events; the stream
  and the dispatch queue are settled after the submits, every 100 nodes and at the end. The tasks
  must end `completed` and the statistics must count them, or the bench exits 1. Per-node-run
  figures are the counted totals / (N x K). `--runs-per-node 1` is the one-run-per-node case (claim
  + report: the request count of the single routes' claim + complete). Reading the tasks and the
  statistics to verify is not counted.

How requests are counted
  Two botocore event handlers are appended to `botocore.handlers.BUILTIN_HANDLERS` before any
  botocore session exists, so every session carries them: boto3's, chalicelib.aws's, PynamoDB's
  own per-thread sessions and the pumps' clients.
  - `before-parameter-build`: adds ReturnConsumedCapacity=INDEXES to every DynamoDB data call and
    snapshots the items a write is about to change;
  - `after-call`: counts the request by service, operation and caller, and prices it.
  The caller is the API route being served (`api:claim`, `api:complete`, `api:submit`), the stream
  handler (`stream`), the dispatch-queue handler (`sqs`), or the event source mapping (`esm`: the
  pumps' own polling, which on AWS is Lambda's poller).

How capacity units are computed (printed as method "model")
  moto returns ConsumedCapacity when asked, but as constants: 1.0 for PutItem, DeleteItem, Query
  and Scan, 0.5 for UpdateItem and GetItem, nothing for TransactWriteItems, and never index units.
  Those figures are summed and printed as "moto-reported" for comparison only. The bench's own
  figures come from the items, read from moto's in-memory table right before and after each write
  (no extra AWS request), priced with DynamoDB's published rules:
  - item size: attribute-name bytes + value bytes (strings UTF-8; numbers 1 byte per 2 significant
    digits + 1; lists and maps 3 bytes + 1 per element + contents; booleans and nulls 1 byte);
  - PutItem/UpdateItem: 1 write unit per started KB of the larger of the item before and after;
    DeleteItem: of the deleted item; a failed conditional write: of the existing item, at least 1;
  - transactions: 2x per item on the table (index propagation counted as standard writes);
    a cancelled transaction is charged like failed conditional writes, doubled;
  - each GSI: a write per started KB of the index entry when an entry appears or disappears, two when
    its index keys change, one when an ALL-projection entry changes, none otherwise (a KEYS_ONLY entry
    changes only with its keys); no index write for a failed write; the 100-byte index-entry
    overhead of the storage rules is left out;
  - GetItem: 1 read unit per started 4 KB of the stored item (even when a projection returns less),
    at least 1, halved when eventually consistent; TransactGetItems: 2x strongly consistent;
  - Query/Scan: the summed size of every item evaluated (before filters and projections) per started
    4 KB, at least 1 unit, halved when eventually consistent (always, on a GSI); when a filter or a
    projection hides part of what was evaluated, an uncounted shadow request without them (same key
    condition, limit and start key) measures it.

Prices (us-east-1, on-demand, public list prices as of PRICES_AS_OF; the script does not fetch them)
  DynamoDB $0.625 per million write request units, $0.125 per million read request units (stream
  reads by a Lambda trigger are free); SQS standard $0.40 per million requests; API Gateway REST
  $3.50 per million requests; Lambda $0.20 per million requests + $0.0000166667 per GB-second at
  512 MB, with the duration measured in-process (wall time of each handler call, rounded up to the
  millisecond like Lambda; override with --lambda-ms); KMS $0.03 per 10,000 requests; Step Functions
  Standard $25 per million state transitions. Free tiers are ignored.

  SQS requests per node run count what the app sends plus the poller's receives that returned
  messages and its deletes; the poller's empty receives (an idle cost per queue, not per node run)
  and the pump's one-off GetQueueAttributes are shown but not counted. Lambda invocations are the
  API requests plus the invocations of both stream consumers (counting, and pushes and
  notifications: "stream") and of the dispatch-queue handler (batches as the pumps formed them:
  settling every 100 nodes batches less than a busy stream would).

Step Functions model (the same work as a Standard Distributed Map, one child execution per node)
  Per node run: steps + SFN_EXTRA_TRANSITIONS_PER_CHILD state transitions (one Task state per step,
  plus the child execution's start and end), SFN_PARENT_TRANSITIONS_PER_TASK parent transitions
  shared by the task's nodes, one Lambda invocation per step (the worker / callback hand-off, billed
  at our measured average duration), and SFN_STATUS_WRITES_PER_STEP 1-KB DynamoDB write per step so
  the node's status stays visible. Left out, in Step Functions' favour: API Gateway, SQS and any
  read an agent or a dashboard would need.

Statistics read cost
  In a fresh moto, in a forked process that runs alongside the node runs (--sequential: after them):
  create 10 tasks with `chalicelib.services.submit.submit` (no HTTP), deliver their stream records to
  the real stream handler, count the DynamoDB requests and read units of one `GET /v1/statistics`
  (admin, all tasks); grow to --stats-tasks tasks (default 10,000) and count again. The two must be
  equal. The records go from moto's memory straight to the handler (same records, order and batch
  size as GetRecords, without moto serializing each one), and the dispatch queue is purged instead
  of dispatched: statistics count a task once it exists.

moto
  Patched with `fleetrun.local.moto_fixes`, as the tests are: one lock per DynamoDB request (moto
  is not thread-safe; unlocked, concurrent writers could share a stream SequenceNumber and the
  aggregator dropped a record) and transactions without moto's copy of the whole table.

Exit status: 0 whatever the figures are (the bench is informational), 1 when the scenario itself broke.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import math
import multiprocessing
import os
import re
import sys
import threading
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# --- prices (us-east-1, on-demand list prices) ----------------------------------------------
PRICES_AS_OF = "2026-11-22"
DDB_USD_PER_WRITE_UNIT = 0.625 / 1e6
DDB_USD_PER_READ_UNIT = 0.125 / 1e6
SQS_USD_PER_REQUEST = 0.40 / 1e6
APIGW_REST_USD_PER_REQUEST = 3.50 / 1e6
LAMBDA_USD_PER_REQUEST = 0.20 / 1e6
LAMBDA_USD_PER_GB_SECOND = 0.0000166667
LAMBDA_MEMORY_GB = 512 / 1024
KMS_USD_PER_REQUEST = 0.03 / 1e4
SFN_STANDARD_USD_PER_TRANSITION = 25 / 1e6

# --- the Step Functions model -----------------------------------------------------------------
SFN_EXTRA_TRANSITIONS_PER_CHILD = 2
SFN_PARENT_TRANSITIONS_PER_TASK = 3
SFN_STATUS_WRITES_PER_STEP = 1

# --- targets (issue 17, "cost per node run") ------------------------------------------------------
MAX_WRITE_UNITS_PER_NODE_RUN = 4.5
MAX_SQS_REQUESTS_PER_NODE_RUN = 0.5
MAX_COST_RATIO_TO_STEP_FUNCTIONS = 1 / 15

TASK_TYPE = "slurm.scale_up"
TASK_STEPS = ("deploy-minion", "register-node", "slurm-scale")
TASK_PARAMETERS = {"ssh_user": "root", "salt_master": "salt-1", "partition": "gpu", "password": "s3cret"}

WRITE_OPERATIONS = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
READ_OPERATIONS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"})
_HIDING_PARAMETERS = ("FilterExpression", "ProjectionExpression", "AttributesToGet", "QueryFilter", "ScanFilter")
_SQS_NOT_PER_RUN = frozenset({"ReceiveMessage (empty)", "GetQueueAttributes"})


class ScenarioBroke(Exception):
    """The scenario did not do what it must (an answer, a status, a count): the figures mean nothing."""


# === capacity arithmetic (pure) ===================================================================
def number_size(text: str) -> int:
    """Bytes DynamoDB counts for a number: 1 per two significant digits, plus 1."""
    mantissa = text.strip().lstrip("+-").lower().split("e")[0]
    digits = mantissa.replace(".", "").strip("0") or "0"
    return (len(digits) + 1) // 2 + 1


def _binary_size(value: Any) -> int:
    if isinstance(value, bytes | bytearray):
        return len(value)
    try:
        return len(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError, TypeError):
        return len(str(value).encode())


def attribute_size(value: Mapping[str, Any]) -> int:
    """Bytes of one attribute value in wire form ({"S": ...}, {"M": {...}}, ...), name excluded."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        return number_size(inner)
    if kind == "B":
        return _binary_size(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in inner)
    if kind == "NS":
        return sum(number_size(n) for n in inner)
    if kind == "BS":
        return sum(_binary_size(b) for b in inner)
    if kind == "L":
        return 3 + sum(1 + attribute_size(v) for v in inner)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + attribute_size(v) for k, v in inner.items())
    raise ValueError(f"unknown attribute type {kind!r}")


def item_size(item: Mapping[str, Any] | None) -> int:
    if not item:
        return 0
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())


def write_units(size: int) -> int:
    """Standard write units of one item write: one per started KB, at least one."""
    return max(1, math.ceil(size / 1024))


def read_units(size: int, consistent: bool) -> float:
    """Read units of one read of `size` bytes: one per started 4 KB, at least one, halved if eventual."""
    units = max(1, math.ceil(size / 4096))
    return float(units) if consistent else units / 2


@dataclass(frozen=True)
class IndexShape:
    name: str
    keys: tuple[str, ...]
    #: ALL, KEYS_ONLY or INCLUDE
    projection: str = "ALL"
    included: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableShape:
    keys: tuple[str, ...]
    indexes: tuple[IndexShape, ...] = ()

    def key_of(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return {name: item[name] for name in self.keys}

    def index(self, name: str) -> IndexShape | None:
        return next((index for index in self.indexes if index.name == name), None)

    def index_entry(self, item: Mapping[str, Any] | None, index: IndexShape) -> dict[str, Any] | None:
        """The item as the index stores it; None when the item is not in the (sparse) index."""
        if not item or any(key not in item for key in index.keys):
            return None
        if index.projection == "ALL":
            return dict(item)
        names = {*self.keys, *index.keys, *(index.included if index.projection == "INCLUDE" else ())}
        return {name: value for name, value in item.items() if name in names}


def change_units(
    table: TableShape,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    *,
    transactional: bool = False,
    failed: bool = False,
) -> dict[str, float]:
    """Write units of one item write, by target ("table" or an index name)."""
    factor = 2 if transactional else 1
    if failed:
        return {"table": float(factor * write_units(item_size(before)))}
    units: dict[str, float] = {"table": float(factor * write_units(max(item_size(before), item_size(after))))}
    for index in table.indexes:
        old, new = table.index_entry(before, index), table.index_entry(after, index)
        spent = 0
        if old is not None and new is not None:
            if any(old[key] != new[key] for key in index.keys):
                spent = write_units(item_size(old)) + write_units(item_size(new))
            elif old != new:
                spent = write_units(item_size(new))
        elif old is not None:
            spent = write_units(item_size(old))
        elif new is not None:
            spent = write_units(item_size(new))
        if spent:
            units[index.name] = float(spent)
    return units


def item_kind(key: Mapping[str, Any]) -> str:
    """What a fleetrun item is, from its key (see chalicelib/store/models.py)."""
    pk = str(next(iter(key.get("pk", {"S": "?"}).values())))
    sk = str(next(iter(key.get("sk", {"S": "?"}).values())))
    if pk.startswith("TASK#"):
        return {"META": "task", "RUN": "run", "EVT": "event", "TGT": "targets"}.get(sk.split("#")[0], "task:" + sk)
    return {"STATS": "stats", "NODE": "node", "RATE": "rate-bucket", "IDEM": "idempotency",
            "LEASES": "lease-watch"}.get(pk.split("#")[0], pk)


# === cost arithmetic (pure) =======================================================================
@dataclass(frozen=True)
class PerRun:
    """What one node run costs in billable units."""

    write_units: float
    read_units: float
    sqs_requests: float
    api_requests: float
    lambda_invocations: float
    lambda_gb_seconds: float
    kms_requests: float = 0.0


def usd_per_million(run: PerRun) -> dict[str, float]:
    """fleetrun's bill for a million node runs, by line item."""
    million = 1e6
    return {
        "dynamodb_writes": run.write_units * DDB_USD_PER_WRITE_UNIT * million,
        "dynamodb_reads": run.read_units * DDB_USD_PER_READ_UNIT * million,
        "sqs": run.sqs_requests * SQS_USD_PER_REQUEST * million,
        "api_gateway": run.api_requests * APIGW_REST_USD_PER_REQUEST * million,
        "lambda_requests": run.lambda_invocations * LAMBDA_USD_PER_REQUEST * million,
        "lambda_duration": run.lambda_gb_seconds * LAMBDA_USD_PER_GB_SECOND * million,
        "kms": run.kms_requests * KMS_USD_PER_REQUEST * million,
    }


def step_functions_per_run(steps: int, nodes: int, lambda_billed_ms: float) -> dict[str, float]:
    """The Step Functions Standard Distributed Map model, per node run (see the module docstring)."""
    transitions = steps + SFN_EXTRA_TRANSITIONS_PER_CHILD + SFN_PARENT_TRANSITIONS_PER_TASK / nodes
    return {
        "state_transitions": transitions,
        "lambda_invocations": float(steps),
        "lambda_gb_seconds": steps * lambda_billed_ms / 1000 * LAMBDA_MEMORY_GB,
        "write_units": float(steps * SFN_STATUS_WRITES_PER_STEP),
    }


def step_functions_usd_per_million(steps: int, nodes: int, lambda_billed_ms: float) -> dict[str, float]:
    model = step_functions_per_run(steps, nodes, lambda_billed_ms)
    million = 1e6
    return {
        "state_transitions": model["state_transitions"] * SFN_STANDARD_USD_PER_TRANSITION * million,
        "lambda_requests": model["lambda_invocations"] * LAMBDA_USD_PER_REQUEST * million,
        "lambda_duration": model["lambda_gb_seconds"] * LAMBDA_USD_PER_GB_SECOND * million,
        "dynamodb_writes": model["write_units"] * DDB_USD_PER_WRITE_UNIT * million,
    }


# === the meter: botocore hooks ====================================================================
@dataclass
class _PendingWrite:
    table: str
    key: dict[str, Any]
    transactional: bool
    before: dict[str, Any] | None


@dataclass
class Tally:
    """Everything counted while the meter was on."""

    requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (caller, service, op)
    #: (caller, op, item kind, target) -> write units
    write_units: defaultdict[tuple[str, str, str, str], float] = field(default_factory=lambda: defaultdict(float))
    #: (caller, op, item kind) -> read units
    read_units: defaultdict[tuple[str, str, str], float] = field(default_factory=lambda: defaultdict(float))
    #: op -> the units moto reported
    moto_units: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    failed_writes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (caller, op)
    invocations: Counter[str] = field(default_factory=Counter)  # api | stream | sqs
    billed_ms: Counter[str] = field(default_factory=Counter)
    wall_ms: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    api_calls: Counter[str] = field(default_factory=Counter)  # route label


class Meter:
    """Counts and prices every AWS request made while `active` (see the module docstring)."""

    def __init__(self) -> None:
        self.active = False
        self.caller = "setup"
        self.tally = Tally()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        self._backend: Any = None
        self._shapes: dict[str, TableShape] = {}
        self._shadow_client: Any = None

    # --- wiring ---
    def install(self) -> None:
        """Hook every botocore session created from now on (call before any session exists)."""
        from botocore import handlers

        handlers.BUILTIN_HANDLERS.append(("before-parameter-build", self._on_params))
        handlers.BUILTIN_HANDLERS.append(("after-call", self._on_response))

    def bind(self, region: str) -> None:
        """Point at the moto backend of the mock that just started."""
        import boto3
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.dynamodb.models import dynamodb_backends

        account = os.environ.get("MOTO_ACCOUNT_ID", DEFAULT_ACCOUNT_ID)
        self._backend = dynamodb_backends[account][region]
        self._shapes.clear()
        self._shadow_client = boto3.session.Session().client("dynamodb", region_name=region)

    def reset(self) -> None:
        self.tally = Tally()

    @contextlib.contextmanager
    def acting(self, caller: str) -> Iterator[None]:
        previous, self.caller = self.caller, caller
        try:
            yield
        finally:
            self.caller = previous

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        self.active = True
        try:
            yield
        finally:
            self.active = False

    def invoked(self, kind: str, seconds: float) -> None:
        if not self.active:
            return
        with self._lock:
            self.tally.invocations[kind] += 1
            self.tally.wall_ms[kind] += seconds * 1000
            self.tally.billed_ms[kind] += math.ceil(seconds * 1000)

    # --- moto's table ---
    def _shape(self, table_name: str) -> TableShape:
        if table_name not in self._shapes:
            table = self._backend.get_table(table_name)
            keys = tuple(k for k in (table.hash_key_attr, table.range_key_attr) if k)
            indexes = tuple(
                IndexShape(
                    index.name, tuple(k["AttributeName"] for k in index.schema),
                    (index.projection or {}).get("ProjectionType", "ALL"),
                    tuple((index.projection or {}).get("NonKeyAttributes", [])),
                )
                for index in (table.global_indexes or [])
            )
            self._shapes[table_name] = TableShape(keys, indexes)
        return self._shapes[table_name]

    def table(self, table_name: str) -> Any:
        """moto's in-memory table."""
        return self._backend.get_table(table_name)

    def _stored(self, table_name: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        item = self._backend.get_item(table_name, dict(key))
        if item is None:
            return None
        return {name: value.to_regular_json() for name, value in list(item.attrs.items())}

    # --- hooks ---
    def _on_params(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        if not self.active or getattr(self._local, "shadow", False):
            return
        if model.service_model.service_name != "dynamodb":
            return
        try:
            if model.name in WRITE_OPERATIONS or model.name in READ_OPERATIONS:
                params["ReturnConsumedCapacity"] = "INDEXES"
            context["bench_params"] = params
            if model.name in WRITE_OPERATIONS:
                context["bench_writes"] = [
                    _PendingWrite(table, key, transactional, self._stored(table, key))
                    for table, key, transactional in self._written_keys(model.name, params)
                ]
        except Exception as error:  # never break the app's call; report it instead
            self.errors.append(f"before {model.name}: {error!r}")

    def _on_response(self, http_response: Any, parsed: dict[str, Any], model: Any,
                     context: dict[str, Any], **_: Any) -> None:
        if not self.active or getattr(self._local, "shadow", False):
            return
        service, operation = model.service_model.service_name, model.name
        try:
            label = operation
            if service == "sqs" and operation == "ReceiveMessage" and not parsed.get("Messages"):
                label = "ReceiveMessage (empty)"
            with self._lock:
                self.tally.requests[(self.caller, service, label)] += 1
            if service != "dynamodb" or "bench_params" not in context:
                return
            self._moto_reported(operation, parsed)
            error_code = parsed.get("Error", {}).get("Code") if http_response.status_code >= 300 else None
            if operation in WRITE_OPERATIONS:
                self._price_writes(operation, context.get("bench_writes", []), error_code)
            elif operation in READ_OPERATIONS and error_code is None:
                self._price_read(operation, context["bench_params"], parsed)
        except Exception as error:
            self.errors.append(f"after {operation}: {error!r}")

    # --- writes ---
    def _written_keys(self, operation: str, params: Mapping[str, Any]) -> list[tuple[str, dict[str, Any], bool]]:
        if operation == "PutItem":
            table = params["TableName"]
            return [(table, self._shape(table).key_of(params["Item"]), False)]
        if operation in ("UpdateItem", "DeleteItem"):
            return [(params["TableName"], dict(params["Key"]), False)]
        found: list[tuple[str, dict[str, Any], bool]] = []
        if operation == "TransactWriteItems":
            for entry in params["TransactItems"]:
                ((_, body),) = entry.items()
                table = body["TableName"]
                key = dict(body["Key"]) if "Key" in body else self._shape(table).key_of(body["Item"])
                found.append((table, key, True))
        elif operation == "BatchWriteItem":
            for table, requests in params["RequestItems"].items():
                for request in requests:
                    if "PutRequest" in request:
                        found.append((table, self._shape(table).key_of(request["PutRequest"]["Item"]), False))
                    else:
                        found.append((table, dict(request["DeleteRequest"]["Key"]), False))
        return found

    def _price_writes(self, operation: str, writes: list[_PendingWrite], error_code: str | None) -> None:
        if error_code is not None and error_code not in ("ConditionalCheckFailedException",
                                                          "TransactionCanceledException"):
            return  # validation and other errors are not billed
        failed = error_code is not None
        with self._lock:
            if failed:
                self.tally.failed_writes[(self.caller, operation)] += 1
        for write in writes:
            after = write.before if failed else self._stored(write.table, write.key)
            units = change_units(self._shape(write.table), write.before, after,
                                 transactional=write.transactional, failed=failed)
            kind = item_kind(write.key)
            with self._lock:
                for target, amount in units.items():
                    self.tally.write_units[(self.caller, operation, kind, target)] += amount

    # --- reads ---
    def _price_read(self, operation: str, params: Mapping[str, Any], parsed: Mapping[str, Any]) -> None:
        spent: list[tuple[str, float]] = []
        if operation == "GetItem":
            stored = self._stored(params["TableName"], params["Key"])
            spent.append((item_kind(params["Key"]), read_units(item_size(stored), bool(params.get("ConsistentRead")))))
        elif operation == "BatchGetItem":
            for table, request in params["RequestItems"].items():
                for key in request["Keys"]:
                    size = item_size(self._stored(table, key))
                    spent.append((item_kind(key), read_units(size, bool(request.get("ConsistentRead")))))
        elif operation == "TransactGetItems":
            for entry in params["TransactItems"]:
                body = entry["Get"]
                spent.append((item_kind(body["Key"]), 2 * read_units(item_size(self._stored(body["TableName"],
                                                                                        body["Key"])), True)))
        else:  # Query, Scan
            spent.append(self._price_query(operation, params, parsed))
        with self._lock:
            for kind, units in spent:
                self.tally.read_units[(self.caller, operation, kind)] += units

    def _price_query(self, operation: str, params: Mapping[str, Any], parsed: Mapping[str, Any]) -> tuple[str, float]:
        shape = self._shape(params["TableName"])
        index = shape.index(params["IndexName"]) if params.get("IndexName") else None
        hidden = any(params.get(name) for name in _HIDING_PARAMETERS) or params.get("Select") in (
            "COUNT", "SPECIFIC_ATTRIBUTES")
        items: list[dict[str, Any]] = self._evaluated(operation, params) if hidden else list(parsed.get("Items", []))
        entries = [shape.index_entry(item, index) or item for item in items] if index else items
        consistent = bool(params.get("ConsistentRead")) and index is None
        where = f"{index.name if index else 'table'}:{item_kind(items[0]) if items else 'nothing'}"
        return where, read_units(sum(item_size(entry) for entry in entries), consistent)

    def _evaluated(self, operation: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The items a filtered or projected Query/Scan read, from an uncounted shadow request."""
        shadow = {k: v for k, v in params.items()
                  if k not in (*_HIDING_PARAMETERS, "Select", "ReturnConsumedCapacity",
                               "ExpressionAttributeNames", "ExpressionAttributeValues")}
        used = str(params.get("KeyConditionExpression", ""))
        names = {k: v for k, v in (params.get("ExpressionAttributeNames") or {}).items()
                 if re.search(re.escape(k) + r"(?!\w)", used)}
        values = {k: v for k, v in (params.get("ExpressionAttributeValues") or {}).items()
                  if re.search(re.escape(k) + r"(?!\w)", used)}
        if names:
            shadow["ExpressionAttributeNames"] = names
        if values:
            shadow["ExpressionAttributeValues"] = values
        self._local.shadow = True
        try:
            call = self._shadow_client.query if operation == "Query" else self._shadow_client.scan
            return list(call(**shadow).get("Items", []))
        finally:
            self._local.shadow = False

    def _moto_reported(self, operation: str, parsed: Mapping[str, Any]) -> None:
        reported = parsed.get("ConsumedCapacity")
        entries = reported if isinstance(reported, list) else [reported] if reported else []
        with self._lock:
            for entry in entries:
                self.tally.moto_units[operation] += float(entry.get("CapacityUnits", 0))


METER = Meter()


# === the scenarios =================================================================================
def _base_env() -> dict[str, str]:
    """The tests' moto environment (tests.harness), imported once the path is set up."""
    from tests.harness import MOTO_ENV

    # registering 1,000 nodes is 1,000 admin writes in a minute
    return {**MOTO_ENV, "FLEETRUN_RATE_LIMIT": "100000000"}


def bootstrap() -> None:
    """Make the repo importable, never real AWS, and hook botocore before any session exists."""
    # `python bench/requests.py` puts bench/ first on sys.path, where this file would shadow the
    # `requests` package that moto imports
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    for key in [k for k in os.environ if k.startswith("FLEETRUN_") or k.startswith("AWS_")]:
        del os.environ[key]
    os.environ.update(_base_env())
    METER.install()
    from fleetrun.local import moto_fixes

    moto_fixes.apply()  # as tests/conftest.py does: atomic requests, transactions without table copies


def _reset_caches() -> None:
    from chalicelib import secrets
    from tests.harness import reset_caches

    reset_caches()
    secrets.reset()  # (its data key: the KMS requests are counted)


@contextlib.contextmanager
def moto_fleet() -> Iterator[Any]:
    """A fresh moto with every fleetrun resource, and a Fleet driving the app on it."""
    from moto import mock_aws

    from fleetrun.local.provision import provision
    from tests.harness import Fleet

    with mock_aws():
        _reset_caches()
        provisioned = provision()
        os.environ.update(provisioned.environment())
        _reset_caches()
        METER.bind(os.environ["AWS_REGION"])
        yield _instrument(Fleet(provisioned))
        _reset_caches()


def _route(method: str, path: str) -> str:
    path = path.split("?")[0]
    for pattern, label in ((r"/v1/agents/[^/]+/claim", "claim"), (r"/v1/agents/[^/]+/report", "report"),
                           (r"/v1/runs/[^/]+/complete", "complete"),
                           (r"/v1/runs/[^/]+/events", "events"), (r"/v1/runs/[^/]+/heartbeat", "heartbeat")):
        if re.fullmatch(pattern, path):
            return label
    if (method, path) == ("POST", "/v1/tasks"):
        return "submit"
    generic = re.sub(r"/v1/([a-z-]+)/[^/]+", r"/v1/\1/{id}", path)
    return f"{method} {generic}"


def _instrument(fleet: Any) -> Any:
    """Count the fleet's HTTP calls (API Gateway requests) and its pumps' handler invocations."""
    call = fleet.call

    def counted_call(method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        label = _route(method, path)
        with METER.acting(f"api:{label}"):
            start = time.perf_counter()
            answer = call(method, path, body, **kwargs)
            METER.invoked("api", time.perf_counter() - start)
        if METER.active:
            METER.tally.api_calls[label] += 1
        return answer

    def timed(kind: str, handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def invoke(event: Any, context: Any) -> Any:
            with METER.acting(kind):
                start = time.perf_counter()
                try:
                    return handler(event, context)
                finally:
                    METER.invoked(kind, time.perf_counter() - start)

        return invoke

    fleet.call = counted_call
    fleet.stream.handler = timed("stream", fleet.stream.handler)
    fleet.notifier.handler = timed("stream", fleet.notifier.handler)  # the stream's second consumer
    fleet.queue.handler = timed("sqs", fleet.queue.handler)
    return fleet


def settle(fleet: Any) -> None:
    with METER.acting("esm"):
        fleet.settle(rounds=10_000)


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class FleetResult:
    nodes: int
    tally: Tally
    setup_seconds: float
    measured_seconds: float
    log_bytes: int = 0
    #: tasks submitted, each on every node: node runs = nodes x runs_per_node
    runs_per_node: int = 1

    @property
    def node_runs(self) -> int:
        return self.nodes * self.runs_per_node


def run_node_runs(nodes: int, settle_every: int, runs_per_node: int = 1) -> FleetResult:
    """The main scenario: `runs_per_node` 3-step tasks on `nodes` nodes, every request after
    registration counted."""
    names = [f"node-{i:05d}" for i in range(nodes)]
    # liveness (`last_seen_at` at most every 30 s per node, whether it runs work or not) is priced
    # per node and month by bench/monthly_cost.py, not per node run: here agents are connected
    # before work arrives (their first contact is setup) and no refresh falls due during the run
    previous = os.environ.get("FLEETRUN_NODE_OFFLINE_SECONDS")
    os.environ["FLEETRUN_NODE_OFFLINE_SECONDS"] = str(10**8)
    try:
        return _run_node_runs(names, settle_every, runs_per_node)
    finally:
        if previous is None:
            os.environ.pop("FLEETRUN_NODE_OFFLINE_SECONDS", None)
        else:
            os.environ["FLEETRUN_NODE_OFFLINE_SECONDS"] = previous
        _reset_caches()


def _run_node_runs(names: list[str], settle_every: int, runs_per_node: int) -> FleetResult:
    nodes = len(names)
    with moto_fleet() as fleet:
        started = time.perf_counter()
        fleet.register(*names)
        for name in names:
            fleet.claim(name, 1)
        settle(fleet)  # registration's stream records are setup too
        setup_seconds = time.perf_counter() - started
        _note(f"registered {nodes} nodes in {setup_seconds:.1f}s; running the task")
        METER.reset()
        started = time.perf_counter()
        with METER.counting():
            task_ids = []
            for number in range(runs_per_node):
                answer = fleet.submit({
                    "type": TASK_TYPE, "name": f"bench scale-up {number + 1}", "target_nodes": names,
                    "parameters": TASK_PARAMETERS, "max_concurrency": 1000,
                })
                if answer.status != 202:
                    raise ScenarioBroke(f"submit answered {answer}")
                task_ids.append(answer.body["task_id"])
            settle(fleet)
            for done, node in enumerate(names, 1):
                _run_one(fleet, node, runs_per_node)
                if done % settle_every == 0:
                    settle(fleet)
                    if done % (settle_every * 5) == 0:
                        _note(f"  {done}/{nodes} node runs ({time.perf_counter() - started:.0f}s)")
            settle(fleet)
            # the sweeper's lease pass once the runs' lease watches come due: reading the runs
            # (ended by then) and deleting the watches are per-run costs too
            from chalicelib import clock, config
            from chalicelib.services import sweeper

            with METER.acting("sweeper"):
                sweeper.sweep_leases(clock.now_epoch() + config.lease_seconds() + 2)
        measured_seconds = time.perf_counter() - started
        _verify(fleet, task_ids, nodes)
        return FleetResult(nodes, METER.tally, setup_seconds, measured_seconds, runs_per_node=runs_per_node)


def _run_one(fleet: Any, node: str, runs_per_node: int) -> None:
    """What the agent does (fleetrun/agent/batching.py): one claim for every run it has a slot
    for, then one report with all their completions (and their last events)."""
    runs = fleet.claim(node, runs_per_node)
    if len(runs) != runs_per_node:
        raise ScenarioBroke(f"{node} claimed {len(runs)} runs, expected {runs_per_node}")
    count = len(TASK_STEPS)
    events = [
        {"type": "success", "step": step, "message": f"{step} done", "progress": (i + 1) * 100 // count}
        for i, step in enumerate(TASK_STEPS)
    ]
    completions = [
        {"run_id": run["run_id"], "attempt": run["attempt"], "status": "succeeded", "error_message": None,
         "events": events}
        for run in runs
    ]
    answer = fleet.agent(node, f"/v1/agents/{node}/report", {"completions": completions})
    if answer.status != 200 or any(item["status"] != 200 for item in answer.body["completions"]):
        raise ScenarioBroke(f"report of {node}'s completions answered {answer}")


def _verify(fleet: Any, task_ids: list[str], nodes: int) -> None:
    for task_id in task_ids:
        task = fleet.task(task_id)
        if task["status"] != "completed" or task["node_counts"]["succeeded"] != nodes:
            raise ScenarioBroke(f"task ended {task['status']} with node counts {task['node_counts']}")
    stats = fleet.stats()
    tasks = len(task_ids)
    expected = {"total_tasks": tasks, "completed_tasks": tasks}
    found = {name: stats[name] for name in expected}
    if (found != expected or stats["node_runs"]["succeeded"] != nodes * tasks
            or stats["type_stats"].get(TASK_TYPE) != tasks):
        raise ScenarioBroke(f"statistics do not count the tasks: {stats}")


@dataclass
class StatsRead:
    tasks: int
    requests: int
    read_units: float
    operations: dict[str, int]


def run_statistics_reads(sizes: list[int]) -> tuple[list[StatsRead], float]:
    """Read cost of `GET /v1/statistics` after creating each number of tasks in `sizes`."""
    from chalicelib.services import submit

    readings: list[StatsRead] = []
    created = 0
    started = time.perf_counter()
    with moto_fleet() as fleet:
        for size in sizes:
            for i in range(created, size):
                submit.submit("alice", {"type": "config.release", "name": f"stats {i}", "target_nodes": ["edge-1"],
                                        "parameters": {"website_id": 41}}, None)
                if (i + 1) % 500 == 0:
                    _drain_stream(fleet)
                    _note(f"  {i + 1}/{size} tasks ({time.perf_counter() - started:.0f}s)")
            created = max(created, size)
            _drain_stream(fleet)
            readings.append(_read_statistics(fleet, size))
    return readings, time.perf_counter() - started


def _drain_stream(fleet: Any) -> None:
    """Deliver the stream's new records to the stream handler, straight from moto's memory.

    The same records GetRecords would return, in the same order and batch size, to the same
    handler, without moto serializing each one (~10 ms a record). Only the stream: the statistics
    count a task once it exists, dispatching it is not needed.
    """
    from chalicelib.resources import STREAM_BATCH_SIZE
    from fleetrun.local.pumps import LambdaContext, lambda_stream_record

    shard = METER.table(fleet.provisioned.table_name).stream_shard
    position = getattr(fleet, "bench_stream_position", 0)
    while position < len(shard.items):
        batch = shard.items[position:position + STREAM_BATCH_SIZE]
        records = [lambda_stream_record(record.to_json(), fleet.provisioned.stream_arn) for record in batch]
        response = fleet.stream.handler({"Records": records}, LambdaContext("fleetrun-stream-consumer"))
        if response.get("batchItemFailures"):
            raise ScenarioBroke(f"the stream handler failed records: {response['batchItemFailures']}")
        position += len(batch)
    fleet.bench_stream_position = position
    # the dispatch jobs the stream sent are not needed, and moto's SendMessage is O(queue length);
    # SQS allows one purge a minute, which is often enough
    with contextlib.suppress(fleet.queue.client.exceptions.PurgeQueueInProgress):
        fleet.queue.client.purge_queue(QueueUrl=fleet.queue.queue_url)


def _read_statistics(fleet: Any, tasks: int) -> StatsRead:
    METER.reset()
    with METER.counting():
        stats = fleet.stats()
    if stats["total_tasks"] != tasks:
        raise ScenarioBroke(f"statistics count {stats['total_tasks']} tasks, {tasks} were created")
    ddb = {op: n for (_, service, op), n in METER.tally.requests.items() if service == "dynamodb"}
    return StatsRead(tasks, sum(ddb.values()), sum(METER.tally.read_units.values()), ddb)


# === the figures ===================================================================================
@dataclass
class Figures:
    result: FleetResult
    per_run: PerRun
    lambda_billed_ms: float
    ours: dict[str, float]
    sfn: dict[str, float]
    sqs_excluded: int
    stats: list[StatsRead]
    stats_seconds: float
    elapsed_seconds: float
    lambda_ms_override: float | None

    @property
    def usd(self) -> float:
        return sum(self.ours.values())

    @property
    def sfn_usd(self) -> float:
        return sum(self.sfn.values())

    def targets(self) -> dict[str, dict[str, Any]]:
        ratio = self.usd / self.sfn_usd if self.sfn_usd else math.inf
        checks = {
            "ddb_write_units_per_node_run": (self.per_run.write_units, MAX_WRITE_UNITS_PER_NODE_RUN),
            "sqs_requests_per_node_run": (self.per_run.sqs_requests, MAX_SQS_REQUESTS_PER_NODE_RUN),
            "cost_ratio_to_step_functions": (ratio, MAX_COST_RATIO_TO_STEP_FUNCTIONS),
        }
        out: dict[str, dict[str, Any]] = {
            name: {"max": limit, "actual": round(actual, 4), "pass": actual <= limit}
            for name, (actual, limit) in checks.items()
        }
        if len(self.stats) >= 2:
            first, last = self.stats[0], self.stats[-1]
            equal = (first.requests, first.read_units) == (last.requests, last.read_units)
            out["statistics_read_units_equal"] = {
                "tasks": [first.tasks, last.tasks], "read_units": [first.read_units, last.read_units], "pass": equal,
            }
        return out


def figures(result: FleetResult, stats: list[StatsRead], stats_seconds: float, elapsed: float,
            lambda_ms: float | None) -> Figures:
    tally, n = result.tally, result.node_runs
    sqs_total = sum(c for (_, service, op), c in tally.requests.items() if service == "sqs")
    sqs_excluded = sum(c for (caller, service, op), c in tally.requests.items()
                       if service == "sqs" and caller == "esm" and op in _SQS_NOT_PER_RUN)
    kms = sum(c for (_, service, _), c in tally.requests.items() if service == "kms")
    invocations = sum(tally.invocations.values())
    billed_ms = sum(tally.billed_ms.values()) / invocations if invocations else 0.0
    if lambda_ms is not None:
        billed_ms = float(math.ceil(lambda_ms))
    per_run = PerRun(
        write_units=sum(tally.write_units.values()) / n,
        read_units=sum(tally.read_units.values()) / n,
        sqs_requests=(sqs_total - sqs_excluded) / n,
        api_requests=tally.invocations["api"] / n,
        lambda_invocations=invocations / n,
        lambda_gb_seconds=invocations * billed_ms / 1000 * LAMBDA_MEMORY_GB / n,
        kms_requests=kms / n,
    )
    return Figures(
        result, per_run, billed_ms, usd_per_million(per_run),
        step_functions_usd_per_million(len(TASK_STEPS), result.nodes, billed_ms),
        sqs_excluded, stats, stats_seconds, elapsed, lambda_ms,
    )


def as_json(f: Figures) -> dict[str, Any]:
    targets = f.targets()
    tally = f.result.tally
    return {
        "ddb_write_units_per_node_run": round(f.per_run.write_units, 4),
        "ddb_read_units_per_node_run": round(f.per_run.read_units, 4),
        "sqs_requests_per_node_run": round(f.per_run.sqs_requests, 4),
        "api_requests_per_node_run": round(f.per_run.api_requests, 4),
        "lambda_invocations_per_node_run": round(f.per_run.lambda_invocations, 4),
        "usd_per_million_node_runs": round(f.usd, 2),
        "step_functions_usd_per_million_node_runs": round(f.sfn_usd, 2),
        "targets": targets,
        "pass": all(t["pass"] for t in targets.values()),
        "nodes": f.result.nodes,
        "runs_per_node": f.result.runs_per_node,
        "node_runs": f.result.node_runs,
        "capacity_method": "model (item sizes from moto's table, DynamoDB's published rules)",
        "moto_reported_capacity_units": {op: round(v, 1) for op, v in sorted(tally.moto_units.items())},
        "lambda_billed_ms_per_invocation": round(f.lambda_billed_ms, 1),
        "lambda_ms_source": "flag" if f.lambda_ms_override is not None else "measured in-process",
        "usd_breakdown": {k: round(v, 4) for k, v in f.ours.items()},
        "step_functions_usd_breakdown": {k: round(v, 4) for k, v in f.sfn.items()},
        "prices_as_of": PRICES_AS_OF,
        "requests": {f"{service}.{op}": n for (service, op), n in sorted(_by_operation(tally).items())},
        "statistics_read": [
            {"tasks": s.tasks, "ddb_requests": s.requests, "read_units": s.read_units} for s in f.stats
        ],
        "elapsed_seconds": round(f.elapsed_seconds, 1),
    }


def _by_operation(tally: Tally) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for (_, service, op), n in tally.requests.items():
        out[(service, op)] += n
    return out


def as_table(f: Figures) -> str:
    r, tally, n = f.result, f.result.tally, f.result.node_runs
    lines = [
        f"fleetrun request bench: {r.runs_per_node} {TASK_TYPE} task(s) on {r.nodes:,} nodes ({n:,} node runs; "
        f"each agent claims its {r.runs_per_node} in one claim and reports them in one report), "
        "end to end in-process on moto",
        "capacity units: method 'model' (item sizes read from moto's table, DynamoDB's published rules);"
        " moto's own ConsumedCapacity is constant and shown for comparison only",
        "",
        "AWS requests after registration, by operation and caller",
        f"  {'service':<17}{'operation':<30}{'caller':<14}{'requests':>9}{'per run':>9}{'write u':>9}{'read u':>9}",
    ]
    writes: dict[tuple[str, str], float] = defaultdict(float)
    for (caller, op, _, _), units in tally.write_units.items():
        writes[(caller, op)] += units
    reads: dict[tuple[str, str], float] = defaultdict(float)
    for (caller, op, _), units in tally.read_units.items():
        reads[(caller, op)] += units
    for (caller, service, op), count in sorted(tally.requests.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        w, rd = writes.get((caller, op), 0.0), reads.get((caller, op), 0.0)
        lines.append(f"  {service:<17}{op:<30}{caller:<14}{count:>9}{count / n:>9.3f}"
                     f"{_units(w) if service == 'dynamodb' else '':>9}{_units(rd) if service == 'dynamodb' else '':>9}")
    total = sum(tally.requests.values())
    lines.append(f"  {'all':<61}{total:>9}{total / n:>9.3f}")
    failed = sum(tally.failed_writes.values())
    if failed:
        lines.append(f"  failed conditional writes (charged): {dict(tally.failed_writes)}")
    lines += ["", "DynamoDB write units by writer, item and target (what dominates)",
              f"  {'caller':<14}{'operation':<20}{'item':<13}{'target':<14}{'units':>9}{'per run':>9}"]
    for (caller, op, kind, target), units in sorted(tally.write_units.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {caller:<14}{op:<20}{kind:<13}{target:<14}{_units(units):>9}{units / n:>9.3f}")
    lines += ["", "DynamoDB read units by reader and item",
              f"  {'caller':<14}{'operation':<20}{'item':<27}{'units':>9}{'per run':>9}"]
    for (caller, op, kind), units in sorted(tally.read_units.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {caller:<14}{op:<20}{kind:<27}{_units(units):>9}{units / n:>9.3f}")
    moto = ", ".join(f"{op} {v:g}" for op, v in sorted(tally.moto_units.items()))
    lines.append(f"  moto-reported ConsumedCapacity (not used): {moto or 'none'}")

    lines += ["", "Lambda invocations (handler wall time in-process; billed per started ms)",
              f"  {'kind':<10}{'invocations':>12}{'per run':>9}{'avg ms':>9}"]
    for kind in ("api", "stream", "sqs"):
        count = tally.invocations[kind]
        avg = tally.wall_ms[kind] / count if count else 0.0
        lines.append(f"  {kind:<10}{count:>12}{count / n:>9.3f}{avg:>9.1f}")
    source = "--lambda-ms" if f.lambda_ms_override is not None else "measured"
    lines.append(f"  billed duration used: {f.lambda_billed_ms:.1f} ms per invocation ({source}), 512 MB")
    lines.append("  API calls: " + ", ".join(f"{label} {count}" for label, count in sorted(tally.api_calls.items())))

    p = f.per_run
    targets = f.targets()
    lines += ["", "Per node run",
              f"  {'figure':<36}{'value':>10}   target"]
    rows = [
        ("ddb_write_units_per_node_run", p.write_units, targets["ddb_write_units_per_node_run"]),
        ("ddb_read_units_per_node_run", p.read_units, None),
        ("sqs_requests_per_node_run", p.sqs_requests, targets["sqs_requests_per_node_run"]),
        ("api_requests_per_node_run", p.api_requests, None),
        ("lambda_invocations_per_node_run", p.lambda_invocations, None),
    ]
    for name, value, check in rows:
        verdict = f"<= {check['max']:g}  {'PASS' if check['pass'] else 'FAIL'}" if check else ""
        lines.append(f"  {name:<36}{value:>10.3f}   {verdict}")
    lines.append(f"  (SQS: {f.sqs_excluded} poller requests not per node run: empty receives and the pump's"
                 " GetQueueAttributes)")

    lines += ["", f"USD per million node runs (us-east-1 on-demand list prices as of {PRICES_AS_OF})"]
    for item, usd in f.ours.items():
        lines.append(f"  fleetrun        {item:<22}{usd:>10.2f}")
    lines.append(f"  fleetrun        {'total':<22}{f.usd:>10.2f}")
    for item, usd in f.sfn.items():
        lines.append(f"  step functions  {item:<22}{usd:>10.2f}")
    lines.append(f"  step functions  {'total':<22}{f.sfn_usd:>10.2f}")
    model = step_functions_per_run(len(TASK_STEPS), r.nodes, f.lambda_billed_ms)
    lines.append(f"  (Standard Distributed Map: {model['state_transitions']:.3f} transitions, "
                 f"{model['lambda_invocations']:g} Lambda invocations, {model['write_units']:g} status write units"
                 " per node run; no API Gateway, SQS or reads)")
    ratio = targets["cost_ratio_to_step_functions"]
    lines.append(f"  ratio fleetrun / step functions: {ratio['actual']:.3f}   target <= "
                 f"{MAX_COST_RATIO_TO_STEP_FUNCTIONS:g}  {'PASS' if ratio['pass'] else 'FAIL'}")

    lines += ["", "GET /v1/statistics read cost"]
    for s in f.stats:
        ops = ", ".join(f"{op} {c}" for op, c in sorted(s.operations.items()))
        lines.append(f"  {s.tasks:>7,} tasks: {s.requests} DynamoDB request(s) ({ops}), {s.read_units:g} read units")
    if "statistics_read_units_equal" in targets:
        lines.append(f"  equal: {'yes  PASS' if targets['statistics_read_units_equal']['pass'] else 'no  FAIL'}"
                     f"   (creating the tasks took {f.stats_seconds:.0f}s)")
    elif not f.stats:
        lines.append("  skipped (--stats-tasks 0)")

    verdict = "PASS" if all(t["pass"] for t in targets.values()) else "FAIL"
    lines += ["", f"targets: {verdict}",
              f"elapsed: {f.elapsed_seconds:.0f}s (registration {r.setup_seconds:.0f}s, node runs "
              f"{r.measured_seconds:.0f}s, statistics {f.stats_seconds:.0f}s); app log output {r.log_bytes:,} bytes"]
    return "\n".join(lines)


def _units(value: float) -> str:
    return f"{value:,.1f}" if value else "-"


class _CountingSink:
    """Swallows the app's log lines and EMF metrics (they go to stdout), counting their bytes."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, text: str) -> int:
        self.bytes += len(text.encode())
        return len(text)

    def flush(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    parser.add_argument("--nodes", type=int, default=1000, help="nodes (= node runs) of the task (default 1000)")
    parser.add_argument("--stats-tasks", type=int, default=10_000,
                        help="tasks for the second statistics read (default 10000; 0 skips the statistics reads)")
    parser.add_argument("--runs-per-node", type=int, default=2,
                        help="tasks submitted, each on every node (default 2): each agent claims them in one "
                             "claim and reports their completions in one report (1: the one-run-per-node case)")
    parser.add_argument("--settle-every", type=int, default=100, help="settle the stream and queue every N nodes")
    parser.add_argument("--lambda-ms", type=float, default=None,
                        help="assume this Lambda duration per invocation instead of the measured one")
    parser.add_argument("--sequential", action="store_true",
                        help="run the statistics reads after the node runs instead of in a parallel process")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.settle_every < 1 or args.stats_tasks < 0 or not 1 <= args.runs_per_node <= 50:
        parser.error("--nodes and --settle-every must be >= 1, --stats-tasks >= 0, --runs-per-node 1 to 50")

    bootstrap()
    # the harness's test secret is short on purpose; PyJWT says so on every token
    warnings.filterwarnings("ignore", message="The HMAC key is")
    started = time.perf_counter()
    statistics = _StatisticsRun(args.stats_tasks, parallel=not args.sequential) if args.stats_tasks else None
    sink = _CountingSink()
    try:
        with contextlib.redirect_stdout(sink):  # type: ignore[type-var]
            result = run_node_runs(args.nodes, args.settle_every, args.runs_per_node)
            result.log_bytes = sink.bytes
            stats, stats_seconds = statistics.result() if statistics else ([], 0.0)
    except ScenarioBroke as error:
        _note(f"bench scenario broke: {error}")
        if statistics:
            statistics.stop()
        return 1
    if METER.errors:
        _note(f"the meter failed {len(METER.errors)} time(s), figures are incomplete: {METER.errors[:5]}")
        return 1
    result_figures = figures(result, stats, stats_seconds, time.perf_counter() - started, args.lambda_ms)
    print(json.dumps(as_json(result_figures)) if args.json else as_table(result_figures))
    return 0


class _StatisticsRun:
    """The statistics reads, in a forked process on the other core (or later, in this one)."""

    def __init__(self, tasks: int, *, parallel: bool) -> None:
        self.sizes = sorted({min(10, tasks), tasks})
        _note(f"statistics read cost at {' and '.join(f'{s:,}' for s in self.sizes)} tasks"
              f"{' (in a parallel process)' if parallel else ' (after the node runs)'}")
        self.process: Any = None
        if parallel:
            context = multiprocessing.get_context("fork")  # before any thread or mock exists
            self.answers, sender = context.Pipe(duplex=False)
            self.process = context.Process(target=_statistics_child, args=(self.sizes, sender), daemon=True)
            self.process.start()
            sender.close()

    def result(self) -> tuple[list[StatsRead], float]:
        if self.process is None:
            return run_statistics_reads(self.sizes)
        try:
            outcome, *payload = self.answers.recv()
        except EOFError:
            outcome, payload = "broke", ["the statistics process died without an answer"]
        self.process.join()
        if outcome != "ok":
            raise ScenarioBroke(f"statistics reads: {payload[0]}")
        return payload[0], payload[1]

    def stop(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.terminate()
            self.process.join()


def _statistics_child(sizes: list[int], answers: Any) -> None:
    try:
        with contextlib.redirect_stdout(_CountingSink()):  # type: ignore[type-var]
            readings, seconds = run_statistics_reads(sizes)
        answers.send(("ok", readings, seconds))
    except Exception as error:  # the parent reports it and exits 1
        answers.send(("broke", f"{type(error).__name__}: {error}"))
    finally:
        answers.close()


if __name__ == "__main__":
    sys.exit(main())
