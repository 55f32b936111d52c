"""DynamoDB as harsh as AWS: throttles, transaction conflicts, the limits moto leaves out, and a
per-partition-key write meter (ARCHITECTURE.md invariants 8 and 9).

moto answers every request, serialised by one lock (`moto_fixes`), so a transaction never meets
another one and nothing is ever throttled. When `fidelity.current().strict`, every DynamoDB
request goes through `_Layer.handle` first (it wraps `DynamoHandler.call_action`, which is what
both `mock_aws` and moto's server call, inside moto_fixes' per-request lock):

- Throttling: with probability `throttle_rate` a data request (GetItem, PutItem, UpdateItem,
  DeleteItem, Query, Scan, BatchGetItem, BatchWriteItem, TransactGetItems, TransactWriteItems) is
  answered `400 ProvisionedThroughputExceededException` (`ThrottlingException` for the two
  transaction calls), in the JSON shape botocore parses (`__type` + `message`). botocore retries
  both (the caller's retry budget is what is exercised).
- Injected conflicts: with probability `conflict_rate` a TransactWriteItems is cancelled with
  `TransactionCanceledException`, reason `TransactionConflict` on one item (drawn) and `None` on
  the others: what AWS answers when another transaction held that item.
- Detected conflicts: AWS runs a transaction over a few milliseconds, during which a plain write to
  one of its items from someone else fails with `TransactionConflictException` and another
  transaction touching it is cancelled with `TransactionConflict`. moto finishes a transaction
  before it answers, so a transaction's items are kept "in progress" for a window after it ran
  (`WINDOW_SECONDS`, 5-20 ms drawn per transaction; `set_window`): a write from another caller
  that arrived before the window closed (it may have waited for the lock since) meets the
  conflict. The caller is the calling thread's context (in-process: a pump's invocation, run
  with a copy of its invoker's context, is its invoker). In server mode moto's server takes every
  request on a new connection and thread, so callers are unknown: there, only a write that
  arrived while the transaction ran (it waited for the lock behind it) meets the conflict. The
  window is harsher than AWS for a write that causally follows the transaction on another thread
  within it: AWS would have finished the transaction by then.
  botocore does not retry TransactionConflictException.
- Limits moto 5.2 does not enforce: BatchWriteItem at most 25 requests, TransactWriteItems at most
  4 MB (moto already refuses items over ~400 KB, more than 100 transaction items and more than 100
  BatchGetItem keys; and SQS messages over the queue's MaximumMessageSize, batches over 1 MiB).
- The write meter: every successful write (each item of a batch or transaction) records its
  partition key value and its write units at the time it ran; `meter()` answers the peaks a
  benchmark compares with DynamoDB's 1,000 WCU/s per partition. Write units follow DynamoDB's rule,
  one per started KB of the larger of the item before and after the write (sizes as moto computes
  them from the stored items, looked up before and after), doubled inside a transaction. The meter
  records whenever the layer is strict or `meter().enable()` was called.

Every draw comes from `Fidelity.rng("dynamo", <source>)`: one generator per source, rebuilt when
another `Fidelity` is installed, so a seed replays the same injections for the same sequence of
requests.
"""

from __future__ import annotations

import bisect
import contextvars
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from fleetrun.local import fidelity, moto_fixes

logger = logging.getLogger("fleetrun.local.fidelity")

_PREFIX = "com.amazonaws.dynamodb.v20120810#"
DATA_ACTIONS = frozenset({
    "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "BatchGetItem", "BatchWriteItem",
    "TransactGetItems", "TransactWriteItems",
})
SINGLE_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem"})
#: DynamoDB's limits moto 5.2 does not check
BATCH_WRITE_MAX = 25
TRANSACTION_MAX_BYTES = 4 * 1024 * 1024
#: how long a transaction's items stay "in progress" after it ran (drawn per transaction)
WINDOW_SECONDS = (0.005, 0.020)
#: meter events kept for the peaks (the counts per key are exact whatever the length)
METER_EVENTS = 2_000_000

Key = tuple[str, str]  # (table, key attributes as canonical JSON)


class DynamoError(Exception):
    """An answer the layer gives instead of moto's: status, `__type` and body."""

    def __init__(self, code: str, message: str, status: int = 400, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.kind = code
        self.status = status
        self.body = json.dumps({"__type": _PREFIX + code, "message": message, **(extra or {})})


class WriteMeter:
    """Writes per partition key value, with their times (monotonic seconds) and write units."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._events: deque[tuple[float, str, int]] = deque(maxlen=METER_EVENTS)
        self.enabled = False

    def enable(self, on: bool = True) -> WriteMeter:
        """Record even when the layer is not strict (a benchmark on a plain runtime)."""
        self.enabled = on
        return self

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._events.clear()

    def record(self, partition: str, units: int, at: float | None = None) -> None:
        with self._lock:
            self._counts[partition] = self._counts.get(partition, 0) + 1
            self._events.append((time.monotonic() if at is None else at, partition, units))

    def writes_by_partition(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def units_by_partition(self) -> dict[str, int]:
        """Write units per partition key value, over the writes kept (the last METER_EVENTS)."""
        with self._lock:
            events = list(self._events)
        totals: dict[str, int] = {}
        for _, partition, units in events:
            totals[partition] = totals.get(partition, 0) + units
        return totals

    def peak_writes_per_second(self) -> tuple[str | None, float]:
        """The partition key with the most writes in any 1 s window, and that count."""
        return self._peak(lambda units: 1)

    def peak_units_per_second(self) -> tuple[str | None, float]:
        """The partition key with the most write units in any 1 s window, and those units."""
        return self._peak(lambda units: units)

    def _peak(self, weight: Callable[[int], int]) -> tuple[str | None, float]:
        with self._lock:
            events = list(self._events)
        by_key: dict[str, list[tuple[float, int]]] = {}
        for at, partition, units in events:
            by_key.setdefault(partition, []).append((at, weight(units)))
        best: tuple[str | None, float] = (None, 0.0)
        for partition, series in by_key.items():
            series.sort()
            times = [at for at, _ in series]
            sums = [0]
            for _, value in series:
                sums.append(sums[-1] + value)
            for start, at in enumerate(times):  # windows [at, at + 1 s) starting at each write
                end = bisect.bisect_left(times, at + 1.0, lo=start)
                total = sums[end] - sums[start]
                if total > best[1]:
                    best = (partition, float(total))
        return best


_METER = WriteMeter()


def meter() -> WriteMeter:
    """The process's write meter (the moto backend's writes: in-process, or this server's)."""
    return _METER


class _Layer:
    """The per-request part, state included (in-progress items, generators of the current seed)."""

    def __init__(self) -> None:
        self.fidelity: fidelity.Fidelity | None = None
        self.rngs: dict[str, Any] = {}
        #: item -> (end, until, caller) of the transactions that ran lately
        self.in_progress: dict[Key, tuple[float, float, object]] = {}
        self.window = WINDOW_SECONDS
        #: what was injected so far, by kind (throttle, conflict, detected)
        self.injected: dict[str, int] = {}

    def rng(self, source: str) -> Any:
        current = fidelity.current()
        if current is not self.fidelity:
            self.fidelity, self.rngs = current, {}
        generator = self.rngs.get(source)
        if generator is None:
            generator = self.rngs[source] = current.rng("dynamo", source)
        return generator

    def handle(self, handler: Any, call: Callable[[Any], Any]) -> Any:
        settings = fidelity.current()
        if not settings.strict and not _METER.enabled:
            return call(handler)
        action = handler.get_endpoint_name(handler.headers) or ""
        if action not in DATA_ACTIONS:
            return call(handler)
        params: dict[str, Any] = getattr(handler, "params", None) or {}
        handler._fidelity_arrived = time.monotonic()  # before waiting for the requests ahead of it
        with moto_fixes.LOCK:
            try:
                if settings.strict:
                    self.check(handler, action, params, settings)
                before = self.sizes(handler, action, params)
            except DynamoError as error:
                self.injected[error.kind] = self.injected.get(error.kind, 0) + 1
                return _error_answer(handler, error)
            answer = call(handler)
            if int(answer[0]) == 200:
                self.after(handler, action, params, before, settings.strict)
            return answer

    def check(self, handler: Any, action: str, params: dict[str, Any], settings: fidelity.Fidelity) -> None:
        if self.rng("throttle").random() < settings.throttle_rate:
            if action.startswith("Transact"):
                raise DynamoError("ThrottlingException", "Throughput exceeds the current capacity for one or "
                                  "more resources. Reduce request rate and try again.")
            raise DynamoError("ProvisionedThroughputExceededException",
                              "The level of configured provisioned throughput for the table was exceeded. "
                              "Consider increasing your provisioning level with the UpdateTable API.")
        if action == "BatchWriteItem":
            for table, requests in (params.get("RequestItems") or {}).items():
                if len(requests) > BATCH_WRITE_MAX:
                    raise DynamoError("ValidationException", "1 validation error detected: Value at "
                                      f"'requestItems.{table}.member' failed to satisfy constraint: Member must "
                                      f"have length less than or equal to {BATCH_WRITE_MAX}")
            if sum(len(requests) for requests in (params.get("RequestItems") or {}).values()) > BATCH_WRITE_MAX:
                raise DynamoError("ValidationException", "Too many items requested for the BatchWriteItem call")
        if action in SINGLE_WRITES:
            key = self.key_of(handler, params.get("TableName", ""), params.get("Item") or params.get("Key") or {})
            if key is not None and self.held_by_other(key, handler):
                raise DynamoError("TransactionConflictException",
                                  "Transaction is ongoing for the item")
        if action == "TransactWriteItems":
            self.check_transaction(handler, params, settings)

    def check_transaction(self, handler: Any, params: dict[str, Any], settings: fidelity.Fidelity) -> None:
        entries = params.get("TransactItems") or []
        if len(json.dumps(entries)) > TRANSACTION_MAX_BYTES:
            raise DynamoError("ValidationException", "Transaction request cannot be larger than 4 MB")
        keys = [self.key_of(handler, *_table_and_key(entry)) for entry in entries]
        conflicted = next((i for i, key in enumerate(keys) if key and self.held_by_other(key, handler)), None)
        if conflicted is not None:
            raise _cancelled(len(entries), conflicted, "detected")
        draw = self.rng("conflict")
        if entries and draw.random() < settings.conflict_rate:
            raise _cancelled(len(entries), draw.randrange(len(entries)), "injected")

    def after(self, handler: Any, action: str, params: dict[str, Any], before: list[tuple[Key, str, int]],
              strict: bool) -> None:
        now = time.monotonic()
        if action == "TransactWriteItems" and strict:
            low, high = self.window
            until = now + self.rng("window").uniform(low, high)
            caller = _caller(handler)
            self.prune(now)
            for key, _, _ in before:
                self.in_progress[key] = (now, until, caller)
            for entry in params.get("TransactItems") or []:  # condition checks are held too
                checked = self.key_of(handler, *_table_and_key(entry)) if "ConditionCheck" in entry else None
                if checked is not None:
                    self.in_progress[checked] = (now, until, caller)
        factor = 2 if action == "TransactWriteItems" else 1
        for key, partition, size_before in before:
            size = max(size_before, self.stored_size(handler, key))
            _METER.record(partition, factor * max(1, -(-size // 1024)), now)

    def sizes(self, handler: Any, action: str, params: dict[str, Any]) -> list[tuple[Key, str, int]]:
        """The items a write request writes: (key, partition key value, stored size before)."""
        targets: list[tuple[str, dict[str, Any]]] = []
        if action in SINGLE_WRITES:
            targets.append((params.get("TableName", ""), params.get("Item") or params.get("Key") or {}))
        elif action == "BatchWriteItem":
            for table, requests in (params.get("RequestItems") or {}).items():
                for request in requests:
                    body = request.get("PutRequest") or request.get("DeleteRequest") or {}
                    targets.append((table, body.get("Item") or body.get("Key") or {}))
        elif action == "TransactWriteItems":
            targets.extend(_table_and_key(entry) for entry in params.get("TransactItems") or []
                           if "ConditionCheck" not in entry)
        found = []
        for table, attributes in targets:
            key = self.key_of(handler, table, attributes)
            if key is not None:
                found.append((key, _partition(handler, table, attributes), self.stored_size(handler, key)))
        return found

    def held_by_other(self, key: Key, handler: Any) -> bool:
        """Whether a transaction of someone else was in progress on `key` when the request
        arrived (it may have waited for the lock since): before the transaction's window closed
        for a caller known to be another, before the transaction ended for an unknown one."""
        held = self.in_progress.get(key)
        if held is None:
            return False
        end, until, owner = held
        arrived = getattr(handler, "_fidelity_arrived", time.monotonic())
        caller = _caller(handler)
        if caller is None:
            return arrived < end
        return arrived < until and owner != caller

    def prune(self, now: float) -> None:
        if len(self.in_progress) > 256:  # a second's margin for requests still waiting for the lock
            for key in [key for key, (_, until, _) in self.in_progress.items() if until + 1.0 <= now]:
                del self.in_progress[key]

    @staticmethod
    def key_of(handler: Any, table_name: str, attributes: dict[str, Any]) -> Key | None:
        table = handler.dynamodb_backend.tables.get(table_name)
        if table is None:
            return None
        names = [name for name in (table.hash_key_attr, table.range_key_attr) if name]
        if any(name not in attributes for name in names):
            return None
        return table_name, json.dumps([attributes[name] for name in names], sort_keys=True)

    @staticmethod
    def stored_size(handler: Any, key: Key) -> int:
        from moto.dynamodb.models.dynamo_type import DynamoType

        table = handler.dynamodb_backend.tables.get(key[0])
        if table is None:
            return 0
        values = [DynamoType(value) for value in json.loads(key[1])]
        try:
            item = table.get_item(values[0], values[1] if len(values) > 1 else None)
        except Exception:  # a key moto refuses: the write will be refused too
            return 0
        return int(item.size()) if item is not None else 0


def _table_and_key(entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    op: dict[str, Any] = next(iter(entry.values()), {}) if entry else {}
    return op.get("TableName", ""), op.get("Item") or op.get("Key") or {}


def _partition(handler: Any, table_name: str, attributes: dict[str, Any]) -> str:
    table = handler.dynamodb_backend.tables.get(table_name)
    value = attributes.get(table.hash_key_attr) if table is not None else None
    if isinstance(value, dict) and len(value) == 1:
        return str(next(iter(value.values())))
    return json.dumps(value, sort_keys=True)


#: the in-process caller: set in the calling thread's context on its first request, so a thread
#: started with a copy of that context (a pump's invocation) counts as the same caller
_CALLER: contextvars.ContextVar[object] = contextvars.ContextVar("fleetrun_fidelity_caller")


def _caller(handler: Any) -> object | None:
    """Who sent the request: the calling context in-process; None (unknown) in server mode, where
    moto's server takes each request on a new connection and thread."""
    if getattr(getattr(handler, "normalized_request", None), "from_wsgi_server", False):
        return None
    try:
        return _CALLER.get()
    except LookupError:
        _CALLER.set(caller := object())
        return caller


def _cancelled(count: int, conflicted: int, how: str) -> DynamoError:
    reasons: list[dict[str, str]] = [{"Code": "None"} for _ in range(count)]
    reasons[conflicted] = {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
    codes = ", ".join(reason["Code"] for reason in reasons)
    message = f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]"
    error = DynamoError("TransactionCanceledException", message, extra={"CancellationReasons": reasons})
    error.kind = f"TransactionConflict/{how}"
    error.body = json.dumps({"__type": _PREFIX + "TransactionCanceledException", "CancellationReasons": reasons,
                             "Message": message})
    return error


def _error_answer(handler: Any, error: DynamoError) -> Any:
    """The answer moto gives for its own JSON errors (status, headers with a request id, body)."""
    headers = {"status": error.status, "Content-Type": "application/x-amz-json-1.0"}
    status, headers, body = handler._transform_response(handler.response_headers, (error.body, headers))
    return (status, *handler._enrich_response(headers, body))


_LAYER = _Layer()
_applied = False


def reset() -> None:
    """Forget the transactions in progress, the injection counts and the meter's records."""
    with moto_fixes.LOCK:
        _LAYER.in_progress.clear()
        _LAYER.injected.clear()
    _METER.reset()


def injected() -> dict[str, int]:
    """Errors the layer answered instead of moto, by `__type` (TransactionConflict: a cancelled
    transaction)."""
    with moto_fixes.LOCK:
        return dict(_LAYER.injected)


def set_window(low: float, high: float) -> None:
    """How long a transaction's items stay in progress after it ran (seconds, drawn in between)."""
    _LAYER.window = (low, high)


def apply() -> None:
    """Put the layer in front of moto's DynamoDB (idempotent; moto_fixes is applied first). It acts
    only while `fidelity.current().strict` (or the meter is enabled)."""
    global _applied
    if _applied:
        return
    moto_fixes.apply()
    from moto.dynamodb.responses import DynamoHandler

    inner = DynamoHandler.call_action

    def call_action(self: Any) -> Any:
        return _LAYER.handle(self, inner)

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    _applied = True
